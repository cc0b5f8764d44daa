"""Session identity: one session of one athlete is one run, whatever carried it. The rule lives here; the links
are written by the one writer of runs (``ingest.runs``).

A watch file, its re-export (with or without the paused records), a re-save, a gzipped copy, a GPX or TCX
written by another app and the Strava activity can all describe the same session. They are linked: the richest
record stays primary (``duplicate_of_id`` is NULL) and the others point at it; only primaries get a load, count
in the daily series and get a prompt.

**The rule.** Two runs of one athlete are the same session when their sports belong to the same foot family
(running; walking and hiking) and their *elapsed* time ranges ``[start, start + elapsed]`` overlap by at least
:data:`MIN_OVERLAP` (half) of the shorter range. Why this rule:

* One body cannot do two sessions at once, so a real overlap only arises from two recorders of one session.
  A double day (morning and evening runs) does not overlap at all; two back-to-back files (a warm-up saved
  apart from the workout) touch at most by a clock skew of seconds — far below half of the shorter one.
* Elapsed ranges, not timer or moving time: the timer differs between a watch that auto-pauses and one that
  records through stops, and Strava's moving time is often 10–20 % below the watch timer; the wall-clock span
  of one session is the same in every copy. Nothing is compared against a duration tolerance.
* Half of the *shorter* range: a copy that holds only part of the session (a phone started late, a file cut
  at a battery change) is still linked to the whole one.
* A range of zero length (a summary with no duration) matches only a run starting within
  :data:`START_TOLERANCE` of it.
* Runs of one file are never linked to each other: the file itself says they are separate sessions.

**Richer** means, in order: per-sample cadence, then samples at all, then a summary; then measured cadence
over an estimate; then a file over Strava (the device's own record; Strava's streams are resampled from it);
then more samples. When two copies rank the same (a ``.fit`` and its ``.fit.gz``), the one stored first stays
primary, so a prompt already made keeps pointing at the primary.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from stridecare.db.models import Run
from stridecare.domain.run import CadenceSource

MIN_OVERLAP = 0.5
START_TOLERANCE = timedelta(seconds=60)
# No stored session is longer (the plausibility bound on a session's timer): bounds the candidate query.
MAX_SESSION = timedelta(hours=48)
STRAVA_SOURCE = "strava"

# Sports that describe the same kind of foot session on different platforms.
_FAMILY = {"running": "run", "walking": "walk", "hiking": "walk"}


def sport_family(sport: str) -> str:
    """The foot-sport family of ``sport`` (running → run; walking, hiking → walk; others: themselves)."""
    return _FAMILY.get(sport, sport)


def span(run: Run) -> tuple[datetime, datetime]:
    """The wall-clock range the run covers: its start and its start plus elapsed time (or timer, if longer)."""
    seconds = max(run.elapsed_s or 0.0, run.timer_s or 0.0)
    return run.start_time, run.start_time + timedelta(seconds=seconds)


def overlap_fraction(a: Run, b: Run) -> float:
    """How much of the shorter run's range the two ranges share, 0 to 1 (1 for two instants within 60 s)."""
    (a0, a1), (b0, b1) = span(a), span(b)
    shorter = min(a1 - a0, b1 - b0)
    if shorter <= timedelta(0):
        return 1.0 if abs(a0 - b0) <= START_TOLERANCE else 0.0
    shared = min(a1, b1) - max(a0, b0)
    return max(0.0, shared / shorter)


def same_session(a: Run, b: Run) -> bool:
    """True when ``a`` and ``b`` describe one session: same foot family and ranges overlapping ≥ half of the
    shorter (see the module docstring)."""
    if sport_family(a.sport) != sport_family(b.sport):
        return False
    if a.file_id is not None and a.file_id == b.file_id:
        return False
    return overlap_fraction(a, b) >= MIN_OVERLAP


def richness(run: Run) -> tuple[int, int, int, int]:
    """A sortable rank: higher is the richer record of the same session."""
    samples = run.samples
    if samples is not None and run.cadence_source == CadenceSource.STREAM:
        level = 2
    elif samples is not None:
        level = 1
    else:
        level = 0
    measured = run.cadence_source != CadenceSource.ESTIMATED
    from_file = run.source != STRAVA_SOURCE
    return level, int(measured), int(from_file), samples.count if samples is not None else 0


def rank(run: Run) -> tuple[tuple[int, int, int, int], int]:
    """The order in which records of one session compete for primary: the richer wins; between equals the older
    row (a lower id), so the primary does not change hands for nothing."""
    return richness(run), -(run.id or 0)


def find_matches(session: Session, athlete_id: int, run: Run) -> list[Run]:
    """The athlete's other primary runs that are the same session as ``run``, best overlap first."""
    start, end = span(run)
    query = select(Run).where(
        Run.athlete_id == athlete_id,
        Run.duplicate_of_id.is_(None),
        Run.id != run.id,
        Run.start_time >= start - MAX_SESSION,
        Run.start_time <= end + START_TOLERANCE,
    )
    matches = [other for other in session.scalars(query) if same_session(other, run)]
    return sorted(matches, key=lambda other: (-overlap_fraction(other, run), abs(other.start_time - run.start_time)))


def find_candidate(session: Session, athlete_id: int, run: Run) -> Run | None:
    """The primary run that is the same session as ``run``, if any (the largest overlap)."""
    matches = find_matches(session, athlete_id, run)
    return matches[0] if matches else None


def primaries_only(runs: Sequence[Run]) -> list[Run]:
    """The runs among ``runs`` that count (no ``duplicate_of_id``)."""
    return [r for r in runs if r.duplicate_of_id is None]


__all__ = [
    "MIN_OVERLAP",
    "find_candidate",
    "find_matches",
    "overlap_fraction",
    "primaries_only",
    "rank",
    "richness",
    "same_session",
    "span",
    "sport_family",
]
