"""The Celery queues, by kind of work, and the order a worker that consumes them all takes them in.

One FIFO queue carried everything: a dropped FIT file waited behind every Strava event queued before it (16,000
events held its prompt back 70 s). Each kind of work now has a queue of its own:

* ``delivery``: prompts out (``stridecare.deliver``, ``stridecare.dispatch_due``);
* ``planning``: ``stridecare.replan`` and the beat's ``stridecare.tick`` (scheduled prompts, stale marks);
* ``files``: dropped and retried files (``stridecare.ingest_file``, ``stridecare.retry_file``);
* ``backlog``: the rest of one athlete's burst of files (``stridecare.ingest_file`` too, below);
* ``connectors``: intervals.icu, Garmin Connect … pulls (``stridecare.connector_poll``, ``connectors_due``);
* ``events``: everything Strava (``stridecare.strava*``: events, backfill steps, a drain nudge);
* ``celery``: Celery's default, for a task no route names (and messages queued before the split).

A worker started without ``-Q`` consumes all of them. On Redis, Celery takes from its queues in turn (round
robin), so while another queue has work a flood in one queue gets at most every other message. The embedded
worker on the SQLite queue (:mod:`workers.sql_broker`) takes them in :data:`PRIORITY` order instead: the end
of a file's way first (delivery, then planning, then files), Strava events last, with one take in
:data:`ROUND_ROBIN_EVERY` looking at the queues in reverse order, so that a long file burst slows events down
but never stops them; and events, connector pulls and backlog files together hold at most all but one of its
slots (:data:`KEEP_A_SLOT_FOR`), so a long Strava backfill step cannot make a fresh file wait for its end.

Between athletes: an athlete's first :data:`BurstLanes.FRESH` files within a minute go on ``files``, the rest
of their burst on ``backlog`` (:class:`BurstLanes`, in the watcher). Another athlete's fresh run thus waits
for no part of one athlete's thousand-file import but the few files of it being read, and an athlete's own
fresh run after a quiet minute goes ahead of their backlog. Replans are one per athlete already: an athlete
has at most one replan queued at a time (the stale mark, :mod:`workers.tasks`), so the planning queue is one
message per athlete in the order they became due; the replan a backlog file owes is queued on ``backlog``,
behind the rest of its burst, so that a big import still costs one or two replans.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

DELIVERY = "delivery"
PLANNING = "planning"
FILES = "files"
BACKLOG = "backlog"
CONNECTORS = "connectors"
EVENTS = "events"
DEFAULT = "celery"  # Celery's default queue name: unrouted tasks, and messages of a version without queues

# The order the embedded worker takes its queues in: what finishes work already under way first.
PRIORITY: tuple[str, ...] = (DELIVERY, PLANNING, FILES, CONNECTORS, BACKLOG, DEFAULT, EVENTS)
QUEUES: tuple[str, ...] = PRIORITY
# One take in this many goes round the queues in turn instead of by priority (no queue waits for ever).
ROUND_ROBIN_EVERY = 8
# The embedded worker keeps one of its slots for these: the rest (a Strava backfill step, a connector's first
# sync, a backlog group) may run long, and the worker does not take a new task while all its slots are busy.
KEEP_A_SLOT_FOR: frozenset[str] = frozenset({DELIVERY, PLANNING, FILES})

# Task name (or glob) → queue. Celery matches exact names first, then the globs in order.
ROUTES: dict[str, dict[str, Any]] = {
    "stridecare.deliver": {"queue": DELIVERY},
    "stridecare.dispatch_due": {"queue": DELIVERY},
    "stridecare.replan": {"queue": PLANNING},
    "stridecare.tick": {"queue": PLANNING},
    "stridecare.ingest_file": {"queue": FILES},
    "stridecare.retry_file": {"queue": FILES},
    "stridecare.connector_poll": {"queue": CONNECTORS},
    "stridecare.connectors_due": {"queue": CONNECTORS},
    # Every Strava task, whatever its name: events, backfill steps, the events table's drain nudge.
    "stridecare.strava*": {"queue": EVENTS},
}


class BurstLanes:
    """Which files queue an athlete's next files go on: ``files`` for the first :attr:`FRESH` files the
    athlete hands on within ``window_s``, ``backlog`` for the rest of the burst.

    Why a rank in the burst and not a count of queued messages: the sender knows what it handed on, not what
    the workers took; a minute covers the time a burst's files are found, and a fresh run after a quiet minute
    is on ``files`` again. Within each queue the order stays FIFO, so an athlete's files are stored in the
    order they were handed on, except that the first of a burst may overtake the rest.
    """

    FRESH = 4

    def __init__(self, window_s: float = 60.0, clock: Any = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._handed: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def split(self, athlete: str, files: int = 1) -> tuple[int, int]:
        """Count ``files`` more of ``athlete``'s as handed on now: how many of them (the first ones) go on
        ``files``, and how many on ``backlog``."""
        now = self._clock()
        with self._lock:
            times = self._handed.setdefault(athlete, deque())
            while times and now - times[0] > self.window_s:
                times.popleft()
            fresh = max(0, min(files, self.FRESH - len(times)))
            times.extend([now] * files)
            # Forget athletes with nothing in the window: the map stays as small as the current bursts.
            for name in [n for n, t in self._handed.items() if not t or now - t[-1] > self.window_s]:
                del self._handed[name]
        return fresh, files - fresh

    def lane(self, athlete: str) -> str:
        """The queue of one more file of ``athlete``'s."""
        fresh, _rest = self.split(athlete)
        return FILES if fresh else BACKLOG
