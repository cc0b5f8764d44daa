"""Readers and writers on the embedded SQLite file: read-only work never waits for the write lock.

Another *process* holds SQLite's write lock (``BEGIN IMMEDIATE``, as a worker storing a batch does) while this
process reads through ``Database.read()``, the web app answers ``/healthz`` and the dashboard, and a writer
(``Database.transaction()``) still queues behind the lock as before.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from channel_settings import channel_settings
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from starlette.testclient import TestClient

from stridecare.db.engine import Database
from stridecare.db.models import Athlete
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app

# Holds the write lock of the database named on the command line until its standard input closes.
_LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE athletes SET timezone = timezone")
print("locked", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""

# "Promptly": far below the 30 s busy timeout a locked reader would wait, and above what a request takes on a
# machine whose two cores are shared with other work.
PROMPT_S = 5.0


@pytest.fixture
def locked(rt: Runtime) -> Iterator[subprocess.Popen[str]]:
    """A second process holding the write lock of ``rt``'s database for the duration of the test."""
    with rt.db.transaction() as s:
        s.add(Athlete(name="anna", timezone="UTC", channel_settings=channel_settings(console=False)))
    path = rt.db.engine.url.database
    assert path
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    try:
        yield holder
    finally:
        if holder.poll() is None:
            holder.communicate("", timeout=30)


def _release(holder: subprocess.Popen[str]) -> None:
    holder.communicate("", timeout=30)
    assert holder.returncode == 0


def test_read_transaction_completes_while_another_process_holds_the_write_lock(
    rt: Runtime, locked: subprocess.Popen[str]
) -> None:
    start = time.perf_counter()
    with rt.db.read() as session:
        names = session.scalars(select(Athlete.name)).all()
        count = session.scalar(select(func.count()).select_from(Athlete))
    assert time.perf_counter() - start < PROMPT_S
    assert names == ["anna"]
    assert count == 1


def test_write_transaction_still_waits_for_the_lock(rt: Runtime, locked: subprocess.Popen[str]) -> None:
    done = threading.Event()

    def write() -> None:
        with rt.db.transaction() as session:
            session.add(Athlete(name="ben", timezone="UTC", channel_settings=channel_settings(console=False)))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    # IMMEDIATE: the writer queues at BEGIN rather than failing half-way through.
    assert not done.wait(0.5)
    _release(locked)
    writer.join(timeout=30)
    assert done.is_set()
    with rt.db.read() as session:
        assert sorted(session.scalars(select(Athlete.name))) == ["anna", "ben"]


def test_web_reads_answer_while_the_worker_holds_the_write_lock(rt: Runtime, locked: subprocess.Popen[str]) -> None:
    with rt.db.read() as session:
        token = session.scalars(select(Athlete.dashboard_token)).one()
    with TestClient(create_app(rt, enqueue=lambda _event_id: None), base_url="http://127.0.0.1:8080") as client:
        start = time.perf_counter()
        health = client.get("/healthz")
        board = client.get("/dashboard/anna", params={"t": token})
        elapsed = time.perf_counter() - start
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert board.status_code == 200
    assert elapsed < 2 * PROMPT_S


def test_read_transaction_refuses_to_write(rt: Runtime) -> None:
    with pytest.raises(DBAPIError), rt.db.read() as session:
        session.execute(text("UPDATE athletes SET timezone = timezone"))


def test_pooled_connection_writes_again_after_serving_a_reader(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'pool.db'}")
    try:
        with db.transaction() as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
        for i in range(3):
            with db.read() as session:
                session.execute(text("SELECT count(*) FROM t")).scalar_one()
            with db.transaction() as session:
                session.execute(text("INSERT INTO t VALUES (:x)"), {"x": i})
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 3
        # Even a caller that bypasses the transaction hooks gets a writable connection from the pool.
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("INSERT INTO t VALUES (99)")
            cursor.close()
        finally:
            raw.close()
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 4
    finally:
        db.dispose()


def test_read_only_on_postgres(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        with db.transaction() as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
        with pytest.raises(DBAPIError, match="read-only"), db.read() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        with db.transaction() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        db.dispose()
