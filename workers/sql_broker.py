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
"""

from __future__ import annotations

import time
from typing import Any

from kombu.transport import sqlalchemy
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

POLLING_INTERVAL_S = 0.2
# While messages keep coming the consumer polls far more often: a worker whose slots were full sleeps a whole
# interval before it takes the next message, which in a burst of small tasks was most of the wall time.
BUSY_POLLING_INTERVAL_S = 0.02


def _broker_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Channel(sqlalchemy.Channel):
    """kombu's SQLAlchemy channel, deleting each message as it is taken, on a SQLite file in WAL mode."""

    _purged = False  # whether this channel has deleted the consumed rows kept by earlier versions

    def _engine_from_config(self) -> Engine:
        engine: Engine = super()._engine_from_config()  # type: ignore[no-untyped-call]
        if engine.dialect.name == "sqlite":
            # Before the first connection: kombu creates its tables right after this returns.
            event.listen(engine, "connect", _broker_pragmas)
        return engine

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        # kombu is untyped: its helpers are called as they are.
        obj = self._get_or_create(queue)  # type: ignore[no-untyped-call]
        session = self.session
        if session.bind.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            if not self._purged:
                # Invisible rows were consumed; an unacknowledged message was restored as a new, visible row.
                session.query(self.message_cls).filter(self.message_cls.visible.is_(False)).delete()
                self._purged = True
            message = (
                session.query(self.message_cls)
                .with_for_update()
                .filter(self.message_cls.queue_id == obj.id)
                .filter(self.message_cls.visible.is_not(False))
                .order_by(self.message_cls.sent_at)
                .order_by(self.message_cls.id)
                .limit(1)
                .first()
            )
            if message is None:
                self.connection.queue_had_message = False
                raise Empty()
            payload = loads(bytes_to_str(message.payload))  # type: ignore[no-untyped-call]
            session.delete(message)
            self.connection.queue_had_message = True
            return payload
        finally:
            session.commit()


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
