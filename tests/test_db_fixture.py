"""The session database with a rolled-back transaction per test (``tx_rt``, ``any_tx_rt``): a test's commits are
seen by its own later units of work, reads included, and by no later test; a failed unit undoes only itself."""

from __future__ import annotations

import pytest
from conftest import rolled_back
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from stridecare.db.engine import Database
from stridecare.db.models import Athlete
from stridecare.runtime import Runtime

PROBE = "session-db-probe"


def seen(db: Database) -> tuple[list[str], list[str]]:
    """The athletes' names as a write transaction and as a read transaction see them."""
    with db.transaction() as session:
        written = list(session.scalars(select(Athlete.name).order_by(Athlete.name)))
    with db.read() as session:
        read = list(session.scalars(select(Athlete.name).order_by(Athlete.name)))
    return written, read


@pytest.fixture(params=["sqlite", "postgres"])
def session_connection(request: pytest.FixtureRequest) -> Connection:
    backend = "pg" if request.param == "postgres" else "sqlite"
    connection: Connection = request.getfixturevalue(f"{backend}_session_connection")
    return connection


def test_committed_writes_are_seen_within_the_test_by_transaction_and_read(any_tx_rt: Runtime) -> None:
    db = any_tx_rt.db
    assert seen(db) == ([], [])
    with db.transaction() as session:
        session.add(Athlete(name=PROBE, timezone="UTC"))
    assert seen(db) == ([PROBE], [PROBE])
    # A second unit of work commits on top of the first.
    with db.transaction() as session:
        session.add(Athlete(name="second", timezone="UTC"))
    assert seen(db) == (["second", PROBE], ["second", PROBE])


def test_a_later_test_finds_the_migrated_database_empty(any_tx_rt: Runtime) -> None:
    # Runs after the test above (in one process): its committed athletes are gone, the schema is there.
    assert seen(any_tx_rt.db) == ([], [])
    with any_tx_rt.db.read() as session:
        assert session.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_the_end_of_a_test_undoes_its_commits_for_the_next(session_connection: Connection) -> None:
    # The fixture's cycle twice over, so that the order of tests across parallel workers cannot hide a leak.
    for _ in range(2):
        with rolled_back(session_connection) as db:
            assert seen(db) == ([], [])
            with db.transaction() as session:
                session.add(Athlete(name=PROBE, timezone="UTC"))
            assert seen(db) == ([PROBE], [PROBE])


def test_a_failed_unit_of_work_undoes_only_itself(any_tx_rt: Runtime) -> None:
    db = any_tx_rt.db
    with db.transaction() as session:
        session.add(Athlete(name=PROBE, timezone="UTC"))

    def clash() -> None:
        with db.transaction() as session:
            session.add(Athlete(name="kept-out", timezone="UTC"))
            session.flush()
            session.add(Athlete(name=PROBE, timezone="UTC"))  # the name is unique

    with pytest.raises(IntegrityError):
        clash()
    # PostgreSQL would refuse every later statement of an aborted transaction; the savepoint spares the test's.
    with db.transaction() as session:
        session.add(Athlete(name="after", timezone="UTC"))
    assert seen(db) == (["after", PROBE], ["after", PROBE])


def test_read_still_refuses_to_write_and_writes_work_after_it(any_tx_rt: Runtime) -> None:
    db = any_tx_rt.db
    with db.transaction() as session:
        session.add(Athlete(name=PROBE, timezone="UTC"))
    with pytest.raises(DBAPIError), db.read() as session:
        session.execute(text("UPDATE athletes SET timezone = 'Europe/Berlin'"))
    with db.transaction() as session:
        session.execute(text("UPDATE athletes SET timezone = 'Europe/Paris'"))
    with db.read() as session:
        assert session.scalars(select(Athlete.timezone)).one() == "Europe/Paris"


def test_another_connection_sees_none_of_it(any_tx_rt: Runtime) -> None:
    # Why a test that starts a process or opens its own runtime needs a database of its own (rt, any_rt, pg_url).
    with any_tx_rt.db.transaction() as session:
        session.add(Athlete(name=PROBE, timezone="UTC"))
    outsider = Database(any_tx_rt.db.url)
    try:
        # Only a read: on SQLite the test's open transaction holds the write lock until its end.
        with outsider.read() as session:
            assert list(session.scalars(select(Athlete.name))) == []
    finally:
        outsider.dispose()
    assert seen(any_tx_rt.db) == ([PROBE], [PROBE])
