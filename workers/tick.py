"""The beat's periodic task: one tick hands due work on to the other tasks (its own module, as it names the
tasks of every other task module)."""

from __future__ import annotations

from celery import Task, shared_task

from workers.context import runtime_of
from workers.periodic import Enqueue, run_periodic
from workers.strava_tasks import strava_backfill, strava_drain
from workers.tasks import deliver, retry_file


@shared_task(bind=True, name="stridecare.tick")  # type: ignore[untyped-decorator]
def tick(self: Task) -> None:
    """The periodic job: scheduled prompts, due deliveries, due Strava work. Idempotent, so a second beat or a
    redelivered tick changes nothing."""
    run_periodic(
        runtime_of(self.app),
        Enqueue(
            delivery=deliver.delay,
            strava_drain=strava_drain.delay,
            strava_backfill=strava_backfill.delay,
            retry_file=retry_file.delay,
        ),
    )
