"""The periodic job behind the beat's tick: stale marks finished, scheduled prompts, then everything the outbox
has due.

A stale mark (``Athlete.replan_from``) is normally cleared by the ``replan`` task queued behind the write that
set it; one left by a crash (between two chunks of a replan, or between a store and its enqueue) is finished
here, so no athlete's figures wait for their next write. A mark touched in the last ``replan_stall_s``
seconds (a setting; by default :data:`~stridecare.db.marks.REPLAN_STALL_S`) is left alone: either its athlete
got a run (a burst is still arriving, and its own replan, queued behind it, recomputes once rather than once per
tick) or a replan committed a chunk (it is running, and a second one would only redo its work).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from delivery.outbox import due_delivery_ids
from ingest.retry import due_retries
from ingest.strava.events import sweep
from recommender.digest import weekly_digests
from recommender.planner import replan
from recommender.schedule import weekly_prompts
from stridecare.db.models import Athlete, Run
from stridecare.runtime import Runtime

log = logging.getLogger(__name__)


def _nowhere(_id: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Where the periodic pass hands work on: one callable per task, each taking an id.

    The beat's tick passes the Celery tasks' ``delay``; tests pass recorders. Strava events are not handed on
    one by one: ``strava_drain`` (no argument) asks for a drain of the events table when any is due.
    """

    delivery: Callable[[int], Any]
    strava_drain: Callable[[], Any] = lambda: None
    strava_backfill: Callable[[int], Any] = _nowhere
    retry_file: Callable[[int], Any] = _nowhere


def run_periodic(rt: Runtime, enqueue: Enqueue) -> None:
    """One pass: finish stale marks, write due weekly prompts, then enqueue due deliveries. Each step is
    idempotent."""
    finished = finish_stale_marks(rt)
    if finished:
        log.info("stale marks finished: %d athletes", finished)
    created = weekly_prompts(rt)
    if created:
        log.info("weekly prompts written: %d", created)
    if weekly_digests(rt):
        log.info("weekly digests written")
    for delivery_id in due_delivery_ids(rt):
        enqueue.delivery(delivery_id)
    for file_id in due_retries(rt.db, rt.now()):  # files whose reading did not finish: their next try is due
        enqueue.retry_file(file_id)
    if rt.settings.strava_client_id:
        # Strava events left due (a lost nudge, a drain killed half-way, a retry whose time came, an athlete's
        # list): one drain takes them all; backfills due after a rate-limit pause.
        sweep(rt, enqueue_backfill=enqueue.strava_backfill, enqueue_drain=enqueue.strava_drain)


def finish_stale_marks(rt: Runtime) -> int:
    """Replan every athlete whose stale mark is set and untouched for ``replan_stall_s`` seconds of the wall
    clock: no run stored and no replan chunk committed since (both are stamped with it). Returns how many
    athletes were replanned."""
    cutoff = datetime.now(UTC) - timedelta(seconds=rt.settings.replan_stall_s)
    with rt.db.read() as session:
        newest = (
            select(func.max(Run.created_at)).where(Run.athlete_id == Athlete.id).correlate(Athlete).scalar_subquery()
        )
        rows = session.execute(
            select(Athlete.id, newest, Athlete.replan_progress_at).where(Athlete.replan_from.is_not(None))
        ).all()
    due = [
        athlete_id
        for athlete_id, last_run, progress in rows
        if (last_run is None or last_run <= cutoff) and (progress is None or progress <= cutoff)
    ]
    for athlete_id in due:
        replan(rt.db, rt.settings, athlete_id, rt.now())
    return len(due)
