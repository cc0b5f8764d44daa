"""The periodic job behind the beat's tick: scheduled prompts first, then everything the outbox has due."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from delivery.outbox import due_delivery_ids
from recommender.digest import weekly_digests
from recommender.schedule import weekly_prompts
from stridecare.runtime import Runtime

log = logging.getLogger(__name__)


def _nowhere(_id: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Where the periodic pass hands work on: one callable per task, each taking an id.

    The beat's tick passes the Celery tasks' ``delay``; tests pass recorders.
    """

    delivery: Callable[[int], Any]
    strava_event: Callable[[int], Any] = _nowhere
    strava_backfill: Callable[[int], Any] = _nowhere


def run_periodic(rt: Runtime, enqueue: Enqueue) -> None:
    """One pass: write due weekly prompts, then enqueue due deliveries. Each step is idempotent."""
    created = weekly_prompts(rt)
    if created:
        log.info("weekly prompts written: %d", created)
    if weekly_digests(rt):
        log.info("weekly digests written")
    for delivery_id in due_delivery_ids(rt):
        enqueue.delivery(delivery_id)
    if rt.settings.strava_client_id:
        # Strava events whose enqueue was lost or whose retry is due; backfills due after a rate-limit pause.
        from ingest.strava.events import sweep

        sweep(rt, enqueue_event=enqueue.strava_event, enqueue_backfill=enqueue.strava_backfill)
