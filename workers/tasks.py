"""Thin Celery tasks: each takes ids or paths (never tokens), and calls one plain function.

Redelivery is safe: every function below is idempotent by a unique key in SQL.

Inbox files are planned per burst, not per file. ``ingest_file`` stores its runs through the one writer: the
athlete's stale mark (``Athlete.replan_from``) is written in the same transaction as the runs. Only the store
that finds the mark clear (or its replan lost, below) queues ``replan(athlete_id)``; the stores that follow
while the mark is set queue nothing, because that replan reads the mark again, under the athlete's lock, before
each chunk and returns only once it has seen it clear (:func:`recommender.planner.replan`): every run stored
before that moment is planned by it. A burst of N files, in any order, thus costs one queued replan and a few
recomputes instead of N of each. The replan prints the console line of each file once its runs have their first
load (one line per chunk's files), and its prompt lines.

Why not "the last file of a burst replans": nothing but the queue knows which file is last (two workers finish
out of order, a watcher restart splits a burst), and a replan skipped by mistake would leave a run without its
figures. A crash between the store and the enqueue leaves the mark set with no replan queued: the ingest
message, not yet acknowledged, is delivered again and finds its file a duplicate whose runs still have no load,
and queues the replan. A replan message lost with the broker, or a replan task that failed, shows no progress
(``Athlete.replan_progress_at``, renewed by every chunk): the next store after ``marks.REPLAN_STALL_S`` queues
another (:func:`stridecare.db.marks.mark_stale`), and the beat's periodic pass (``workers.periodic``)
finishes any mark left once no run has arrived for its grace. A single live file costs one more queue crossing
(the SQL broker polls five times a second), well inside its second.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from delivery.outbox import deliver_one, due_delivery_ids
from ingest.export_drop import import_dropped_export
from ingest.retry import due_item, read_again
from ingest.service import ingest_path
from ingest.watch import EXPORT_SUFFIX
from recommender.home_assistant import publish_figures
from recommender.messages import build_message
from recommender.planner import ChunkDone
from recommender.planner import replan as replan_athlete
from workers.announce import announce, announce_stored
from workers.context import runtime_of
from workers.queues import BACKLOG

log = logging.getLogger(__name__)

# How long after a file's store a second hand-off of the same path is the watcher's own repeat, not a person's.
REPEAT_S = 120.0


@shared_task(bind=True, name="stridecare.ingest_file")  # type: ignore[untyped-decorator]
def ingest_file(self: Task, athlete: str, path: str, root: str | None = None, more: list[str] | None = None) -> None:
    """Ingest one file for ``athlete`` (and the ``more`` files of the same burst, in order); files from a
    watched folder (``root`` given) are quarantined if damaged.

    The runs are stored with the athlete marked stale, and their figures and prompt are left to one ``replan``
    task, queued here when this store found the mark clear."""
    rt = runtime_of(self.app)
    owed: int | None = None
    for one in [path, *(more or ())]:
        owed = _ingest_one(rt, athlete, Path(one), Path(root) if root else None) or owed
    if owed is not None:
        replan.apply_async((owed,), queue=_replan_queue(self))


def _replan_queue(task: Task) -> str | None:
    """Where the replan a store owes goes: behind the rest of its burst when the file came from the backlog
    queue (so that a big import still costs one or two replans, not one each time the planner catches up with
    the stores), else on the planning queue, ahead of every backlog (``None``: the task's route)."""
    info = task.request.delivery_info or {}
    return BACKLOG if info.get("routing_key") == BACKLOG else None


@shared_task(bind=True, name="stridecare.retry_file")  # type: ignore[untyped-decorator]
def retry_file(self: Task, file_id: int) -> None:
    """Read again a file whose reading did not finish (its import log row ``file_id``), when it is still due."""

    rt = runtime_of(self.app)
    item = due_item(rt.db, int(file_id))
    if item is None:
        return
    owed = _reported(rt, item.athlete, read_again(rt.db, rt.settings, item, rt.now()))
    if owed is not None:
        replan.delay(owed)


def _ingest_one(rt: Any, athlete: str, path: Path, root: Path | None) -> int | None:
    """Store one file's runs; print its line now if none of them will get a load. The athlete's id when this
    call owes the athlete's replan."""

    if path.name.lower().endswith(EXPORT_SUFFIX):
        return _import_export(rt, athlete, path, root)
    report = ingest_path(rt.db, rt.settings, athlete, path, rt.now(), root=root, quarantine_damaged=root is not None)
    return _reported(rt, athlete, report)


def _import_export(rt: Any, athlete: str, path: Path, root: Path | None) -> int | None:
    """A Strava export dropped into the inbox: every activity in it, a line for each one not stored, and one
    line for the archive."""

    def said(report: Any) -> None:
        if report.status in ("rejected", "skipped"):
            announce(rt.db, rt.settings, athlete, report, prompts=False)

    outcome = import_dropped_export(rt, athlete, path, root, rt.now(), report=said)
    announce(rt.db, rt.settings, athlete, outcome, prompts=False)
    return outcome.athlete_id if outcome.replan_owed else None


def _reported(rt: Any, athlete: str, report: Any) -> int | None:
    """Print the file's line now if none of its runs will get a load; the athlete's id when a replan is owed.

    The same file handed on again (a hand-off redelivered, the watcher's second look) is not a duplicate a
    person made: no second line while its first is still to come (its runs await their replan) or was said
    within the hand-off's lifetime. The same file dropped again later is named a duplicate."""
    again = (
        report.status == "duplicate"
        and report.first_path == report.path
        and (
            any(r["load"] is None and r["duplicate_of"] is None for r in report.runs)
            or (report.first_at is not None and (datetime.now(UTC) - report.first_at).total_seconds() < REPEAT_S)
        )
    )
    if not again and not (report.status == "ingested" and any(r["duplicate_of"] is None for r in report.runs)):
        announce(rt.db, rt.settings, athlete, report)  # nothing of it will get a load: its line is due now
    # A duplicate whose runs still have no load is a redelivery after a crash between the store and the
    # enqueue: its replan is still owed.
    owed = report.replan_owed or (
        report.status == "duplicate" and any(r["load"] is None and r["duplicate_of"] is None for r in report.runs)
    )
    return report.athlete_id if owed else None


@shared_task(bind=True, name="stridecare.replan")  # type: ignore[untyped-decorator]
def replan(self: Task, athlete_id: int, run_ids: list[int] | None = None) -> None:
    """Bring the athlete's figures up to date from their stale mark (nothing to do when it is clear).
    ``run_ids`` (messages queued by an earlier release) are announced as well."""
    plan_athlete(runtime_of(self.app), athlete_id, run_ids)


def plan_athlete(rt: Any, athlete_id: int, run_ids: list[int] | None = None, *, activities: bool = False) -> None:
    """How every way in ends when its store owes a replan: plan the athlete from their stale mark, print the
    lines of the files whose runs got their first load and of their prompts, and hand new deliveries to the
    workers."""

    announced: set[int] = set()

    def chunk_done(done: ChunkDone) -> None:
        # The console's line per file and per prompt, now that the runs' load is known.
        if done.first_loads:
            announce_stored(rt.db, rt.settings, list(done.first_loads), activities=activities)
            announced.update(done.first_loads)

    looked_at = replan_athlete(rt.db, rt.settings, athlete_id, rt.now(), on_chunk=chunk_done)
    log.debug("replan of athlete %d: %d runs looked at", athlete_id, looked_at)
    if left := [i for i in run_ids or () if i not in announced]:
        announce_stored(rt.db, rt.settings, left)
    publish_figures(rt.db, rt.settings, athlete_id, rt.now())  # Home Assistant, when STRIDECARE_MQTT_URL is set
    # The beat's tick would find them too; this saves a prompt up to a tick's wait.
    for delivery_id in due_delivery_ids(rt):
        deliver.delay(delivery_id)


@shared_task(bind=True, name="stridecare.deliver")  # type: ignore[untyped-decorator]
def deliver(self: Task, delivery_id: int) -> None:
    """Attempt one outbox delivery (claimed atomically, so a duplicate message does nothing)."""

    deliver_one(runtime_of(self.app), delivery_id, build_message)


@shared_task(bind=True, name="stridecare.dispatch_due")  # type: ignore[untyped-decorator]
def dispatch_due(self: Task) -> None:
    """Enqueue every outbox row that is due now."""

    for delivery_id in due_delivery_ids(runtime_of(self.app)):
        deliver.delay(delivery_id)
