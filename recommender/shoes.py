"""Shoes: which pair a run was done in, how far each pair has gone, and a reminder when a pair is worn out.

A run is counted on a pair when it is stored (``ingest.runs``): the pair whose Strava gear id the source names,
else the athlete's default pair (``stridecare shoe use``) from its in-use-from day on
(``stridecare.domain.shoes``); ``stridecare shoe use RUN PAIR`` moves one run. Only primary runs count (a session
seen from FIT and Strava is counted once, on one pair: the one a copy's source names, else the one the session
had). A pair's distance is its starting distance (bought used, worn before) plus its runs', in every list and
reminder.

The reminder is a prompt of kind ``shoe`` with dedupe key ``shoe:<id>:<km>``, written by :func:`shoe_reminders`
when the planner has brought the athlete's figures up to date, in that transaction: the key makes it one
reminder however often the run that crossed the distance is planned again. Raising a pair's remind-at distance
arms a new reminder (a new key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from html import escape
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from delivery.outbox import create_deliveries
from recommender import rules
from stridecare.db.models import Athlete, Prompt, Run, Shoe
from stridecare.domain.history import local_day
from stridecare.settings import Settings

SHOE_KIND = "shoe"


@dataclass(frozen=True, slots=True)
class ShoeUsage:
    """One pair with what it has carried (primary runs only). ``distance_m`` includes the starting distance;
    ``runs_distance_m`` is the runs' alone."""

    id: int
    name: str
    strava_gear_id: str | None
    remind_at_km: float | None
    retired: bool
    default: bool
    runs: int
    distance_m: float
    steps: float
    start_km: float = 0.0
    in_use_from: date | None = None
    retired_at: datetime | None = None

    @property
    def runs_distance_m(self) -> float:
        """The distance of the runs counted here, without the starting distance."""
        return self.distance_m - self.start_km * 1000

    def as_json(self) -> dict[str, Any]:
        """The command line's JSON shape."""
        return {
            "id": self.id,
            "name": self.name,
            "strava_gear_id": self.strava_gear_id,
            "remind_at_km": self.remind_at_km,
            "retired": self.retired,
            "default": self.default,
            "runs": self.runs,
            "distance_km": round(self.distance_m / 1000, 2),
            "start_km": self.start_km,
            "runs_km": round(self.runs_distance_m / 1000, 2),
            "in_use_from": self.in_use_from.isoformat() if self.in_use_from is not None else None,
            "retired_at": self.retired_at.isoformat() if self.retired_at is not None else None,
            "steps": round(self.steps),
        }


def shoe_usage(session: Session, athlete: Athlete) -> list[ShoeUsage]:
    """Every pair of the athlete with its run count, distance and steps, in name order."""
    totals = {
        shoe_id: (int(n), float(dist or 0.0), float(steps or 0.0))
        for shoe_id, n, dist, steps in session.execute(
            select(Run.shoe_id, func.count(Run.id), func.sum(Run.distance_m), func.sum(Run.steps))
            .where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None), Run.shoe_id.is_not(None))
            .group_by(Run.shoe_id)
        )
    }
    out: list[ShoeUsage] = []
    for shoe in session.scalars(select(Shoe).where(Shoe.athlete_id == athlete.id).order_by(Shoe.name)):
        n, dist, steps = totals.get(shoe.id, (0, 0.0, 0.0))
        out.append(
            ShoeUsage(
                id=shoe.id,
                name=shoe.name,
                strava_gear_id=shoe.strava_gear_id,
                remind_at_km=shoe.remind_at_km,
                retired=shoe.retired,
                default=athlete.default_shoe_id == shoe.id,
                runs=n,
                distance_m=dist + (shoe.start_km or 0.0) * 1000,
                steps=steps,
                start_km=shoe.start_km or 0.0,
                in_use_from=shoe.in_use_from,
                retired_at=shoe.retired_at,
            )
        )
    return out


def _before_text(start_km: float) -> str:
    """How much of a pair's distance it had before its first run here ("", or ", 120 km of them before")."""
    return f", {start_km:.0f} km of them before it was added" if start_km >= 0.5 else ""


def reminder_key(shoe_id: int, remind_at_km: float) -> str:
    """``shoe:<id>:<km>``: one reminder per pair and threshold."""
    return f"shoe:{shoe_id}:{round(remind_at_km)}"


def shoe_reminders(session: Session, settings: Settings, athlete: Athlete, now: datetime) -> list[Prompt]:
    """Write a reminder prompt (with its outbox rows) for every active pair past its remind-at distance, once."""
    written: list[Prompt] = []
    for usage in shoe_usage(session, athlete):
        if usage.retired or usage.remind_at_km is None or usage.distance_m < usage.remind_at_km * 1000:
            continue
        key = reminder_key(usage.id, usage.remind_at_km)
        exists = session.scalar(
            select(Prompt.id).where(Prompt.athlete_id == athlete.id, Prompt.kind == SHOE_KIND, Prompt.dedupe_key == key)
        )
        if exists is not None:
            continue
        prompt = Prompt(
            athlete_id=athlete.id,
            kind=SHOE_KIND,
            dedupe_key=key,
            local_day=local_day(now, athlete.timezone),
            routines=[],
            reasons=[
                f"Your shoes {usage.name} have carried you {usage.distance_m / 1000:.0f} km"
                f"{_before_text(usage.start_km)} "
                f"(reminder set at {usage.remind_at_km:.0f} km): worn cushioning changes how your feet land."
            ],
            facts={
                "shoe": usage.as_json(),
            },
            rule=f"shoe distance >= {usage.remind_at_km:.0f} km",
            created_at=now,
            due_at=rules.defer_for_quiet_hours(now, athlete.timezone, athlete.quiet_start, athlete.quiet_end),
        )
        session.add(prompt)
        session.flush()
        create_deliveries(session, settings, athlete, prompt)
        written.append(prompt)
    return written


def render_shoe_reminder(
    *, prompt_id: str, athlete_name: str, facts: dict[str, Any], unsubscribe_url: str | None, created_at: datetime
) -> tuple[str, str, str, dict[str, Any]]:
    """Subject, text, HTML and webhook payload of a shoe reminder (no raw source data: our figures only)."""
    shoe = facts.get("shoe", {})
    name = " ".join(str(shoe.get("name", "your shoes")).split())[:100]
    km = float(shoe.get("distance_km") or 0.0)
    limit = float(shoe.get("remind_at_km") or 0.0)
    before = _before_text(float(shoe.get("start_km") or 0.0))
    who = " ".join(athlete_name.split())[:60] or "there"
    subject = f"{who}: your shoes {name} have done {km:.0f} km"
    body = (
        f"Your shoes {name} have carried you {km:.0f} km{before}; you asked for a reminder at {limit:.0f} km. "
        "Worn midsoles absorb less: consider a new pair, and `stridecare shoe retire` this one when you switch."
    )
    text = f"Hi {who},\n\n{body}\n"
    html = f'<!DOCTYPE html><html lang="en"><body><p>Hi {escape(who)},</p><p>{escape(body)}</p>'
    if unsubscribe_url:
        text += f"\nStop these emails: {unsubscribe_url}\n"
        html += f'<p style="font-size:13px"><a href="{escape(unsubscribe_url)}">Stop these emails</a></p>'
    html += "</body></html>"
    payload = {
        "type": "prompt.created",
        "timestamp": created_at.isoformat(),
        "data": {
            "prompt_id": prompt_id,
            "kind": SHOE_KIND,
            "shoe": {"name": name, "distance_km": round(km, 1), "remind_at_km": limit},
            "created_at": created_at.isoformat(),
        },
    }
    return subject, text, html, payload
