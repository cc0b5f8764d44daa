"""Why a run got the prompt it got, or none: the answers ``stridecare run``, ``stridecare prompts`` and the run
page give, worked out from what is stored (the planner keeps no separate "no prompt" record)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from delivery.render import athlete_zone
from recommender import rules
from stridecare import clock
from stridecare.db.models import Athlete, Delivery, Prompt, Run
from stridecare.domain.history import local_day
from stridecare.settings import Settings


@dataclass(frozen=True, slots=True)
class PromptOutcome:
    """The post-run prompt of one run, or the reason there is none."""

    run_id: int
    athlete: str
    prompt_id: str | None = None
    routines: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    held_until: datetime | None = None  # quiet hours: made now, sent then (in the athlete's zone)
    reason: str | None = None  # set exactly when there is no prompt


def _hours(value: float) -> str:
    return f"{value:g} h"


def _age(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / 3600:.0f} h"


def why_no_prompt(session: Session, settings: Settings, run: Run) -> str:
    """One sentence on why ``run`` (which has no post-run prompt) got none."""
    if run.duplicate_of_id is not None:
        return f"the same session as run {run.duplicate_of_id}, whose prompt counts for both"
    end = rules.run_end(run.start_time, run.elapsed_s)
    window = settings.fresh_window_hours
    athlete = session.get(Athlete, run.athlete_id)
    day = local_day(end, athlete.timezone if athlete is not None else "UTC")
    # Prompts carry the planner's clock (which a simulation may set): a same-day prompt made while this run
    # was fresh means it was the day's routines, not the run's age, that left nothing to send.
    same_day = [
        p
        for p in session.scalars(
            select(Prompt).where(
                Prompt.athlete_id == run.athlete_id,
                Prompt.kind == "post_run",
                Prompt.local_day == day,
                Prompt.run_id != run.id,
            )
        )
        if rules.is_fresh(end, p.created_at, window) or p.created_at <= end
    ]
    if same_day and run.load is not None:
        return (
            f"not the first run of {day.isoformat()}: the routines it called for were already prompted that day "
            f"(prompt {same_day[0].id})"
        )
    arrived = run.created_at
    if settings.clock_file is not None:
        # The planner judged freshness on the simulation clock; the row's stamp is the wall clock's.
        arrived = min(arrived, clock.now(settings))
    if not rules.is_fresh(end, arrived, window):
        return (
            f"outside the {_hours(window)} freshness window: it ended "
            f"{_age((arrived - end).total_seconds())} before it arrived (history counts for load only)"
        )
    if run.load is None:
        return "its load is not computed yet (an import still in progress)"
    return "no routine was called for"


def prompt_outcome(session: Session, settings: Settings, run: Run) -> PromptOutcome:
    """The post-run prompt of ``run`` (its routines, channels and quiet-hours hold) or why there is none."""
    athlete = session.get(Athlete, run.athlete_id)
    name = athlete.name if athlete is not None else str(run.athlete_id)
    copies = [run.id, *session.scalars(select(Run.id).where(Run.duplicate_of_id == run.id))]
    prompt = session.scalar(
        select(Prompt)
        .where(Prompt.athlete_id == run.athlete_id, Prompt.kind == "post_run", Prompt.run_id.in_(copies))
        .order_by(Prompt.created_at)
    )
    if prompt is None:
        return PromptOutcome(run.id, name, reason=why_no_prompt(session, settings, run))
    channels = list(
        session.scalars(select(Delivery.channel).where(Delivery.prompt_id == prompt.id).order_by(Delivery.id))
    )
    # In the athlete's zone: the console says when they will get it, as they would read it.
    zone = athlete_zone(athlete.timezone if athlete is not None else None)
    held = prompt.due_at.astimezone(zone) if prompt.due_at > prompt.created_at else None
    return PromptOutcome(run.id, name, prompt.id, list(prompt.routines), channels, held)


def outcomes_for_runs(session: Session, settings: Settings, run_ids: list[int]) -> list[PromptOutcome]:
    """:func:`prompt_outcome` for each stored run of ``run_ids``, in the given order."""
    out: list[PromptOutcome] = []
    for run_id in run_ids:
        run = session.get(Run, run_id)
        if run is not None:
            out.append(prompt_outcome(session, settings, run))
    return out
