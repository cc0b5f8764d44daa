"""The periodic job behind the beat's tick: scheduled prompts first, then everything the outbox has due."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from delivery.outbox import due_delivery_ids
from recommender.digest import weekly_digests
from recommender.schedule import weekly_prompts
from stridecare.runtime import Runtime

log = logging.getLogger(__name__)


def run_periodic(rt: Runtime, enqueue_delivery: Callable[[int], Any]) -> None:
    """One pass: write due weekly prompts, then enqueue due deliveries. Each step is idempotent."""
    created = weekly_prompts(rt)
    if created:
        log.info("weekly prompts written: %d", created)
    if weekly_digests(rt):
        log.info("weekly digests written")
    for delivery_id in due_delivery_ids(rt):
        enqueue_delivery(delivery_id)
    if rt.settings.strava_client_id:
        # Strava events whose enqueue was lost or whose retry is due; backfills due after a rate-limit pause.
        from ingest.strava.events import sweep
        from workers.strava_tasks import strava_backfill, strava_event

        sweep(rt, enqueue_event=strava_event.delay, enqueue_backfill=strava_backfill.delay)
