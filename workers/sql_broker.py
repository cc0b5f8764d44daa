"""The broker transport for the embedded default: kombu's SQLAlchemy transport, polled more often, keeping
no consumed message.

kombu polls a SQL queue table once a second, and a file's way to a prompt crosses the queue twice (ingest, then
delivery), which alone added about two seconds to every prompt. Its ``polling_interval`` cannot be set through
``broker_transport_options`` (the SQLAlchemy channel hands those straight to ``create_engine``), hence this
subclass. A poll of an idle SQLite queue is one indexed query, so five a second cost nothing noticeable.

kombu marks a consumed message invisible and keeps it for ever (about 25 MB a day of old task messages in
``broker.db``). The row is of no further use: acknowledgement is kept in the worker's memory by kombu's
virtual transport, and a message a worker did not acknowledge is put back as a new row (``restore``). So the
channel here deletes the row in the same transaction that takes it.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from sqlalchemy import text

POLLING_INTERVAL_S = 0.2


class Channel(sqlalchemy.Channel):
    """kombu's SQLAlchemy channel, deleting each message as it is taken."""

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        # kombu is untyped: its helpers are called as they are.
        obj = self._get_or_create(queue)  # type: ignore[no-untyped-call]
        session = self.session
        if session.bind.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
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
                raise Empty()
            payload = loads(bytes_to_str(message.payload))  # type: ignore[no-untyped-call]
            session.delete(message)
            return payload
        finally:
            session.commit()


class Transport(sqlalchemy.Transport):
    """kombu's SQLAlchemy transport with a short polling interval and a channel that deletes what it hands out."""

    Channel = Channel
    polling_interval = POLLING_INTERVAL_S
