"""Thin Celery tasks for connector accounts: ids in (never credentials), one plain function each.

``connectors_due`` runs on the beat's schedule and queues one ``connector_poll`` per account whose pull is due
(each account's own time, jittered, is in SQL and claimed as it is queued). ``connector_poll`` pulls one
account (one at a time per provider, under a lease) and, like ``ingest_file``, queues the athlete's replan
when its stores owe it. Both are safe to run twice: the ledger downloads and stores each activity once.
"""

from __future__ import annotations

import logging

from celery import Task, shared_task

from ingest.connectors.ledger import due_accounts
from ingest.connectors.poller import sync_account
from workers.announce import announce
from workers.context import runtime_of
from workers.tasks import replan

log = logging.getLogger(__name__)

CONNECTORS_DUE_TASK = "stridecare.connectors_due"
CONNECTOR_POLL_TASK = "stridecare.connector_poll"


@shared_task(bind=True, name=CONNECTORS_DUE_TASK)  # type: ignore[untyped-decorator]
def connectors_due(self: Task) -> None:
    """Queue a pull of every connector account that is due."""
    rt = runtime_of(self.app)
    for account_id in due_accounts(rt.db, rt.now()):
        connector_poll.delay(account_id)


@shared_task(bind=True, name=CONNECTOR_POLL_TASK)  # type: ignore[untyped-decorator]
def connector_poll(self: Task, account_id: int) -> None:
    """Pull one account now; each new activity takes the path of a dropped file."""
    rt = runtime_of(self.app)
    result = sync_account(rt.db, rt.settings, int(account_id), rt.now)
    for item in result.items:
        # As for a dropped file: a file none of whose runs will get a load has its console line now.
        if item.report is not None and not (
            item.report.status == "ingested" and any(r["duplicate_of"] is None for r in item.report.runs)
        ):
            announce(rt.db, rt.settings, result.athlete, item.report)
    if result.stopped:
        log.log(
            logging.WARNING if result.trouble else logging.INFO,
            "%s: %s: %s",
            result.athlete,
            result.provider,
            result.stopped,
        )
    if result.replan_owed:
        replan.delay(result.athlete_id)
