"""What Home Assistant shows of an athlete, and publishing it (``delivery.mqtt``) when their figures change.

Sensors: acute and chronic foot load (reference steps per day, the dashboard's figures of today), ACWR (unknown
while the history is too short to show it), the latest flag of the last 14 days, the next routine (the first
routine of the newest post-run prompt not marked done), today's foot-discomfort score (0–10, unknown until the
athlete gives one that day: ``recommender.feel``) and each active pair's km (retired pairs are removed).

:func:`publish_figures` is called by the worker after every replan (``workers/tasks.py``), which covers
``stridecare run`` and the distributed workers; it reads in its own short transaction and never raises for the
broker (a broker that is away gets the figures when it is back).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from delivery.mqtt import AthleteFigures, MqttUnavailable, SensorValue, publisher_for
from recommender.feel import scores_between
from recommender.figures import LOAD_UNIT
from recommender.run_detail import flag_title, routine_title
from recommender.shoes import shoe_usage
from recommender.status import figures_as_of
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, Prompt, Run
from stridecare.domain.history import local_day
from stridecare.settings import Settings

log = logging.getLogger(__name__)

FLAG_DAYS = 14  # as `stridecare status` lists flags


def _latest_flag(session: Session, athlete: Athlete, now: datetime) -> str:
    recent = session.scalars(
        select(Run)
        .where(
            Run.athlete_id == athlete.id,
            Run.duplicate_of_id.is_(None),
            Run.start_time >= now - timedelta(days=FLAG_DAYS),
            Run.start_time <= now,
        )
        .order_by(Run.start_time.desc())
        .limit(50)
    )
    for run in recent:
        if run.load is not None and run.load.flags:
            return flag_title(run.load.flags[0])
    return "none"


def _next_routine(session: Session, athlete: Athlete) -> str:
    prompt = session.scalar(
        select(Prompt)
        .where(Prompt.athlete_id == athlete.id, Prompt.kind == "post_run", Prompt.done_at.is_(None))
        .order_by(Prompt.created_at.desc())
        .limit(1)
    )
    if prompt is None or not prompt.routines:
        return "none"
    return routine_title(prompt.routines[0])


def athlete_figures(session: Session, settings: Settings, athlete: Athlete, now: datetime) -> AthleteFigures:
    """The athlete's Home Assistant sensors as of ``now`` (the same figures as the dashboard's today)."""
    today = local_day(now, athlete.timezone)
    figures = figures_as_of(session, settings, athlete, today).values()
    scores = scores_between(session, athlete.id, today, today)
    per_day = f"{LOAD_UNIT}/d"
    sensors = [
        SensorValue("acute_load", "Acute foot load", figures["acute_load"], per_day),
        SensorValue("chronic_load", "Chronic foot load", figures["chronic_load"], per_day),
        SensorValue("acwr", "Acute:chronic ratio", figures["acwr"], None, icon="mdi:scale-balance"),
        SensorValue("latest_flag", "Latest flag", _latest_flag(session, athlete, now), None, "mdi:flag", False),
        SensorValue("next_routine", "Next routine", _next_routine(session, athlete), None, "mdi:yoga", False),
        SensorValue(
            "discomfort_today",
            "Foot discomfort today",
            scores[-1].score if scores else None,
            None,
            "mdi:emoticon-sad-outline",
        ),
    ]
    removed = []
    for pair in shoe_usage(session, athlete):
        object_id = f"shoe_{pair.id}_km"
        if pair.retired:
            removed.append(object_id)
        else:
            km = round(pair.distance_m / 1000, 1)
            sensors.append(SensorValue(object_id, f"Shoes {pair.name}", km, "km", "mdi:shoe-sneaker"))
    return AthleteFigures(
        athlete_id=athlete.id,
        name=athlete.display_name or athlete.name,
        sensors=tuple(sensors),
        removed=tuple(removed),
        link_url=settings.effective_public_url,
    )


def publish_figures(db: Database, settings: Settings, athlete_id: int, now: datetime) -> bool:
    """Publish the athlete's sensors if MQTT is configured; True when handed to the publisher. Never raises
    for the broker or a missing extra (logged once per call, without the password)."""
    if settings.mqtt_url is None:
        return False
    try:
        publisher = publisher_for(settings)
    except MqttUnavailable as exc:
        log.warning("Home Assistant figures not published: %s", exc)
        return False
    if publisher is None:
        return False
    with db.read() as session:
        athlete = session.get(Athlete, athlete_id)
        if athlete is None:
            return False
        figures = athlete_figures(session, settings, athlete, now)
    publisher.publish_athlete(figures)
    return True
