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

Two more rules catch copies that the labels or the clock disguise:

* **Labels disagree.** A slow uphill run is "running/trail" in the watch's FIT, a GPX without ``<type>`` is
  judged walking by its speed, and Strava may call it a Hike. Whatever the labels, two ranges that each cover
  :data:`LABEL_FREE_OVERLAP` (90 %) of the other with the same distance (±2 %) are one session; the richer
  record's samples then decide the gait.
* **A clock off by whole hours.** A copy re-saved with the wrong time zone starts exactly 1–14 h off. It is the
  same session when its distance (±0.5 %), duration (±1 %) and steps (±2 %) match and, moved back by those
  hours, it covers 90 % of the other: two different sessions almost never agree that closely.

**Richer** means, in order: per-sample cadence, then samples at all, then a summary; then measured cadence
over an estimate; then a file over Strava (the device's own record; Strava's streams are resampled from it);
then more samples. When two copies rank the same (a ``.fit`` and its ``.fit.gz``), the one whose source and key
sort first is primary, whichever arrived first; a prompt already made for the session is not made again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from stridecare.db.models import Run
from stridecare.domain.run import CadenceSource

MIN_OVERLAP = 0.5
# Copies whose sport labels disagree (a slow trail run as a GPX without a type, judged walking; a Strava "Hike")
# are one session when each covers nearly all of the other and they measured the same distance.
LABEL_FREE_OVERLAP = 0.9
LABEL_FREE_DISTANCE = 0.02
# A copy written with the wrong time zone: its start is off by whole hours, everything else the same.
MAX_SHIFT_HOURS = 14
SHIFT_DISTANCE = 0.005
SHIFT_DURATION = 0.01
SHIFT_STEPS = 0.02
# A zone error moves every timestamp by the same whole hours, to the second.
SHIFT_SLACK_S = 2.0
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


def _both_overlap(a: Run, b: Run, shift: timedelta = timedelta(0)) -> float:
    """How much of *each* range the two share (the smaller of the two fractions), ``b`` moved by ``shift``."""
    (a0, a1), (b0, b1) = span(a), span(b)
    b0, b1 = b0 + shift, b1 + shift
    if a1 - a0 <= timedelta(0) or b1 - b0 <= timedelta(0):
        return 1.0 if abs(a0 - b0) <= START_TOLERANCE else 0.0
    shared = min(a1, b1) - max(a0, b0)
    return max(0.0, min(shared / (a1 - a0), shared / (b1 - b0)))


def _close(x: float | None, y: float | None, tolerance: float) -> bool:
    """``x`` and ``y`` both positive and within ``tolerance`` (a fraction) of the larger."""
    if not x or not y or x <= 0 or y <= 0:
        return False
    return abs(x - y) <= tolerance * max(x, y)


def same_session(a: Run, b: Run) -> bool:
    """True when ``a`` and ``b`` describe one session (see the module docstring): the same foot family with
    ranges overlapping by half of the shorter; or, whatever their sport labels, ranges overlapping by
    :data:`LABEL_FREE_OVERLAP` of both with the same distance; or a copy written with a clock off by whole hours."""
    if a.file_id is not None and a.file_id == b.file_id:
        return False
    if sport_family(a.sport) == sport_family(b.sport) and overlap_fraction(a, b) >= MIN_OVERLAP:
        return True
    if _both_overlap(a, b) >= LABEL_FREE_OVERLAP and _close(a.distance_m, b.distance_m, LABEL_FREE_DISTANCE):
        return True
    return shifted_copy(a, b)


def shifted_copy(a: Run, b: Run) -> bool:
    """True when ``b`` is ``a`` written with a clock off by a whole number of hours (a re-save in the wrong time
    zone): starts a whole number of hours apart (up to :data:`MAX_SHIFT_HOURS`), the same distance, duration and
    steps within tight bounds."""
    offset = (b.start_time - a.start_time).total_seconds()
    hours = round(offset / 3600)
    if hours == 0 or abs(hours) > MAX_SHIFT_HOURS or abs(offset - hours * 3600) > SHIFT_SLACK_S:
        return False
    return (
        _close(a.distance_m, b.distance_m, SHIFT_DISTANCE)
        and _close(max(a.elapsed_s, a.timer_s), max(b.elapsed_s, b.timer_s), SHIFT_DURATION)
        and _close(a.steps, b.steps, SHIFT_STEPS)
        and _both_overlap(a, b, -timedelta(hours=hours)) >= LABEL_FREE_OVERLAP
    )


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


def primary_of(runs: Sequence[Run]) -> Run:
    """The record of one session that stays primary: the richest; between equally rich copies the one whose
    source and key sort first, so the winner never depends on the order in which the copies arrived."""
    return min(runs, key=lambda r: (tuple(-x for x in richness(r)), r.source, r.source_key))


# The primaries that could be the same session, built once: every stored run asks (on SQLite, building the
# statement costs more than running it).
_NEAR = select(Run).where(
    Run.athlete_id == bindparam("athlete"),
    Run.duplicate_of_id.is_(None),
    Run.id != bindparam("run"),
    Run.start_time >= bindparam("earliest"),
    Run.start_time <= bindparam("latest"),
)


def find_matches(session: Session, athlete_id: int, run: Run) -> list[Run]:
    """The athlete's other primary runs that are the same session as ``run``, best overlap first."""
    start, end = span(run)
    window = {
        "athlete": athlete_id,
        "run": run.id if run.id is not None else 0,  # ids start at 1: a run not yet flushed excludes none
        "earliest": start - MAX_SESSION - timedelta(hours=MAX_SHIFT_HOURS),
        "latest": end + START_TOLERANCE + timedelta(hours=MAX_SHIFT_HOURS),
    }
    matches = [other for other in session.scalars(_NEAR, window) if same_session(other, run)]
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
    "primary_of",
    "richness",
    "same_session",
    "shifted_copy",
    "span",
    "sport_family",
]
