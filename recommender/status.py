"""An athlete's current picture: acute and chronic load today, the rolling sums, ACWR when it may be shown, flags,
recent runs and prompts. Shared by ``stridecare status`` and the web app; :func:`figures_as_of` is where the
dashboard and the digest take the same figures for their day."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from recommender.figures import UNITS, LoadFigures
from stridecare.db.models import Athlete, DailyLoad, Delivery, Prompt, Run
from stridecare.db.run_json import run_json
from stridecare.domain.history import EwmaState, acwr, local_day, recompute_from
from stridecare.settings import Settings


def prompt_json(prompt: Prompt, deliveries: list[Delivery]) -> dict[str, Any]:
    """A prompt as the command line's JSON prints it."""
    return {
        "id": prompt.id,
        "kind": prompt.kind,
        "run_id": prompt.run_id,
        "local_day": prompt.local_day.isoformat(),
        "routines": prompt.routines,
        "reasons": prompt.reasons,
        "rule": prompt.rule,
        "flags": [f["name"] for f in prompt.facts.get("flags", [])],
        "created_at": prompt.created_at.isoformat(),
        "due_at": prompt.due_at.isoformat(),
        "done_at": prompt.done_at.isoformat() if prompt.done_at else None,
        "deliveries": {d.channel: d.status for d in deliveries},
    }


def prompts_for(
    session: Session, athlete: Athlete, limit: int = 20, pending_only: bool = False
) -> list[dict[str, Any]]:
    """The athlete's newest prompts with the state of each delivery."""
    prompts = list(
        session.scalars(
            select(Prompt).where(Prompt.athlete_id == athlete.id).order_by(Prompt.created_at.desc()).limit(limit)
        )
    )
    # Every prompt's deliveries in one query, not one per prompt.
    by_prompt: dict[str, list[Delivery]] = {p.id: [] for p in prompts}
    if prompts:
        for d in session.scalars(select(Delivery).where(Delivery.prompt_id.in_(list(by_prompt))).order_by(Delivery.id)):
            by_prompt[d.prompt_id].append(d)
    out = []
    for p in prompts:
        deliveries = by_prompt[p.id]
        if pending_only and not any(d.status == "pending" for d in deliveries):
            continue
        out.append(prompt_json(p, deliveries))
    return out


# The longest rolling sum of the shared figures (load of the last 28 days).
SUM_DAYS = 28


def figures_as_of(session: Session, settings: Settings, athlete: Athlete, day: date) -> LoadFigures:
    """The shared load figures of the athlete's local ``day``: acute and chronic load at that day (rest days
    after the last stored one decay them), ACWR when it may be shown, and the sums of daily load over the 7
    and 28 local days ending with it. Every surface that shows these figures takes them from here."""
    # Three bounded reads, whatever the length of the history: the first day (for the ACWR's history), the
    # averages of the last stored day, and the 28 daily loads the sums need.
    first = session.scalar(
        select(DailyLoad.day)
        .where(DailyLoad.athlete_id == athlete.id, DailyLoad.day <= day)
        .order_by(DailyLoad.day)
        .limit(1)
    )
    stored = session.execute(
        select(DailyLoad.day, DailyLoad.acute, DailyLoad.chronic)
        .where(DailyLoad.athlete_id == athlete.id, DailyLoad.day <= day)
        .order_by(DailyLoad.day.desc())
        .limit(1)
    ).first()
    if first is None or stored is None:
        return LoadFigures(0.0, 0.0, None, 0.0, 0.0)
    last, acute, chronic = stored.day, stored.acute, stored.chronic
    if day > last:
        decayed = recompute_from(
            [],
            start=last + timedelta(days=1),
            through=day,
            previous=EwmaState(last, acute, chronic),
            first_day=first,
            constants=settings.load.constants,
        )
        acute, chronic = decayed[-1].acute, decayed[-1].chronic
    history_days = (day - first).days + 1
    ratio = acwr(acute, chronic, history_days, min_history_days=settings.load.acwr_min_history_days)
    by_day: dict[date, float] = {
        d: load
        for d, load in session.execute(
            select(DailyLoad.day, DailyLoad.load).where(
                DailyLoad.athlete_id == athlete.id,
                DailyLoad.day > day - timedelta(days=SUM_DAYS),
                DailyLoad.day <= day,
            )
        )
    }
    return LoadFigures(
        acute_load=acute,
        chronic_load=chronic,
        acwr=ratio,
        load_last_7_days=sum(by_day.get(day - timedelta(days=k), 0.0) for k in range(7)),
        load_last_28_days=sum(by_day.get(day - timedelta(days=k), 0.0) for k in range(SUM_DAYS)),
    )


def athlete_status(session: Session, settings: Settings, athlete: Athlete, now: datetime) -> dict[str, Any]:
    """Acute and chronic load as of today (rest days since the last run decay them), the rolling sums, flags and
    recent activity. The figures carry the shared names and units of :mod:`recommender.figures`."""
    today = local_day(now, athlete.timezone)
    figures = figures_as_of(session, settings, athlete, today)
    values = figures.values()
    first_day = session.scalar(
        select(DailyLoad.day).where(DailyLoad.athlete_id == athlete.id).order_by(DailyLoad.day).limit(1)
    )
    history_days = (today - first_day).days + 1 if first_day is not None and first_day <= today else 0
    recent = list(
        session.scalars(
            select(Run)
            .options(joinedload(Run.load))  # read for every run below: loaded with them, not one query each
            .where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None))
            .order_by(Run.start_time.desc())
            .limit(10)
        )
    )
    # Each flag once, as the newest run that raised it in the last 14 days words it: a ramp lasting a week is one
    # ramp, not one line per run.
    flags: list[dict[str, Any]] = []
    for run in recent:
        if run.load is None or run.start_time < now - timedelta(days=14):
            continue
        reasons = run.load.facts.get("flag_reasons", {})
        seen = {f["flag"] for f in flags}
        for name in dict.fromkeys(run.load.flags):
            if name not in seen:
                flags.append({"flag": name, "run_id": run.id, "reason": reasons.get(name, name)})
    # Runs whose recorded cadence gave an impossible step length: their steps are an estimate (the run page says).
    estimated_steps = session.scalar(
        select(func.count(Run.id)).where(
            Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None), Run.step_note.is_not(None)
        )
    )
    return {
        "athlete": athlete.name,
        "as_of": today.isoformat(),
        "runs_with_steps_estimated": int(estimated_steps or 0),
        **values,
        "units": {key: UNITS[key] for key in values},
        "figure_texts": figures.texts(),
        "history_days": history_days,
        "flags": sorted({f["flag"] for f in flags}),
        "flag_details": flags,
        "recent_runs": [run_json(r) for r in recent],
        "pending_prompts": prompts_for(session, athlete, pending_only=True),
    }
