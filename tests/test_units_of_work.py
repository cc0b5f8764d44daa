"""Two units of work and no third: ``Database.transaction()`` for work that writes, ``Database.read()`` for work
that only reads. A plain session (the former ``db.sessions()``) took SQLite's write lock where its callers
meant to read."""

from __future__ import annotations

import ast
import threading

from conftest import ROOT
from sqlalchemy import select

from stridecare.db.engine import Database
from stridecare.db.models import Athlete
from stridecare.runtime import Runtime

PACKAGES = ("stridecare", "stridecare_app", "ingest", "workers", "recommender", "delivery")


def test_the_database_offers_transaction_and_read_only(any_tx_rt: Runtime) -> None:
    db = any_tx_rt.db
    public = {name for name in vars(db) if not name.startswith("_")} | {
        name for name in vars(Database) if not name.startswith("_")
    }
    assert public == {"url", "engine", "read_engine", "bound_to", "transaction", "read", "dispose"}


def test_no_product_code_opens_a_bare_session() -> None:
    calls = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("sessions", "read_sessions")
                ):
                    calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not calls, "use db.read() to read and db.transaction() to write:\n" + "\n".join(calls)


def test_what_a_read_loaded_stays_readable_and_changes_nothing(any_tx_rt: Runtime) -> None:
    db = any_tx_rt.db
    with db.transaction() as session:
        session.add(Athlete(name="ada", timezone="Europe/Berlin"))
    with db.read() as session:
        athlete = session.scalars(select(Athlete).where(Athlete.name == "ada")).one()
    # Returned from the block: detached, with what was loaded still there.
    assert (athlete.name, athlete.timezone) == ("ada", "Europe/Berlin")
    athlete.timezone = "UTC"
    with db.read() as session:
        assert session.scalars(select(Athlete.timezone).where(Athlete.name == "ada")).one() == "Europe/Berlin"


def test_a_read_on_sqlite_does_not_wait_for_a_writer(rt: Runtime) -> None:
    # A write transaction holds SQLite's one write lock in another thread; a read goes through meanwhile.
    db = rt.db
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with db.transaction() as session:
            session.add(Athlete(name="writer", timezone="UTC"))
            session.flush()
            holding.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        with db.read() as session:
            assert session.scalars(select(Athlete.name).where(Athlete.name == "writer")).all() == []
    finally:
        release.set()
        thread.join(timeout=30)
    with db.read() as session:
        assert session.scalars(select(Athlete.name).where(Athlete.name == "writer")).one() == "writer"
