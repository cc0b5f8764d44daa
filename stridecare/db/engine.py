"""Engines and transactions for SQLite (embedded default) and PostgreSQL (distributed).

Two kinds of unit of work: ``Database.transaction()`` for work that writes, and ``Database.read()`` for work
that only reads. On SQLite a write transaction begins IMMEDIATE (it takes the one write lock up front, so it
never fails half-way on an upgrade), while a read transaction begins DEFERRED and runs on WAL's snapshot: it
never waits for, nor holds, the write lock, so the web app keeps answering while a worker stores a batch.

A read that needs no mapped objects may use ``Database.read_engine`` with SQLAlchemy Core (``stridecare runs``):
the session factories, and with them the ORM, are made only when a process first opens a session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

# Execution option that marks an engine (and the connections it hands out) as read-only: no write lock.
READ_ONLY_OPTION = "stridecare_read_only"


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
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine.pool, "checkin", _sqlite_writable)
    else:
        event.listen(engine, "begin", _server_begin)
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


def _sqlite_begin(conn: Any) -> None:
    if conn.get_execution_options().get(READ_ONLY_OPTION):
        # DEFERRED: a WAL reader takes no lock that a writer waits for. query_only turns an accidental write
        # into an error instead of a lock upgrade that could fail with "database is locked" mid-request.
        conn.exec_driver_sql("PRAGMA query_only=ON")
        conn.exec_driver_sql("BEGIN DEFERRED")
        return
    # BEGIN IMMEDIATE: a transaction that will write waits for the lock at its start instead of failing with
    # "database is locked" half-way through, which would otherwise happen when two threads upgrade at once.
    # The pooled connection may last have served a reader: writes must be allowed again.
    conn.exec_driver_sql("PRAGMA query_only=OFF")
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_writable(dbapi_conn: Any, _record: Any) -> None:
    # A pooled connection goes back writable, whatever served last: only "begin" above knows about readers.
    if dbapi_conn is not None:
        dbapi_conn.execute("PRAGMA query_only=OFF")


def _server_begin(conn: Any) -> None:
    if conn.get_execution_options().get(READ_ONLY_OPTION):
        # The driver has opened the transaction implicitly; mark it so that a stray write fails loudly.
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")


def is_sqlite(engine: Engine) -> bool:
    """True for the embedded SQLite database."""
    return engine.dialect.name == "sqlite"


class Database:
    """An engine and its session factories: ``transaction()`` is the unit of work every writing task uses,
    ``read()`` the one for handlers, reports and status pages that only read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        # Shares the engine's pool and event hooks; only the "begin" hook reads the option.
        self.read_engine = self.engine.execution_options(**{READ_ONLY_OPTION: True})
        # The write and read session factories, made by the first unit of work (_factories).
        self._sessions: tuple[sessionmaker[Session], sessionmaker[Session]] | None = None
        self._owns_engine = True

    @classmethod
    def bound_to(cls, connection: Connection) -> Database:
        """A database whose units of work all run on ``connection``, each in a savepoint of the transaction its
        caller has begun there (the test suite: one migrated database, each test's transaction rolled back).

        A unit's commit releases its savepoint, so later units, reads included, see what it wrote; the caller's
        rollback undoes all of it. Reads are made read-only in their savepoint as ``read()`` is on a connection of
        its own; unlike there, a write begun while a read is still open is refused too. The caller owns the
        connection and its engine: ``dispose()`` leaves them be.
        """
        from sqlalchemy.orm import sessionmaker  # deferred: start-up time (see _factories)

        db = cls.__new__(cls)
        db.url = connection.engine.url.render_as_string(hide_password=False)
        db.engine = connection.engine
        db.read_engine = connection.engine.execution_options(**{READ_ONLY_OPTION: True})
        write = sessionmaker(connection, expire_on_commit=False, join_transaction_mode="create_savepoint")
        read = sessionmaker(
            connection, expire_on_commit=False, autoflush=False, join_transaction_mode="create_savepoint"
        )
        # The "begin" hooks of make_engine never fire here (the connection's transaction is already open).
        event.listen(read, "after_begin", _savepoint_read_only)
        if is_sqlite(connection.engine):
            event.listen(read, "after_transaction_end", _savepoint_writable)
        db._sessions = (write, read)
        db._owns_engine = False
        return db

    def _factories(self) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
        """The write and read session factories, made on first use: a process that reads only through Core
        (``stridecare runs``) never imports the ORM (about 0.15 s of CPU)."""
        if self._sessions is None:
            from sqlalchemy.orm import sessionmaker  # deferred: start-up time (Core reads need no ORM)

            self._sessions = (
                sessionmaker(self.engine, expire_on_commit=False),
                sessionmaker(self.read_engine, expire_on_commit=False, autoflush=False),
            )
        return self._sessions

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._factories()[0].begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """One read-only transaction on a consistent snapshot; never takes SQLite's write lock.

        The block must not write: on SQLite and PostgreSQL a write raises. The transaction is rolled back at
        the end, so nothing a caller changed on loaded objects reaches the database; the objects it loaded are
        detached first and keep their loaded attributes, so a caller may return one from the block (what was
        not loaded, such as an unloaded relationship, cannot be read afterwards).
        """
        session = self._factories()[1]()
        try:
            yield session
        finally:
            session.expunge_all()
            session.rollback()
            session.close()

    def dispose(self) -> None:
        """Close pooled connections (after fork, and at shutdown)."""
        if self._owns_engine:
            self.engine.dispose()


def _savepoint_read_only(_session: Session, _transaction: Any, connection: Connection) -> None:
    # A savepoint can be made read-only on PostgreSQL (and reverts when rolled back to); on SQLite query_only
    # is a connection setting, switched back when the read ends.
    if is_sqlite(connection.engine):
        connection.exec_driver_sql("PRAGMA query_only=ON")
    else:
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")


def _savepoint_writable(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        connection = session.get_bind()
        assert isinstance(connection, Connection)
        connection.exec_driver_sql("PRAGMA query_only=OFF")
