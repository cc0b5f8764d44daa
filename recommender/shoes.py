"""Shoes: which pair a run was done in, how far each pair has gone, and a reminder when a pair is worn out.

A run is counted on a pair when it is stored (``ingest.runs``): the pair whose Strava gear id the source names,
else the athlete's default pair (``stridecare shoe use``) from its in-use-from day on
(``stridecare.domain.shoes``); ``stridecare shoe use RUN PAIR`` moves one run. Only primary runs count (a session
seen from FIT and Strava is counted once, on one pair: the one a copy's source names, else the one the session
had). A pair's distance is its starting distance (bought used, worn before) plus its runs', in every list and
reminder. A pair's foot load is the sum of its runs' load (``RunLoad.load``, in reference steps: the figure the
dashboard adds up per day); the starting distance carries no load, since nothing says how it was run.

A pair is due for retirement at a distance (``remind_at_km``: ``shoe add --retire-at-km``) or at a cumulative
foot load (``retire_at_load``: ``--retire-at-load``), whichever it reaches first. The alert is a prompt of kind
``shoe`` with dedupe key :func:`reminder_key` (``shoe:<id>:<km>``, ``shoe:<id>:load:<load>`` or both), written by
:func:`shoe_reminders` when the planner has brought the athlete's figures up to date, in that transaction, with
one outbox row per channel of the athlete: the key makes it one alert however often the run that crossed the
threshold is planned again. Changing a pair's thresholds arms a new alert (a new key).
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
from stridecare.db.models import Athlete, Prompt, Run, RunLoad, Shoe
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
    load: float = 0.0
    retire_at_load: float | None = None

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
            "load": round(self.load),
            "retire_at_load": self.retire_at_load,
            "due": self.due_reason(),
        }

    def due_reason(self) -> str | None:
        """Why the pair is due for retirement (its thresholds reached), or None: not due, retired or no threshold."""
        if self.retired:
            return None
        reasons = []
        if self.remind_at_km is not None and self.distance_m >= self.remind_at_km * 1000:
            reasons.append(f"{self.distance_m / 1000:.0f} km of the {self.remind_at_km:.0f} km set")
        if self.retire_at_load is not None and self.load >= self.retire_at_load:
            reasons.append(f"{self.load:,.0f} reference steps of foot load of the {self.retire_at_load:,.0f} set")
        return " and ".join(reasons) or None


def shoe_usage(session: Session, athlete: Athlete) -> list[ShoeUsage]:
    """Every pair of the athlete with its run count, distance, steps and foot load, in name order."""
    totals = {
        shoe_id: (int(n), float(dist or 0.0), float(steps or 0.0), float(load or 0.0))
        for shoe_id, n, dist, steps, load in session.execute(
            select(
                Run.shoe_id,
                func.count(Run.id),
                func.sum(Run.distance_m),
                func.sum(Run.steps),
                func.sum(RunLoad.load),  # a run not planned yet has no load row: it adds nothing until it has
            )
            .outerjoin(RunLoad, RunLoad.run_id == Run.id)
            .where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None), Run.shoe_id.is_not(None))
            .group_by(Run.shoe_id)
        )
    }
    out: list[ShoeUsage] = []
    for shoe in session.scalars(select(Shoe).where(Shoe.athlete_id == athlete.id).order_by(Shoe.name)):
        n, dist, steps, load = totals.get(shoe.id, (0, 0.0, 0.0, 0.0))
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
                load=load,
                retire_at_load=shoe.retire_at_load,
            )
        )
    return out


def _before_text(start_km: float) -> str:
    """How much of a pair's distance it had before its first run here ("", or ", 120 km of them before")."""
    return f", {start_km:.0f} km of them before it was added" if start_km >= 0.5 else ""


def reminder_key(shoe_id: int, remind_at_km: float | None, retire_at_load: float | None = None) -> str:
    """One alert per pair and thresholds: ``shoe:<id>:<km>`` (the key of pairs with a distance only, as before the
    load threshold existed), ``shoe:<id>:load:<load>``, or ``shoe:<id>:<km>:load:<load>``."""
    parts = [f"shoe:{shoe_id}"]
    if remind_at_km is not None:
        parts.append(str(round(remind_at_km)))
    if retire_at_load is not None:
        parts.append(f"load:{round(retire_at_load)}")
    return ":".join(parts)


def shoe_reminders(session: Session, settings: Settings, athlete: Athlete, now: datetime) -> list[Prompt]:
    """Write an alert prompt (with its outbox rows) for every active pair past its retirement distance or foot
    load, once per pair and thresholds."""
    written: list[Prompt] = []
    for usage in shoe_usage(session, athlete):
        due = usage.due_reason()
        if due is None:
            continue
        key = reminder_key(usage.id, usage.remind_at_km, usage.retire_at_load)
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
                f"{_before_text(usage.start_km)} and {usage.load:,.0f} reference steps of foot load "
                f"(due at {due}): worn cushioning changes how your feet land."
            ],
            facts={
                "shoe": usage.as_json(),
            },
            rule=_rule(usage),
            created_at=now,
            due_at=rules.defer_for_quiet_hours(now, athlete.timezone, athlete.quiet_start, athlete.quiet_end),
        )
        session.add(prompt)
        session.flush()
        create_deliveries(session, settings, athlete, prompt)
        written.append(prompt)
    return written


def _rule(usage: ShoeUsage) -> str:
    """The rule line of an alert: the thresholds the pair reached."""
    parts = []
    if usage.remind_at_km is not None and usage.distance_m >= usage.remind_at_km * 1000:
        parts.append(f"shoe distance >= {usage.remind_at_km:.0f} km")
    if usage.retire_at_load is not None and usage.load >= usage.retire_at_load:
        parts.append(f"shoe foot load >= {usage.retire_at_load:.0f} reference steps")
    return " and ".join(parts)


def run_shoe(session: Session, athlete: Athlete, shoe_id: int | None) -> dict[str, Any] | None:
    """The pair a run counts on, as the run page shows it: name, the pair's distance and foot load to date, its
    thresholds and whether it is due; None when the run is on no pair."""
    if shoe_id is None:
        return None
    for usage in shoe_usage(session, athlete):
        if usage.id == shoe_id:
            return usage.as_json()
    return None


def render_shoe_reminder(
    *, prompt_id: str, athlete_name: str, facts: dict[str, Any], unsubscribe_url: str | None, created_at: datetime
) -> tuple[str, str, str, dict[str, Any]]:
    """Subject, text, HTML and webhook payload of a shoe reminder (no raw source data: our figures only)."""
    shoe = facts.get("shoe", {})
    name = " ".join(str(shoe.get("name", "your shoes")).split())[:100]
    km = float(shoe.get("distance_km") or 0.0)
    limit = float(shoe.get("remind_at_km") or 0.0)
    load = float(shoe.get("load") or 0.0)
    load_limit = shoe.get("retire_at_load")
    before = _before_text(float(shoe.get("start_km") or 0.0))
    who = " ".join(athlete_name.split())[:60] or "there"
    subject = f"{who}: your shoes {name} have done {km:.0f} km"
    asked = []
    if limit:
        asked.append(f"{limit:.0f} km")
    if load_limit is not None:
        asked.append(f"{float(load_limit):,.0f} reference steps of foot load")
    body = (
        f"Your shoes {name} have carried you {km:.0f} km{before} and {load:,.0f} reference steps of foot load; "
        f"you asked to retire them at {' or '.join(asked) or 'a threshold'}. "
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
            "shoe": {
                "name": name,
                "distance_km": round(km, 1),
                "remind_at_km": limit or None,
                "load": round(load),
                "retire_at_load": load_limit,
            },
            "created_at": created_at.isoformat(),
        },
    }
    return subject, text, html, payload
