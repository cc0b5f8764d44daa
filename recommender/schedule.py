"""Scheduled prompts: the weekly balance prompt on each athlete's chosen weekday and local time, from the
athlete's first week with a run on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from delivery.outbox import create_deliveries
from recommender import rules
from recommender.dashboard_data import first_run_day
from recommender.per_athlete import for_each_athlete
from recommender.planner import given_on
from recommender.routines import BALANCE
from stridecare.db.models import Athlete, Completion, Delivery, Prompt
from stridecare.runtime import Runtime


def weekly_prompts(rt: Runtime) -> int:
    """Write this week's balance prompt for every athlete whose moment has come; returns how many."""
    return for_each_athlete(rt, lambda session, athlete, now: _prompt_one(rt, session, athlete, now))


def _prompt_one(rt: Runtime, session: Session, athlete: Athlete, now: datetime) -> bool:
    """Write the athlete's weekly balance prompt if it is due; False when it is not."""
    last = session.scalar(
        select(Prompt.dedupe_key)
        .where(Prompt.athlete_id == athlete.id, Prompt.kind == "weekly_balance")
        .order_by(Prompt.created_at.desc())
        .limit(1)
    )
    due = rules.weekly_balance_due(now, athlete.timezone, athlete.balance_weekday, athlete.balance_time, last)
    if due is None:
        return False
    local = now.astimezone(ZoneInfo(athlete.timezone))
    day = local.date()
    if not rules.weekly_prompts_begun(day, first_run_day(session, athlete)):
        return False
    done_at_level = len(
        list(
            session.scalars(
                select(Completion.id).where(
                    Completion.athlete_id == athlete.id,
                    Completion.routine == BALANCE,
                    Completion.level == athlete.balance_level,
                )
            )
        )
    )
    decision = rules.weekly_balance_decision(
        athlete.balance_level, done_at_level, given_today=given_on(session, athlete.id, day)
    )
    athlete.balance_level = decision.balance_level
    prompt = Prompt(
        athlete_id=athlete.id,
        kind="weekly_balance",
        dedupe_key=rules.iso_week_key(day),
        local_day=day,
        routines=decision.routines,
        reasons=decision.reasons,
        rule=decision.rule[:200],
        facts={
            **{k: v for k, v in decision.facts.items()},
            "balance_level": decision.balance_level,
        },
        created_at=now,
        due_at=rules.defer_for_quiet_hours(max(now, due), athlete.timezone, athlete.quiet_start, athlete.quiet_end),
    )
    session.add(prompt)
    session.flush()
    if decision.routines:
        create_deliveries(session, rt.settings, athlete, prompt)
    return True


@dataclass(frozen=True, slots=True)
class Rescheduled:
    """What :func:`reschedule_held` did: prompts released to go out now, and prompts now held until another
    time (each with its new time)."""

    released: list[str]
    moved: list[tuple[str, datetime]]


def reschedule_held(session: Session, athlete: Athlete, now: datetime) -> Rescheduled:
    """Re-time the athlete's held prompts for their current quiet hours and time zone, in the caller's
    transaction (call it after changing either).

    A prompt is held when its ``due_at`` is still ahead; its first try is then taken again from the moment it
    was made (or now, if later) through the quiet hours as they are now: removed or shortened hours release it
    at once, longer ones hold it longer. Only deliveries never tried move: one waiting out a retry delay keeps
    its backoff. A released delivery loses its dispatch mark, so the relay's next pass (every
    ``STRIDECARE_RELAY_INTERVAL_S``) sends it."""
    held = session.scalars(
        select(Prompt).where(Prompt.athlete_id == athlete.id, Prompt.due_at > now, Prompt.done_at.is_(None))
    ).all()
    released: list[str] = []
    moved: list[tuple[str, datetime]] = []
    for prompt in held:
        due = rules.defer_for_quiet_hours(
            max(now, prompt.created_at), athlete.timezone, athlete.quiet_start, athlete.quiet_end
        )
        if due == prompt.due_at:
            continue
        prompt.due_at = due
        session.execute(
            update(Delivery)
            .where(Delivery.prompt_id == prompt.id, Delivery.status == "pending", Delivery.attempts == 0)
            .values(next_attempt_at=due, dispatched_at=None)
        )
        if due <= now:
            released.append(prompt.id)
        else:
            moved.append((prompt.id, due))
    session.flush()
    return Rescheduled(released, moved)
