"""Pages that do not grow with history: the dashboard, the run page and the home page read what they show, never
the whole history of an athlete.

Every statement the session runs is counted while a page is rendered, with the rows it hands to Python (the
result is frozen and counted, then handed on unchanged), and every relationship load (a lazy load is one query
per object: the first thing to grow with history). The same page at N and at 4N days of history must run the
same statements and read the same rows when its range holds the same days, with no relationship load at all.
(Timings are in bench/bench_dashboard.py and BENCHMARKS.md.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from history_seed import seed_history
from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session
from webclient import admin, browser

from recommender.dashboard_data import dashboard_data
from stridecare.clock import write_clock_file
from stridecare.db.models import Athlete
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TOKEN = "k" * 32
SHORT, LONG = 120, 480  # days of history: the longer is four times the shorter, both longer than 6 weeks


@dataclass
class Reads:
    """What the session ran while a page was made."""

    statements: list[str] = field(default_factory=list)
    rows: int = 0
    relationship_loads: list[str] = field(default_factory=list)


@contextmanager
def counting() -> Iterator[Reads]:
    """Count every ORM-session statement, the rows it returns and the relationship loads, in any session."""
    reads = Reads()

    def on_execute(state: ORMExecuteState) -> Any:
        if not state.is_select:
            return None
        reads.statements.append(str(state.statement).split("\n", 1)[0])
        if state.is_relationship_load:
            reads.relationship_loads.append(str(state.statement))
        frozen = state.invoke_statement().freeze()
        reads.rows += len(frozen.data)
        return frozen()

    event.listen(Session, "do_orm_execute", on_execute)
    try:
        yield reads
    finally:
        event.remove(Session, "do_orm_execute", on_execute)


def _installation(tmp_path: Path, days: int) -> tuple[Runtime, int]:
    """A SQLite installation of its own with one athlete, ``runner``, of ``days`` days of history; the runtime and
    the newest run's id."""
    home = tmp_path / str(days)
    home.mkdir()
    write_clock_file(home / "clock.txt", NOW)
    rt = Runtime.open(make_settings(home, clock_file=home / "clock.txt"))
    _, newest = seed_history(rt.db.engine, "runner", days, NOW, TOKEN)
    return rt, newest


@pytest.fixture
def short_and_long(tmp_path: Path) -> Iterator[dict[int, tuple[Runtime, int]]]:
    made = {days: _installation(tmp_path, days) for days in (SHORT, LONG)}
    yield made
    for rt, _ in made.values():
        rt.close()


def _page_reads(rt: Runtime, path: str, as_admin: bool = False) -> tuple[Reads, str]:
    app = create_app(rt)
    client = admin(app, rt) if as_admin else browser(app)
    client.get(path)  # the first request warms what is made once (templates, the app's caches)
    with counting() as reads:
        answer = client.get(path)
    assert answer.status_code == 200, answer.text[:300]
    return reads, answer.text


def test_the_default_dashboard_reads_the_same_rows_at_four_times_the_history(
    short_and_long: dict[int, tuple[Runtime, int]],
) -> None:
    (short_rt, _), (long_rt, _) = short_and_long[SHORT], short_and_long[LONG]
    short, _ = _page_reads(short_rt, f"/dashboard/runner?t={TOKEN}")
    long, _ = _page_reads(long_rt, f"/dashboard/runner?t={TOKEN}")
    assert short.relationship_loads == [] and long.relationship_loads == []
    assert long.statements == short.statements
    assert long.rows == short.rows
    # What 6 weeks need, not what the history holds: a row per day and run of the range, and a few more.
    assert long.rows < 8 * 42, long.rows


def test_the_whole_history_range_loads_no_run_one_by_one(short_and_long: dict[int, tuple[Runtime, int]]) -> None:
    (short_rt, _), (long_rt, _) = short_and_long[SHORT], short_and_long[LONG]
    short, _ = _page_reads(short_rt, f"/dashboard/runner?t={TOKEN}&range=all")
    long, _ = _page_reads(long_rt, f"/dashboard/runner?t={TOKEN}&range=all")
    assert short.relationship_loads == [] and long.relationship_loads == []
    # The range is the history here: rows grow with it, statements do not.
    assert long.statements == short.statements


def test_the_run_page_reads_the_same_rows_at_four_times_the_history(
    short_and_long: dict[int, tuple[Runtime, int]],
) -> None:
    (short_rt, short_run), (long_rt, long_run) = short_and_long[SHORT], short_and_long[LONG]
    short, _ = _page_reads(short_rt, f"/dashboard/runner/runs/{short_run}?t={TOKEN}")
    long, page = _page_reads(long_rt, f"/dashboard/runner/runs/{long_run}?t={TOKEN}")
    assert "median of your 28 runs" in page  # the comparison with the four weeks before, read in one query
    assert short.relationship_loads == [] and long.relationship_loads == []
    assert long.statements == short.statements
    assert long.rows == short.rows


def test_the_home_page_reads_the_same_rows_at_four_times_the_history(
    short_and_long: dict[int, tuple[Runtime, int]],
) -> None:
    (short_rt, _), (long_rt, _) = short_and_long[SHORT], short_and_long[LONG]
    short, _ = _page_reads(short_rt, "/", as_admin=True)
    long, _ = _page_reads(long_rt, "/", as_admin=True)
    assert short.relationship_loads == [] and long.relationship_loads == []
    assert long.statements == short.statements
    assert long.rows == short.rows


def test_dashboard_data_reads_alike_on_both_databases(any_rt: Runtime) -> None:
    """Two athletes in one database, one with four times the other's history: the same statements and rows for
    the default range, on SQLite and PostgreSQL (the flagged runs' filter reads JSON text on both)."""
    seed_history(any_rt.db.engine, "short", SHORT, NOW, "a" * 32)
    seed_history(any_rt.db.engine, "long", LONG, NOW, "b" * 32)
    results: dict[str, tuple[Reads, dict[str, Any]]] = {}
    for name in ("short", "long"):
        with any_rt.db.read() as session:
            athlete = session.scalars(select(Athlete).where(Athlete.name == name)).one()
            with counting() as reads:
                data = dashboard_data(session, any_rt.settings, athlete, NOW)
        results[name] = reads, data
    (short, short_data), (long, long_data) = results["short"], results["long"]
    assert short.relationship_loads == [] and long.relationship_loads == []
    assert long.statements == short.statements and long.rows == short.rows
    # Same six weeks of runs: the same sums (the averages differ a little, being weighted over all history),
    # and the same flags and runs; only what counts the whole history (shoes) differs.
    assert short_data["range"] == long_data["range"] == "6w"
    assert short_data["flags"] and len(short_data["flags"]) == len(long_data["flags"])
    for key in ("weeks", "adherence", "totals"):
        assert short_data[key] == long_data[key], key
    sums = ("day", "load", "distance_m", "steps")
    assert [[d[k] for k in sums] for d in short_data["days"]] == [[d[k] for k in sums] for d in long_data["days"]]
    for key in ("load_last_7_days", "load_last_28_days"):
        assert short_data["figures"][key] == long_data["figures"][key] > 0
    assert [r["day"] for r in short_data["recent_runs"]] == [r["day"] for r in long_data["recent_runs"]]
    assert any(r["no_prompt_reason"] for r in long_data["recent_runs"])
    assert long_data["shoes"][0]["runs"] == LONG and short_data["shoes"][0]["runs"] == SHORT
