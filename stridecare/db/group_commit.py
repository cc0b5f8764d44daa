"""Group commit: many small appends, one transaction.

A writer thread takes every item handed in while its previous transaction was committing (and, under load,
those that arrive within a few more milliseconds), writes them with one call of ``write`` in one transaction,
commits, and only then resolves each caller's future. So a caller that was answered has its item on disk (a
process killed after the answer loses nothing), and a burst of N appends costs a handful of commits instead of
N, each of which on SQLite would take the one write lock in turn.

The thread keeps one connection checked out while it is busy: no pool checkout, and so no pre-ping round trip,
per batch. It lets the connection go after :data:`IDLE_EXIT_S` without work and starts again on the next
append. A batch whose connection broke (a database restart) is retried once on a fresh connection; the write
must therefore be idempotent (the Strava event append is: unique on its content).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from stridecare.db.engine import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# How long the writer lingers for more items after a batch of more than one (a burst is going on); a lone
# append is written at once.
LINGER_S = 0.002
MAX_BATCH = 256
IDLE_EXIT_S = 5.0


@dataclass(slots=True)
class Stats:
    """What the writer did: items written and transactions committed."""

    items: int = 0
    commits: int = 0


class GroupCommit(Generic[T, R]):
    """Appends ``T`` items through ``write(connection, items) -> results`` (one result per item, in order),
    batching concurrent appends into one transaction; ``after_commit(results)`` runs after each commit and
    before the callers are answered (it must be quick: it delays the next batch)."""

    def __init__(
        self,
        db: Database,
        write: Callable[[Connection, Sequence[T]], Sequence[R]],
        *,
        after_commit: Callable[[Sequence[R]], None] | None = None,
        linger_s: float = LINGER_S,
        max_batch: int = MAX_BATCH,
        name: str = "group-commit",
    ) -> None:
        self._db = db
        self._write = write
        self._after_commit = after_commit
        self._linger_s = linger_s
        self._max_batch = max_batch
        self._name = name
        self._pending: list[tuple[T, Future[R]]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.stats = Stats()

    def submit(self, item: T) -> Future[R]:
        """Hand ``item`` to the writer; the future resolves once its transaction committed."""
        future: Future[R] = Future()
        with self._cond:
            self._pending.append((item, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    async def append(self, item: T) -> R:
        """Append ``item`` and wait, without blocking the event loop, until it is committed."""
        return await asyncio.wrap_future(self.submit(item))

    def _take(self, lingered: bool) -> list[tuple[T, Future[R]]] | None:
        """The next batch; None when the writer has been idle long enough to stop."""
        with self._cond:
            if not self._pending:
                self._cond.wait(IDLE_EXIT_S)
                if not self._pending:
                    self._thread = None  # the next submit starts a new writer
                    return None
            if lingered and len(self._pending) < self._max_batch:
                # A burst is going on: a few more milliseconds fill this batch instead of starting the next.
                deadline = time.monotonic() + self._linger_s
                while len(self._pending) < self._max_batch and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            return batch

    def _run(self) -> None:
        conn: Connection | None = None
        lingered = False
        try:
            while (batch := self._take(lingered)) is not None:
                lingered = len(batch) > 1
                conn = self._commit(conn, batch)
        finally:
            if conn is not None:
                conn.close()

    def _commit(self, conn: Connection | None, batch: list[tuple[T, Future[R]]]) -> Connection | None:
        items = [item for item, _ in batch]
        results: Sequence[R] | None = None
        for attempt in (1, 2):
            try:
                if not self._db._owns_engine:
                    # A database bound to a caller's connection (the test suite): its units of work only.
                    with self._db.transaction() as session:
                        results = self._write(session.connection(), items)
                    break
                if conn is None:
                    conn = self._db.engine.connect()
                with conn.begin():
                    results = self._write(conn, items)
                break
            except DBAPIError as err:
                broken = err.connection_invalidated
                if conn is not None:
                    conn.close()
                    conn = None
                if attempt == 2 or not broken:
                    self._fail(batch, err)
                    return conn
                log.info("%s: connection lost, writing the batch again on a new one", self._name)
            except Exception as err:
                if conn is not None:
                    conn.close()
                    conn = None
                self._fail(batch, err)
                return conn
        assert results is not None and len(results) == len(batch)
        self.stats.items += len(batch)
        self.stats.commits += 1
        if self._after_commit is not None:
            try:
                self._after_commit(results)
            except Exception:  # the items are committed: their callers are answered whatever this says
                log.warning("%s: after-commit hook failed", self._name, exc_info=True)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a caller that gave up (its client went away) cancelled its future
                future.set_result(result)
        return conn

    def _fail(self, batch: list[tuple[T, Future[R]]], err: BaseException) -> None:
        log.warning("%s: a batch of %d was not written (%s)", self._name, len(batch), type(err).__name__)
        for _, future in batch:
            if not future.done():
                future.set_exception(err)
