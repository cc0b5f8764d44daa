"""Long-running processes: the folder watcher and the all-in-one embedded runner behind ``stridecare run``."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import warnings
from typing import Any

from celery import Celery, platforms
from celery.apps.worker import Worker
from celery.beat import EmbeddedService
from celery.exceptions import SecurityWarning
from celery.platforms import EX_OK
from celery.utils.nodenames import default_nodename, host_format
from celery.worker import state as worker_state
from sqlalchemy import select

from ingest.service import ingest_path
from ingest.watch import Candidate, FolderScanner, FolderWatcher, make_inbox
from stridecare.db.athletes import ensure_athlete
from stridecare.db.models import Athlete
from stridecare.logging import event
from stridecare.runtime import Runtime
from workers.announce import announce
from workers.app import make_app
from workers.queues import BACKLOG, FILES, BurstLanes

log = logging.getLogger(__name__)
console = logging.getLogger("stridecare.console")

# kombu's SQL transport uses a loader option SQLAlchemy 2.1 deprecates, and Apprise imports the ``imghdr``
# module Python 3.13 drops; both work, and a runner's console is for what happens to their runs, not for a
# library's upgrade notes.
_NOISE = (r"The ``noload`` loader strategy is deprecated", r"'imghdr' is deprecated")


def _quiet_warnings() -> None:
    for message in _NOISE:
        warnings.filterwarnings("ignore", message=message)
    # Celery warns that a worker runs as root because pickled messages could run code. This worker takes
    # JSON only, from its own queue file (said once, below, instead of Celery's block of text).
    warnings.filterwarnings("ignore", category=SecurityWarning)


def _stop_quietly() -> None:
    """Ctrl-C (or SIGTERM) stops the worker as Celery's warm shutdown does — running tasks finish, queued work
    stays queued — with one line of ours instead of Celery's shutdown chatter; a second one stops at once."""

    def stop(*_args: Any) -> None:
        if worker_state.should_stop is None:
            event(console, "stopping", "stopping: running work finishes, queued work waits for the next start")
            worker_state.should_stop = EX_OK
        else:
            worker_state.should_terminate = EX_OK

    if threading.current_thread() is threading.main_thread():
        platforms.signals["SIGINT"] = stop
        platforms.signals["SIGTERM"] = stop


def make_watcher(
    rt: Runtime, *, use_broker: bool, celery: Celery | None = None, group_files: bool = False
) -> FolderWatcher:
    """A watcher over the configured inboxes that enqueues files (``use_broker``) or ingests them in-process.

    ``group_files`` sends the files found ready together in one message (the embedded runner: one process,
    whose queue crossing per file is the cost of a burst). The distributed watcher sends one message per file,
    so that a burst spreads over every worker and a killed worker loses the file it held, not its group."""
    inboxes = rt.settings.inbox_map()
    with rt.db.transaction() as session:
        # The athletes the folders name exist from the start, so `stridecare athlete set` works at once.
        known = set(session.scalars(select(Athlete.name)))
        for athlete, _root in inboxes:
            ensure_athlete(session, athlete, rt.settings)
    for athlete in dict.fromkeys(name for name, _root in inboxes if name not in known):
        # Created without a command of theirs: say so, with how to make them theirs.
        event(
            console,
            "athlete_created",
            f"{athlete}: new athlete, named in the inbox settings: time zone {rt.settings.default_timezone}, "
            f"prompts on the console, weekly balance from the first week with a run; change with "
            f"`stridecare athlete set {athlete} --timezone … --email …`",
            athlete=athlete,
            timezone=rt.settings.default_timezone,
        )
    scanner = FolderScanner(
        rt.db,
        inboxes,
        rt.settings.settle_seconds,
        hold_still_s=rt.settings.hold_still_seconds,
        quarantine_dir=rt.settings.effective_quarantine_dir,
    )
    if use_broker:
        # The task is taken from an explicit app: Celery's "current app" is per thread, and the watcher runs
        # in a thread of its own.
        task = (celery or make_app(rt.settings, rt)).tasks["stridecare.ingest_file"]
        # An athlete's first files of a burst go on the files queue, the rest on the backlog queue, so that one
        # athlete's big drop holds back no other athlete's fresh run (workers.queues).
        lanes = BurstLanes()

        def send(files: list[Candidate], queue: str) -> None:
            first, *more = files
            task.apply_async(
                (first.athlete, str(first.path), str(first.root), *([[str(c.path) for c in more]] if more else [])),
                queue=queue,
            )

        def submit(c: Candidate) -> None:
            send([c], lanes.lane(c.athlete))

        def submit_group(group: list[Candidate]) -> None:
            # One message for files found ready together (one athlete's folder): a burst crosses the queue
            # in a few messages, and the files of one message are stored in order by one worker.
            fresh, _rest = lanes.split(group[0].athlete, len(group))
            for files, queue in ((group[:fresh], FILES), (group[fresh:], BACKLOG)):
                if files:
                    send(files, queue)

        return FolderWatcher(
            scanner, submit, rt.settings.rescan_interval_s, submit_group=submit_group if group_files else None
        )
    else:

        def submit(c: Candidate) -> None:
            report = ingest_path(rt.db, rt.settings, c.athlete, c.path, rt.now(), root=c.root, quarantine_damaged=True)
            announce(rt.db, rt.settings, c.athlete, report)

    return FolderWatcher(scanner, submit, rt.settings.rescan_interval_s)


def run_watcher(rt: Runtime, *, use_broker: bool) -> None:
    """Watch until interrupted."""
    watcher = make_watcher(rt, use_broker=use_broker)
    _stop_on_signals(watcher.stop)
    watcher.run()


def _stop_on_signals(stop: Any) -> None:
    def handler(signum: int, _frame: Any) -> None:
        stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


class _QuietWorker(Worker):  # type: ignore[misc]
    """Celery's worker, with this process's Ctrl-C handling put back the moment Celery installs its own: a
    Ctrl-C at any point of the start stops as quietly as one later."""

    def install_platform_tweaks(self, worker: Any) -> None:
        super().install_platform_tweaks(worker)
        _stop_quietly()


def _stop_beat(beat: Any, tick_s: float) -> None:
    """Stop the beat thread, giving it its last sleep between ticks and the saving of its schedule, but no more.

    Celery's own ``stop`` waits for a flag set only after the schedule is saved: when saving fails (a full disk,
    the data folder removed under a running process) it waits forever, and Ctrl-C no longer stops anything.
    The schedule is only a cache of when the tick last ran; losing it costs at most one early tick."""
    beat.service.stop(wait=False)
    beat.join(timeout=tick_s + _BEAT_SAVE_S)
    if beat.is_alive():
        log.warning("the scheduler did not stop within %.0f s; stopping without it", tick_s + _BEAT_SAVE_S)


# Time for the beat to save its schedule once its last sleep has ended.
_BEAT_SAVE_S = 5.0


def run_all(rt: Runtime, *, concurrency: int = 2, web: socket.socket | None = None, verbose: bool = False) -> None:
    """Everything in one process: a Celery worker (thread pool) with its beat, the watcher and the web app
    (served on ``web``, a socket from ``web.listen.listen``; None: no web app).

    On the embedded default the broker is a SQLite file, so queued work survives a restart; the outbox and
    the import log in the database make every step idempotent.
    """
    _stop_quietly()  # a Ctrl-C while starting stops as cleanly as one later
    celery = make_app(rt.settings, rt)
    # The worker must not swap stdout/stderr for a logger: the console writes to them, and a record written
    # into a stream that logs would be lost.
    celery.conf.worker_redirect_stdouts = False
    # The worker consumes every queue (workers.queues); the SQLite transport takes them by priority, so files,
    # replans and deliveries never wait behind queued Strava events.
    for athlete, root in rt.settings.inbox_map():
        if make_inbox(root):
            log.debug("watching %s for %s", root, athlete)
    watcher = make_watcher(rt, use_broker=True, celery=celery, group_files=True)
    watcher.start_thread()
    if web is not None:
        # deferred: start-up time (the web app, Starlette and uvicorn are about a fifth of a start; --no-web
        # never loads them)
        from stridecare_app.web.server import announce_login, serve_in_thread

        serve_in_thread(rt, web)
        # The home page and the dashboards need the admin session: the link that opens one.
        announce_login(rt)
    # The beat runs as a thread: Celery's own embedded beat forks, and SQLite must never cross a fork.
    beat = EmbeddedService(celery, thread=True, schedule_filename=str(rt.settings.data_home / "celerybeat-schedule"))
    beat.start()
    # Set again here: the Celery worker installs its own warning filters as it starts.
    _quiet_warnings()
    if os.geteuid() == 0:
        log.info("running as root: the worker takes JSON messages from its own queue only; a user of its own is wiser")
    try:
        # The worker is built directly, not through ``worker_main``: Celery's command line brings click-repl and
        # prompt_toolkit (about 0.4 s of CPU at every start) for options this process sets itself.
        worker = _QuietWorker(
            app=celery,
            hostname=host_format(default_nodename("stridecare@%h")),
            pool_cls="threads",
            concurrency=concurrency,
            loglevel="INFO",
            quiet=not verbose,  # no banner: the console says what matters
            without_heartbeat=True,
            without_gossip=True,
            without_mingle=True,
        )
        worker.start()
    finally:
        _stop_beat(beat, rt.settings.relay_interval_s)
        watcher.stop()
