"""What the athlete reports back: a prompt done, and the balance progression that follows from it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from recommender.routines import BALANCE
from recommender.rules import balance_level_from_completions
from stridecare.db.models import Athlete, Completion, Prompt


class UnknownPrompt(LookupError):
    """No prompt has that id."""


def record_done(session: Session, prompt_id: str, now: datetime) -> Prompt:
    """Mark every routine of the prompt done (once) and move the balance level on when earned."""
    prompt = session.get(Prompt, prompt_id)
    if prompt is None:
        raise UnknownPrompt(f"no prompt {prompt_id!r}")
    athlete = session.get(Athlete, prompt.athlete_id)
    assert athlete is not None
    have = set(session.scalars(select(Completion.routine).where(Completion.prompt_id == prompt_id)))
    level = int(prompt.facts.get("balance_level", athlete.balance_level))
    for key in prompt.routines:
        if key not in have:
            session.add(
                Completion(
                    prompt_id=prompt_id,
                    athlete_id=athlete.id,
                    routine=key,
                    level=level if key == BALANCE else 0,
                    done_at=now,
                )
            )
    if prompt.done_at is None:
        prompt.done_at = now
    session.flush()
    levels = list(
        session.scalars(
            select(Completion.level)
            .where(Completion.athlete_id == athlete.id, Completion.routine == BALANCE)
            .order_by(Completion.done_at, Completion.id)
        )
    )
    athlete.balance_level = max(athlete.balance_level, balance_level_from_completions(levels))
    return prompt
