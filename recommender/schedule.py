"""Scheduled prompts: the weekly balance prompt on each athlete's chosen weekday and local time."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from delivery.outbox import create_deliveries
from recommender import rules
from recommender.planner import given_on
from recommender.routines import BALANCE
from stridecare.db.models import Athlete, Completion, Prompt
from stridecare.runtime import Runtime


def weekly_prompts(rt: Runtime) -> int:
    """Write this week's balance prompt for every athlete whose moment has come; returns how many."""
    now = rt.now()
    created = 0
    with rt.db.transaction() as session:
        athlete_ids = list(session.scalars(select(Athlete.id)))
    for athlete_id in athlete_ids:
        try:
            with rt.db.transaction() as session:
                athlete = session.get(Athlete, athlete_id)
                if athlete is None:
                    continue
                last = session.scalar(
                    select(Prompt.dedupe_key)
                    .where(Prompt.athlete_id == athlete.id, Prompt.kind == "weekly_balance")
                    .order_by(Prompt.created_at.desc())
                    .limit(1)
                )
                due = rules.weekly_balance_due(
                    now, athlete.timezone, athlete.balance_weekday, athlete.balance_time, last
                )
                if due is None:
                    continue
                local = now.astimezone(ZoneInfo(athlete.timezone))
                day = local.date()
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
                    due_at=rules.defer_for_quiet_hours(
                        max(now, due), athlete.timezone, athlete.quiet_start, athlete.quiet_end
                    ),
                )
                session.add(prompt)
                session.flush()
                if decision.routines:
                    create_deliveries(session, rt.settings, athlete, prompt)
                created += 1
        except IntegrityError:
            # Another tick (a second beat, a redelivered task) wrote this week's prompt first.
            continue
    return created
