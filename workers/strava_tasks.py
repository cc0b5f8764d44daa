"""Thin Celery tasks for Strava: each takes an id (never a token), or nothing, and calls one plain function.

All are safe to run twice: events are claimed atomically and finished once (the drain claims a batch at a time
from the events table, which is the queue; the broker only carries the nudge), and a backfill step runs under
the account's lease with its cursor in SQL.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task

from ingest.strava.events import EventOutcome, drain, process_event
from ingest.strava.sync import backfill_account
from stridecare.runtime import Runtime
from workers.announce import announce_strava_event
from workers.context import runtime_of
from workers.tasks import dispatch_due, plan_athlete

log = logging.getLogger(__name__)

STRAVA_EVENT_TASK = "stridecare.strava_event"
STRAVA_DRAIN_TASK = "stridecare.strava_drain"
STRAVA_BACKFILL_TASK = "stridecare.strava_backfill"


def _after_event(rt: Runtime, event_id: int, outcome: EventOutcome) -> bool:
    """What follows one processed event: the replan it owes and the console's lines; whether runs changed."""
    if outcome.replan_athlete is not None:
        plan_athlete(rt, outcome.replan_athlete)  # here, not queued: the event's line then shows the run's load
    if outcome.runs_changed:
        # The console's line, as for a dropped file: one per event whose run changed (one activity list can
        # answer the events of a whole burst).
        for changed in outcome.changed_events or (event_id,):
            announce_strava_event(rt.db, rt.settings, changed)
    return outcome.runs_changed


@shared_task(bind=True, name=STRAVA_EVENT_TASK)  # type: ignore[untyped-decorator]
def strava_event(self: Task, event_id: int) -> None:
    """Process one stored Strava push event by id; prompts it wrote are dispatched at once."""
    rt = runtime_of(self.app)
    if _after_event(rt, int(event_id), process_event(rt, int(event_id))):
        dispatch_due.delay()


@shared_task(bind=True, name=STRAVA_DRAIN_TASK)  # type: ignore[untyped-decorator]
def strava_drain(self: Task) -> None:
    """Process the Strava events that are due, a claimed batch at a time (the web app's nudge and the beat's
    tick ask for it); prompts they wrote are dispatched at once. After ``DRAIN_MAX`` events it asks for another
    drain instead of holding its worker slot."""
    rt = runtime_of(self.app)
    changed = False

    def after(event_id: int, outcome: EventOutcome) -> None:
        nonlocal changed
        changed = _after_event(rt, event_id, outcome) or changed

    processed, more = drain(rt, after)
    if changed:
        dispatch_due.delay()
    if more:
        self.apply_async()
    if processed:
        log.debug("Strava drain: %d events processed%s", processed, ", more due" if more else "")


@shared_task(bind=True, name=STRAVA_BACKFILL_TASK)  # type: ignore[untyped-decorator]
def strava_backfill(self: Task, account_id: int) -> None:
    """One step of an account's Strava backfill; the periodic sweep enqueues the next one when it is due."""
    rt = runtime_of(self.app)
    progress = backfill_account(
        rt, int(account_id), replan=lambda athlete_id: plan_athlete(rt, athlete_id, activities=True)
    )
    if progress is not None and progress.stored:
        dispatch_due.delay()
