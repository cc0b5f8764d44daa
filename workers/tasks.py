"""Thin Celery tasks: each takes ids or paths (never tokens), and calls one plain function.

Redelivery is safe: every function below is idempotent by a unique key in SQL.
"""

from __future__ import annotations

import logging
from pathlib import Path

from celery import Task, shared_task

from workers.context import runtime_of

log = logging.getLogger(__name__)


@shared_task(bind=True, name="stridecare.ingest_file")  # type: ignore[untyped-decorator]
def ingest_file(self: Task, athlete: str, path: str, root: str | None = None) -> None:
    """Ingest one file for ``athlete``; files from a watched folder (``root`` given) are quarantined if damaged."""
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
    )
    from ingest.announce import announce

    announce(rt.db, rt.settings, athlete, report)  # the console's line per file and per prompt
    if report.status == "ingested":
        # Hand the new prompts' deliveries straight to the workers; the beat's tick would find them too.
        from delivery.outbox import due_delivery_ids

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
