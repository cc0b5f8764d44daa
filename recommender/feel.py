"""How do your feet feel? The athlete's 0–10 foot-discomfort score after a run, and what it changes.

A score answers a post-run prompt (a signed link in every channel, or ``stridecare feel``). It is stored per
athlete and local day (the day's last answer wins), exported and forgotten with the athlete
(``recommender.data_rights``). Its rules, each shown with its reason:

* a score of :data:`HIGH` or more, or three rising scores in a row, makes the next post-run prompts gentler —
  roll-out and mobility only, no progression of strengthening — and says plainly to see a clinician if the pain
  persists or worsens (:func:`gentler`, called once by the planner's prompt builder);
* a high score on the day of a load flag is shown beside the flag (:func:`flag_day_scores`).

It is wellness advice: the score never diagnoses and a gentler day promises nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from recommender.feedback import find_prompt
from recommender.routines import ROLL_OUT, TOE_EXTENSION
from recommender.rules import Decision
from stridecare.crypto import sign, verify
from stridecare.db.models import Athlete, FeelScore, Prompt
from stridecare.domain.history import local_day

# 0 none … 10 the worst the athlete can imagine.
MIN_SCORE = 0
MAX_SCORE = 10
SCORES: tuple[int, ...] = tuple(range(MIN_SCORE, MAX_SCORE + 1))
# From this score on, the next prompts are gentler and a flag on that day is shown with it.
HIGH = 4
# How many rising scores in a row make the next prompts gentler.
RISING_RUN = 3
# Only recent answers decide: an old score says nothing about the feet today.
WINDOW_DAYS = 14

# Where it hurts: stored key → what a reader sees.
WHERE: dict[str, str] = {
    "sole": "sole",
    "heel": "heel",
    "big_toe": "big toe",
    "forefoot": "forefoot",
    "achilles": "Achilles",
    "other": "other",
}
# The routines a gentler prompt keeps: soft tissue and mobility, nothing that loads or progresses.
GENTLE_ROUTINES: tuple[str, ...] = (ROLL_OUT, TOE_EXTENSION)
CLINICIAN = (
    "If the pain persists or gets worse, see a clinician (a physiotherapist, podiatrist or doctor) rather than "
    "running or exercising through it."
)
ASK = "How do your feet feel? 0 none … 10 worst"


class FeelInputError(ValueError):
    """A score or a place that is not one we take; the message says what is."""


def parse_score(value: object) -> int:
    """``value`` as a whole score from 0 to 10, or :class:`FeelInputError` saying what is allowed."""
    text = str(value).strip()
    if not text.isdigit() or not MIN_SCORE <= int(text) <= MAX_SCORE:
        raise FeelInputError(f"the score must be a whole number from {MIN_SCORE} (none) to {MAX_SCORE} (worst)")
    return int(text)


def parse_where(value: str | None) -> str | None:
    """The stored key of a place on the foot ("big toe", "Big_Toe" → ``big_toe``); None for none given."""
    if value is None or not value.strip():
        return None
    key = "_".join(value.strip().lower().replace("-", " ").replace("_", " ").split())
    if key not in WHERE:
        raise FeelInputError(f"where must be one of: {', '.join(WHERE.values())}")
    return key


def where_text(key: str | None) -> str:
    """What a reader sees for a stored place key ("" for none)."""
    return WHERE.get(key or "", "")


def score_text(score: int, where: str | None) -> str:
    """``6/10 (heel)``."""
    place = where_text(where)
    return f"{score}/10 ({place})" if place else f"{score}/10"


# -- signed links ----------------------------------------------------------------


def feel_url(base: str, key: bytes, prompt_id: str, score: int | None = None) -> str:
    """The signed link that answers ``prompt_id`` with a score (``key``: :func:`stridecare.links.athlete_key`);
    with ``score`` the page opens with it chosen. A GET only asks, the POST records (like the done link)."""
    url = f"{base.rstrip('/')}/feel/{quote(prompt_id)}?sig={sign(key, 'feel', prompt_id)}"
    return f"{url}&score={score}" if score is not None else url


def check_feel(key: bytes, prompt_id: str, signature: str) -> bool:
    """True when ``signature`` was made for this prompt's feel link."""
    return verify(key, signature, "feel", prompt_id)


def score_links(base: str, key: bytes, prompt_id: str) -> list[dict[str, Any]]:
    """One link per score, 0 to 10, for the one-tap row of a message."""
    return [{"score": s, "url": feel_url(base, key, prompt_id, s)} for s in SCORES]


# -- storing -----------------------------------------------------------------------


def record_feel(
    session: Session,
    athlete: Athlete,
    score: int,
    where: str | None,
    now: datetime,
    prompt_id: str | None = None,
) -> FeelScore:
    """Store the score for the prompt's day (or today in the athlete's time zone without one); the day's last
    answer replaces an earlier one. ``prompt_id`` may be a unique prefix (:func:`recommender.feedback.find_prompt`).
    """
    score = parse_score(score)
    where = parse_where(where)
    prompt: Prompt | None = None
    if prompt_id is not None:
        prompt = find_prompt(session, prompt_id)
        if prompt.athlete_id != athlete.id:
            raise FeelInputError("that prompt is another athlete's")
    day = prompt.local_day if prompt is not None else local_day(now, athlete.timezone)
    values = {
        "score": score,
        "location": where,
        "prompt_id": prompt.id if prompt is not None else None,
        "run_id": prompt.run_id if prompt is not None else None,
        "recorded_at": now,
    }
    row = session.scalar(
        select(FeelScore).where(FeelScore.athlete_id == athlete.id, FeelScore.day == day).with_for_update()
    )
    if row is None:
        try:
            with session.begin_nested():
                row = FeelScore(athlete_id=athlete.id, day=day, **values)
                session.add(row)
                session.flush()
            return row
        except IntegrityError:  # two answers for one day at once: the other one inserted, update it
            row = session.scalar(select(FeelScore).where(FeelScore.athlete_id == athlete.id, FeelScore.day == day))
            assert row is not None
    for name, value in values.items():
        if name in ("prompt_id", "run_id") and value is None:
            continue  # a bare `stridecare feel` keeps which run the day's score answered
        setattr(row, name, value)
    session.flush()
    return row


def scores_between(session: Session, athlete_id: int, first: date, last: date) -> list[FeelScore]:
    """The athlete's scores from ``first`` to ``last`` (local days, both included), oldest first."""
    return list(
        session.scalars(
            select(FeelScore)
            .where(FeelScore.athlete_id == athlete_id, FeelScore.day >= first, FeelScore.day <= last)
            .order_by(FeelScore.day)
        )
    )


# -- rules -------------------------------------------------------------------------


def gentle_reasons(scores: Sequence[tuple[date, int, str | None]], day: date) -> list[str]:
    """Why the prompt of ``day`` must be gentler, from ``(day, score, where)`` answers oldest first; empty when
    it need not. Pure: only answers from the :data:`WINDOW_DAYS` up to ``day`` count."""
    recent = [s for s in scores if day - timedelta(days=WINDOW_DAYS - 1) <= s[0] <= day]
    if not recent:
        return []
    reasons: list[str] = []
    last_day, last_score, last_where = recent[-1]
    if last_score >= HIGH:
        reasons.append(
            f"Your feet: {score_text(last_score, last_where)} on {last_day:%a} {last_day.day} {last_day:%b} "
            f"({HIGH} or more), so this prompt is gentler: roll-out and mobility only, no strengthening progression."
        )
    tail = [s[1] for s in recent[-RISING_RUN:]]
    if len(tail) == RISING_RUN and all(a < b for a, b in pairwise(tail)):
        reasons.append(
            f"Your last {RISING_RUN} foot scores rose ({' → '.join(str(s) for s in tail)} out of 10), so this "
            "prompt is gentler: roll-out and mobility only, no strengthening progression."
        )
    if reasons:
        reasons.append(CLINICIAN)
    return reasons


def gentler(session: Session, athlete: Athlete, day: date, decision: Decision) -> Decision:
    """``decision`` made gentler when the athlete's recent scores call for it (:func:`gentle_reasons`): the
    routines cut to roll-out and mobility, the balance level held, the reasons first. Unchanged otherwise, and
    a decision without routines stays without (no prompt is made only because of a score)."""
    if not decision.routines:
        return decision
    rows = scores_between(session, athlete.id, day - timedelta(days=WINDOW_DAYS - 1), day)
    why = gentle_reasons([(r.day, r.score, r.location) for r in rows], day)
    if not why:
        return decision
    kept = [key for key in decision.routines if key in GENTLE_ROUTINES]
    routines = kept if ROLL_OUT in kept else [ROLL_OUT, *kept]
    facts = {**decision.facts, "gentler": True, "feel_scores": [[r.day.isoformat(), r.score] for r in rows[-5:]]}
    return dataclasses.replace(
        decision,
        routines=routines,
        reasons=[*why, *decision.reasons],
        rule=f"{decision.rule}+feel.gentler",
        facts=facts,
        emphasis=[key for key in decision.emphasis if key in routines],
        balance_level=athlete.balance_level,
    )


def flag_day_scores(session: Session, athlete_id: int, days: Sequence[date]) -> dict[date, FeelScore]:
    """The high scores (:data:`HIGH` or more) given on any of ``days`` (days of load flags), by day."""
    wanted = sorted(set(days))
    if not wanted:
        return {}
    rows = session.scalars(
        select(FeelScore).where(FeelScore.athlete_id == athlete_id, FeelScore.day.in_(wanted), FeelScore.score >= HIGH)
    )
    return {row.day: row for row in rows}


def strip(session: Session, athlete_id: int, first: date, last: date, flag_days: Sequence[date] = ()) -> dict[str, Any]:
    """The dashboard's strip of scores under the load chart: one cell per answered day of the range, with the
    rule it set off (high, on a flag day) in words."""
    flagged = set(flag_days)
    rows = scores_between(session, athlete_id, first, last)
    cells = [
        {
            "day": row.day.isoformat(),
            "score": row.score,
            "where": where_text(row.location),
            "high": row.score >= HIGH,
            "flag_day": row.day in flagged,
            "text": score_text(row.score, row.location),
        }
        for row in rows
    ]
    why = gentle_reasons([(r.day, r.score, r.location) for r in rows], last)
    return {"cells": cells, "gentler": why[:-1] if why else [], "clinician": CLINICIAN if why else ""}


def for_run(session: Session, athlete_id: int, run_id: int, day: date | None) -> FeelScore | None:
    """The score given after ``run_id`` (the answer to its prompt), else the score of its day."""
    row = session.scalar(select(FeelScore).where(FeelScore.athlete_id == athlete_id, FeelScore.run_id == run_id))
    if row is None and day is not None:
        row = session.scalar(select(FeelScore).where(FeelScore.athlete_id == athlete_id, FeelScore.day == day))
    return row
