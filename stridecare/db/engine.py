"""Engines and transactions for SQLite (embedded default) and PostgreSQL (distributed)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and enforced foreign keys so that the in-process
    worker threads, the watcher and the command line can share one file."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Leave transaction control to SQLAlchemy's "begin" hook so that writers take the lock up front.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # BEGIN IMMEDIATE: a transaction that will write waits for the lock at its start instead of failing with
    # "database is locked" half-way through, which would otherwise happen when two threads upgrade at once.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine: Engine) -> bool:
    """True for the embedded SQLite database."""
    return engine.dialect.name == "sqlite"


class Database:
    """An engine and its session factory; ``transaction()`` is the unit of work every task uses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        """Close pooled connections (after fork, and at shutdown)."""
        self.engine.dispose()
