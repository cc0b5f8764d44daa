"""Thin Celery tasks for Strava: each takes an id (never a token) and calls one plain function.

Both are safe to run twice: an event is claimed atomically and finished once, and a backfill step runs under
the account's lease with its cursor in SQL.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task

from ingest.strava.events import process_event
from ingest.strava.sync import backfill_account
from workers.announce import announce_strava_event
from workers.context import runtime_of
from workers.tasks import dispatch_due, plan_athlete

log = logging.getLogger(__name__)

STRAVA_EVENT_TASK = "stridecare.strava_event"
STRAVA_BACKFILL_TASK = "stridecare.strava_backfill"


@shared_task(bind=True, name=STRAVA_EVENT_TASK)  # type: ignore[untyped-decorator]
def strava_event(self: Task, event_id: int) -> None:
    """Process one stored Strava push event; prompts it wrote are dispatched at once."""
    rt = runtime_of(self.app)
    outcome = process_event(rt, int(event_id))
    if outcome.replan_athlete is not None:
        plan_athlete(rt, outcome.replan_athlete)  # here, not queued: the event's line then shows the run's load
    if outcome.runs_changed:
        # The console's line, as for a dropped file: one per event whose run changed (one activity list can
        # answer the events of a whole burst).
        for changed in outcome.changed_events or (int(event_id),):
            announce_strava_event(rt.db, rt.settings, changed)
        dispatch_due.delay()


@shared_task(bind=True, name=STRAVA_BACKFILL_TASK)  # type: ignore[untyped-decorator]
def strava_backfill(self: Task, account_id: int) -> None:
    """One step of an account's Strava backfill; the periodic sweep enqueues the next one when it is due."""
    rt = runtime_of(self.app)
    progress = backfill_account(
        rt, int(account_id), replan=lambda athlete_id: plan_athlete(rt, athlete_id, activities=True)
    )
    if progress is not None and progress.stored:
        dispatch_due.delay()
