"""The broker transport for the embedded default: kombu's SQLAlchemy transport, polled more often, keeping
no consumed message.

kombu polls a SQL queue table once a second, and a file's way to a prompt crosses the queue twice (ingest, then
delivery), which alone added about two seconds to every prompt. Its ``polling_interval`` cannot be set through
``broker_transport_options`` (the SQLAlchemy channel hands those straight to ``create_engine``), hence this
subclass. A poll of an idle SQLite queue is one indexed query, so five a second cost nothing noticeable; while
messages keep coming (a burst of inbox files) the consumer polls every 20 ms, so that a worker slot that
frees up takes the next message at once instead of after a whole interval.

kombu marks a consumed message invisible and keeps it for ever (about 25 MB a day of old task messages in
``broker.db``). The row is of no further use: acknowledgement is kept in the worker's memory by kombu's
virtual transport, and a message a worker did not acknowledge is put back as a new row (``restore``). So the
channel here deletes the row in the same transaction that takes it, and its first poll deletes the invisible
rows a version that kept them left behind.

kombu opens the SQLite file in its default rollback-journal mode, where every message sent is a commit that
creates, syncs and deletes a journal file: two disk syncs per task, which made sending a message cost more
than the task it carried (an inbox burst sends two per file). The channel opens the file in WAL mode with
``synchronous=NORMAL``, as the main database is: a commit survives a killed process, and what a power cut
could take (the last messages sent) is found again from the database, which is the record of what is owed:
the watcher re-reads inbox files the import log does not hold, the beat's periodic pass finishes a stale
athlete and sends due deliveries.

A worker consuming several queues takes from them by priority (:data:`workers.queues.PRIORITY`: delivery,
planning, files, connectors, backlog, then Strava events), not kombu's round robin of one message per queue in
turn: one poll looks at the queues in that order, in one transaction, and takes the first message it finds, so
a file's task, its replan and its delivery each wait for at most the tasks already running, never for a queue
of Strava events. One take in :data:`workers.queues.ROUND_ROBIN_EVERY` looks at the queues in the reverse order,
so that a long burst of files slows events down instead of stopping them. Priority decides only what is taken
next, and a worker takes nothing while its slots are busy: so messages of the other queues (events,
connectors, backlog) are handed out only while fewer than all but one of the worker's slots (its prefetch
count) hold one, and one slot stays for :data:`workers.queues.KEEP_A_SLOT_FOR`. The messages of one queue stay in
the order they were sent; an index on (queue, time, id) finds a queue's first message without reading past
another queue's thousands.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kombu.transport import sqlalchemy
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from workers.queues import KEEP_A_SLOT_FOR, PRIORITY, ROUND_ROBIN_EVERY

POLLING_INTERVAL_S = 0.2
# While messages keep coming the consumer polls far more often: a worker whose slots were full sleeps a whole
# interval before it takes the next message, which in a burst of small tasks was most of the wall time.
BUSY_POLLING_INTERVAL_S = 0.02
# Queues not in PRIORITY (Celery's control queues, a queue someone added) rank before Strava events.
_UNKNOWN_RANK = PRIORITY.index("celery")


def queue_rank(name: str) -> int:
    """Where a queue comes in the embedded worker's priority order (0 first)."""
    return PRIORITY.index(name) if name in PRIORITY else _UNKNOWN_RANK


def _broker_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Channel(sqlalchemy.Channel):
    """kombu's SQLAlchemy channel, deleting each message as it is taken, on a SQLite file in WAL mode."""

    _purged = False  # whether this channel has deleted the consumed rows kept by earlier versions
    _takes = 0  # messages this channel took through _poll: every ROUND_ROBIN_EVERY-th looks the other way

    def _poll(self, cycle: Any, callback: Any, timeout: Any = None) -> Any:
        """Take the first message of the consumed queues in priority order (once in ROUND_ROBIN_EVERY takes,
        in reverse order) and hand it to ``callback``; kombu's own poll takes one queue after another in turn."""
        queues = sorted(dict.fromkeys(self._active_queues), key=queue_rank)
        held_back: list[str] = []
        if self._slots_kept() and any(q in KEEP_A_SLOT_FOR for q in queues):
            held_back = [q for q in queues if q not in KEEP_A_SLOT_FOR]
            queues = [q for q in queues if q in KEEP_A_SLOT_FOR]
        if (self._takes + 1) % ROUND_ROBIN_EVERY == 0:
            queues.reverse()
        payload, queue = self._take_first(queues, held_back)
        self._takes += 1
        if queue not in KEEP_A_SLOT_FOR:
            self._others_held.add(payload["properties"]["delivery_tag"])
        callback(payload, queue)

    @property
    def _others_held(self) -> set[str]:
        """Delivery tags of the messages not of KEEP_A_SLOT_FOR handed out and not yet acknowledged."""
        held: set[str] = self.__dict__.setdefault("_held", set())
        return held

    def _slots_kept(self) -> bool:
        """Whether the other queues hold all the slots they may: all but one of the prefetch count (at least
        one; none kept without a prefetch limit)."""
        slots = int(self.qos.prefetch_count or 0)
        return slots > 0 and len(self._others_held) >= max(1, slots - 1)

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        """Acknowledge, and free the slot the message held (acks can come from the pool's threads)."""
        self._others_held.discard(delivery_tag)
        super().basic_ack(delivery_tag, multiple)  # type: ignore[no-untyped-call]

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """Reject (requeued or not), and free the slot the message held."""
        self._others_held.discard(delivery_tag)
        super().basic_reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]

    def _take_first(self, queues: Sequence[str], held_back: Sequence[str] = ()) -> tuple[Any, str]:
        """The first message of the first of ``queues`` that has one, deleted as it is taken; Empty if none.

        With none, the transport polls at its idle interval, unless a queue in ``held_back`` (not taken from
        while the slot is kept) has messages: a flood being worked through goes on at the busy interval."""
        ids = [(name, self._queue_id(name)) for name in queues]
        waiting = [self._queue_id(name) for name in held_back]
        session = self.session
        if session.bind.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            self._tidy(session)
            for name, queue_id in ids:
                message = self._first(session, queue_id)
                if message is not None:
                    payload = loads(bytes_to_str(message.payload))  # type: ignore[no-untyped-call]
                    session.delete(message)
                    self.connection.queue_had_message = True
                    return payload, name
            self.connection.queue_had_message = any(self._first(session, queue_id) is not None for queue_id in waiting)
            raise Empty()
        finally:
            session.commit()

    def _queue_id(self, name: str) -> int:
        """The queue's row id, looked up once: a poll looks at every queue, and kombu never deletes a queue row."""
        cache: dict[str, int] = self.__dict__.setdefault("_queue_ids", {})
        if name not in cache:
            cache[name] = int(self._get_or_create(name).id)  # type: ignore[no-untyped-call]
        return cache[name]

    def _first(self, session: Any, queue_id: int) -> Any:
        return (
            session.query(self.message_cls)
            .with_for_update()
            .filter(self.message_cls.queue_id == queue_id)
            .filter(self.message_cls.visible.is_not(False))
            .order_by(self.message_cls.sent_at)
            .order_by(self.message_cls.id)
            .limit(1)
            .first()
        )

    def _tidy(self, session: Any) -> None:
        """Once per channel: delete the consumed rows earlier versions kept, and index messages by queue."""
        if self._purged:
            return
        # Invisible rows were consumed; an unacknowledged message was restored as a new, visible row.
        session.query(self.message_cls).filter(self.message_cls.visible.is_(False)).delete()
        # kombu's only index is (time, id): a queue's first message was found by reading past every older
        # message of every other queue (16,000 Strava events before a file's message).
        table = self.message_cls.__tablename__
        session.execute(
            text(f"CREATE INDEX IF NOT EXISTS ix_{table}_queue_timestamp_id ON {table} (queue_id, timestamp, id)")
        )
        self._purged = True

    def _engine_from_config(self) -> Engine:
        engine: Engine = super()._engine_from_config()  # type: ignore[no-untyped-call]
        if engine.dialect.name == "sqlite":
            # Before the first connection: kombu creates its tables right after this returns.
            event.listen(engine, "connect", _broker_pragmas)
        return engine

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        """One queue's first message (kombu calls this for a single queue, e.g. ``basic_get``)."""
        payload, _queue = self._take_first([queue])
        return payload


class Transport(sqlalchemy.Transport):
    """kombu's SQLAlchemy transport with a short polling interval and a channel that deletes what it hands out."""

    Channel = Channel
    queue_had_message = False  # what the last poll found
    _idle_polling_interval = POLLING_INTERVAL_S

    @property
    def polling_interval(self) -> float:
        """Short after a poll that found a message (more are likely), the idle interval after an empty one."""
        if self.queue_had_message:
            return min(BUSY_POLLING_INTERVAL_S, self._idle_polling_interval)
        return self._idle_polling_interval

    @polling_interval.setter
    def polling_interval(self, value: float) -> None:
        # kombu sets the transport option ``polling_interval`` here when one is given.
        self._idle_polling_interval = value

    def drain_events(self, connection: Any, timeout: float | None = None, **_kwargs: Any) -> None:
        """kombu's loop, with the interval chosen again before every sleep: kombu reads it once per call, and a
        call lasts up to two seconds of polls."""
        started = time.monotonic()
        cycle = self.cycle
        assert cycle is not None  # set when the transport is created
        while True:
            try:
                cycle.get(self._deliver, timeout=timeout)  # type: ignore[no-untyped-call]
            except Empty:
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise TimeoutError() from None
                interval = self.polling_interval
                time.sleep(interval if timeout is None else min(interval, timeout))
            else:
                return
