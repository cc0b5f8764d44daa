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


# The shortest prefix of a prompt id the command line takes (ids are 32 hex digits; the console shows 8).
MIN_PREFIX = 6


def find_prompt(session: Session, prompt_id: str) -> Prompt:
    """The prompt with id ``prompt_id``, or the one prompt whose id starts with it (at least ``MIN_PREFIX``
    characters, as the console and ``stridecare prompts`` show them shortened)."""
    text = prompt_id.strip().rstrip("…").lower()
    prompt = session.get(Prompt, text)
    if prompt is not None:
        return prompt
    if len(text) < MIN_PREFIX or not all(c in "0123456789abcdef-" for c in text):
        raise UnknownPrompt(f"no prompt {prompt_id!r} (give its id, or at least its first {MIN_PREFIX} characters)")
    found = list(session.scalars(select(Prompt).where(Prompt.id.startswith(text, autoescape=True)).limit(2)))
    if not found:
        raise UnknownPrompt(f"no prompt whose id starts with {prompt_id!r}")
    if len(found) > 1:
        raise UnknownPrompt(f"{prompt_id!r} starts more than one prompt's id: give more of it")
    return found[0]


def record_done(session: Session, prompt_id: str, now: datetime) -> Prompt:
    """Mark every routine of the prompt done (once) and move the balance level on when earned; ``prompt_id`` may
    be a unique prefix (see :func:`find_prompt`)."""
    prompt = find_prompt(session, prompt_id)
    prompt_id = prompt.id
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
