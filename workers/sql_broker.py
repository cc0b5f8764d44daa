"""The broker transport for the embedded default: kombu's SQLAlchemy transport, polled more often.

kombu polls a SQL queue table once a second, and a file's way to a prompt crosses the queue twice (ingest, then
delivery), which alone added about two seconds to every prompt. Its ``polling_interval`` cannot be set through
``broker_transport_options`` (the SQLAlchemy channel hands those straight to ``create_engine``), hence this
subclass. A poll of an idle SQLite queue is one indexed query, so five a second cost nothing noticeable.
"""

from __future__ import annotations

from kombu.transport import sqlalchemy

POLLING_INTERVAL_S = 0.2


class Transport(sqlalchemy.Transport):
    """kombu's SQLAlchemy transport with a short polling interval."""

    polling_interval = POLLING_INTERVAL_S
