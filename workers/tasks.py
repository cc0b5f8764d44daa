"""Thin Celery tasks: each takes ids or paths (never tokens), and calls one plain function.

Redelivery is safe: every function below is idempotent by a unique key in SQL.

Inbox files are planned per burst, not per file. ``ingest_file`` stores its runs with ``defer_load``: the
athlete's stale mark (``Athlete.replan_from``) is written in the same transaction as the runs, and the task
then enqueues ``replan(athlete_id, run_ids)``. The replan task recomputes from the earliest marked day once
(:func:`recommender.planner.replan`, in short chunks that move the mark) and does nothing when the mark is
already clear. A replan message lands behind the ingest messages already
waiting (the watcher hands a burst's files on together), so the first replan to run finds most of the burst under one
mark and recomputes once; the later ones find the mark clear and only print their file's line and its prompt
lines (printed after the replan, so that the file's line shows the load). A burst dropped newest first
therefore costs a few recomputes, not one per file over a growing history.

Why this design rather than "the last file of a burst replans": nothing but the queue knows which file is
last (two workers finish out of order, a watcher restart splits a burst), and a replan skipped by mistake
would leave a run without its figures. Here every stored run has a replan queued behind it, and a replan
that returns has seen the mark clear after that run was stored, so its runs are done. A crash between the
store and the enqueue leaves the mark, which the redelivered ingest (a duplicate then, its runs still
without load) or the beat's periodic pass (``workers.periodic``) finishes. A single live file costs one
more queue crossing (the SQL broker polls five times a second), well inside its second.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from workers.context import runtime_of

log = logging.getLogger(__name__)


@shared_task(bind=True, name="stridecare.ingest_file")  # type: ignore[untyped-decorator]
def ingest_file(self: Task, athlete: str, path: str, root: str | None = None) -> None:
    """Ingest one file for ``athlete``; files from a watched folder (``root`` given) are quarantined if damaged.

    The runs are stored with the athlete marked stale, and their figures and prompt are left to the ``replan``
    task queued here, which one burst of files shares."""
    from ingest.announce import announce
    from ingest.service import ingest_path

    rt = runtime_of(self.app)
    report = ingest_path(
        rt.db,
        rt.settings,
        athlete,
        Path(path),
        rt.now(),
        root=Path(root) if root else None,
        quarantine_damaged=root is not None,
        defer_load=True,
    )
    if report.status != "ingested":
        announce(rt.db, rt.settings, athlete, report)  # the console's line for the file
    # A duplicate whose runs still have no load is a redelivery after a crash between the store and this
    # enqueue: its replan is still owed.
    pending = report.status == "ingested" or (
        report.status == "duplicate" and any(r["load"] is None and r["duplicate_of"] is None for r in report.runs)
    )
    if pending:
        athlete_id = _athlete_id(rt, athlete)
        if athlete_id is not None:
            run_ids = [int(r["id"]) for r in report.runs] if report.status == "ingested" else []
            replan.delay(athlete_id, run_ids)


def _athlete_id(rt: Any, name: str) -> int | None:
    from sqlalchemy import select

    from stridecare.db.models import Athlete

    with rt.db.transaction() as session:
        found: int | None = session.scalar(select(Athlete.id).where(Athlete.name == name))
        return found


@shared_task(bind=True, name="stridecare.replan")  # type: ignore[untyped-decorator]
def replan(self: Task, athlete_id: int, run_ids: list[int] | None = None) -> None:
    """Bring the athlete's figures up to date from their stale mark (nothing to do when it is clear), print the
    lines of the file that stored ``run_ids`` and of their prompts, and hand new deliveries to the workers."""
    from delivery.outbox import due_delivery_ids
    from ingest.announce import announce_stored
    from recommender.planner import replan as replan_athlete

    rt = runtime_of(self.app)
    done = replan_athlete(rt.db, rt.settings, athlete_id, rt.now())
    log.debug("replan of athlete %d: %d runs recomputed", athlete_id, done)
    if run_ids:
        # The console's line per file and per prompt, now that the runs' load is known.
        announce_stored(rt.db, rt.settings, list(run_ids))
    # The beat's tick would find them too; this saves a prompt up to a tick's wait.
    for delivery_id in due_delivery_ids(rt):
        deliver.delay(delivery_id)


@shared_task(bind=True, name="stridecare.deliver")  # type: ignore[untyped-decorator]
def deliver(self: Task, delivery_id: int) -> None:
    """Attempt one outbox delivery (claimed atomically, so a duplicate message does nothing)."""
    from delivery.outbox import deliver_one
    from recommender.messages import build_message

    deliver_one(runtime_of(self.app), delivery_id, build_message)


@shared_task(bind=True, name="stridecare.dispatch_due")  # type: ignore[untyped-decorator]
def dispatch_due(self: Task) -> None:
    """Enqueue every outbox row that is due now."""
    from delivery.outbox import due_delivery_ids

    for delivery_id in due_delivery_ids(runtime_of(self.app)):
        deliver.delay(delivery_id)


@shared_task(bind=True, name="stridecare.tick")  # type: ignore[untyped-decorator]
def tick(self: Task) -> None:
    """The periodic job: scheduled prompts, due deliveries, due Strava work. Idempotent, so a second beat or a
    redelivered tick changes nothing."""
    from workers.periodic import Enqueue, run_periodic
    from workers.strava_tasks import strava_backfill, strava_event

    run_periodic(
        runtime_of(self.app),
        Enqueue(delivery=deliver.delay, strava_event=strava_event.delay, strava_backfill=strava_backfill.delay),
    )
