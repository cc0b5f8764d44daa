"""The replan mark: an athlete's figures are stale from ``Athlete.replan_from`` on.

Whoever changes runs (``ingest.runs``) writes the mark in the same transaction as the runs; the planner
(``recommender.planner.replan``) reads it, recomputes from it, and clears it. The mark is the only thing the
two share, so storing never waits for planning and a crash between the two leaves the mark for the next
replan (or the beat's tick, ``workers.periodic``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from stridecare.db.models import Athlete, Run, RunLoad, utcnow

# A replan that committed no chunk for this long is taken for lost (its message gone with the broker, its task
# failed): the next store owes another (:func:`mark_stale`), and the beat's tick finishes a mark that neither a
# store nor a chunk touched for as long (``workers.periodic.finish_stale_marks``).
REPLAN_STALL_S = 30.0


def session_starts(session: Session, runs: Sequence[Run]) -> list[datetime]:
    """Starts of every record of the sessions ``runs`` belong to: a copy a richer record demoted no longer
    counts, and it may have started on an earlier local day."""
    primaries = {r.duplicate_of_id for r in runs if r.duplicate_of_id is not None}
    members = {r.id for r in runs if r.id is not None} | primaries
    if not members:
        return []
    query = select(Run.start_time).where(or_(Run.id.in_(primaries), Run.duplicate_of_id.in_(members)))
    return list(session.scalars(query))


def mark_changed(
    session: Session, athlete: Athlete, runs: Sequence[Run] = (), *, since: datetime | None = None
) -> None:
    """Record that the athlete's figures are stale from the earliest of ``runs``' starts (and their sessions'
    other records) and ``since``. A changed run whose load exists is recomputed even if its history did not
    change: its stored inputs key is cleared."""
    marks = [r.start_time for r in runs]
    if since is not None:
        marks.append(since)
    if athlete.replan_from is not None:
        marks.append(athlete.replan_from)
    if runs:
        marks.extend(session_starts(session, runs))
    if marks:
        athlete.replan_from = min(marks)
    ids = [r.id for r in runs if r.id is not None]
    if ids:
        for stored in session.scalars(select(RunLoad).where(RunLoad.run_id.in_(ids))):
            if stored.facts.get("inputs_key") is not None:
                stored.facts = {**stored.facts, "inputs_key": None}


def mark_stale(session: Session, athlete: Athlete, runs: Sequence[Run] = (), *, since: datetime | None = None) -> bool:
    """:func:`mark_changed`, and whether this change owes the athlete's replan: True when the mark was clear, or
    the replan it was owed to has shown no progress for ``REPLAN_STALL_S``. Otherwise a replan is queued or
    running, and it plans these runs too (it reads the mark again before each chunk). Call with the athlete's
    lock held."""
    wall = utcnow()
    last = athlete.replan_progress_at
    owed = athlete.replan_from is None or last is None or (wall - last).total_seconds() > REPLAN_STALL_S
    mark_changed(session, athlete, runs, since=since)
    if owed and athlete.replan_from is not None:
        athlete.replan_progress_at = wall
    return owed and athlete.replan_from is not None
