"""One run, two sources: the same session imported from a FIT file and from Strava is one run.

Two runs of an athlete are the same session when their sports belong to the same foot family, they started
within :data:`START_TOLERANCE` of each other and their timer durations differ by at most
:data:`DURATION_TOLERANCE`. The richer record stays primary (``duplicate_of_id`` is NULL); the poorer one
points at it and is ignored by load and prompts. Richer means, in order: per-sample cadence beats a summary,
a measured cadence beats an estimate, and a file beats Strava when both are otherwise equal (a FIT file is
the device's own record; Strava's streams are resampled from it).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from stridecare.db.models import Run
from stridecare.domain.run import CadenceSource

START_TOLERANCE = timedelta(seconds=60)
DURATION_TOLERANCE = 0.10
STRAVA_SOURCE = "strava"

# Sports that describe the same kind of foot session on different platforms.
_FAMILY = {"running": "run", "walking": "walk", "hiking": "walk"}


def sport_family(sport: str) -> str:
    """The foot-sport family of ``sport`` (running → run; walking, hiking → walk; others: themselves)."""
    return _FAMILY.get(sport, sport)


def richness(run: Run) -> tuple[int, int, int]:
    """A sortable rank: higher is the richer record of the same session."""
    stream = run.cadence_source == CadenceSource.STREAM and run.samples is not None
    measured = run.cadence_source != CadenceSource.ESTIMATED
    from_file = run.source != STRAVA_SOURCE
    return int(stream), int(measured), int(from_file)


def same_session(a: Run, b: Run) -> bool:
    """True when ``a`` and ``b`` describe the same session (family, start within 60 s, timer within 10 %)."""
    if sport_family(a.sport) != sport_family(b.sport):
        return False
    if abs(a.start_time - b.start_time) > START_TOLERANCE:
        return False
    longer = max(a.timer_s, b.timer_s)
    return longer <= 0 or abs(a.timer_s - b.timer_s) <= DURATION_TOLERANCE * longer


def find_candidate(session: Session, athlete_id: int, run: Run) -> Run | None:
    """The primary run from another source that is the same session as ``run``, if any (closest start)."""
    query = select(Run).where(
        Run.athlete_id == athlete_id,
        Run.duplicate_of_id.is_(None),
        Run.id != run.id,
        Run.source != run.source,
        Run.start_time >= run.start_time - START_TOLERANCE,
        Run.start_time <= run.start_time + START_TOLERANCE,
    )
    matches = [other for other in session.scalars(query) if same_session(other, run)]
    if not matches:
        return None
    return min(matches, key=lambda other: abs(other.start_time - run.start_time))


def link_duplicate(session: Session, athlete_id: int, run: Run) -> Run:
    """Link a newly inserted (and flushed) ``run`` with the same session from another source; returns the
    primary.

    Call it right after the insert and before :func:`recommender.planner.runs_changed`, which skips runs that
    are not primary. When the new run is richer, the old primary and every run that pointed at it now point at
    the new one; the planner then finds the prompt already made for the old copy and sends none again.
    """
    # The caller took the athlete's row lock before inserting (stridecare.db.athletes.lock_athlete), so on
    # PostgreSQL two transactions inserting the FIT and the Strava copy at once cannot each miss the other
    # (read committed) and both stay primary.
    if run.duplicate_of_id is not None:
        return run
    existing = find_candidate(session, athlete_id, run)
    if existing is None:
        return run
    if richness(run) > richness(existing):
        session.execute(
            update(Run)
            .where(Run.duplicate_of_id == existing.id)
            .values(duplicate_of_id=run.id)
            .execution_options(synchronize_session="fetch")
        )
        existing.duplicate_of_id = run.id
        session.flush()
        return run
    run.duplicate_of_id = existing.id
    session.flush()
    return existing
