"""A pair's life: a starting distance counted in every distance and reminder, an in-use-from day before which
the default pair takes no run (a new pair never takes the imported history), one run moved to another pair
(`shoe use RUN PAIR`, copies included), retirement, and the source's gear naming the pair whatever the date."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import parsed_run, store_runs
from sqlalchemy import select
from typer.testing import CliRunner, Result

from stridecare.clock import write_clock_file
from stridecare.db.models import Prompt, Run, Shoe
from stridecare.domain.shoes import PairWindow
from stridecare.runtime import Runtime
from stridecare_app.cli import main as _commands  # noqa: F401  (attaches every command to app)
from stridecare_app.cli.app import app

NOV = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # a Monday
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # the command line's clock (STRIDECARE_CLOCK_FILE)


def invoke(rt: Runtime, *args: str) -> Result:
    env = {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
        "STRIDECARE_INBOXES": json.dumps(rt.settings.inboxes),
        "STRIDECARE_DEFAULT_ATHLETE": "anna",
        "STRIDECARE_CLOCK_FILE": str(clock_file(rt)),
    }
    return CliRunner().invoke(app, list(args), env=env)


def clock_file(rt: Runtime) -> Path:
    path = rt.settings.data_home / "clock"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_clock_file(path, NOW)
    return path


def cli(rt: Runtime, *args: str) -> str:
    result = invoke(rt, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def pairs(rt: Runtime) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(cli(rt, "shoe", "list", "--json"))}


def shoe_of(rt: Runtime, run_id: int) -> str | None:
    with rt.db.read() as s:
        run = s.get(Run, run_id)
        assert run is not None
        return None if run.shoe_id is None else s.get(Shoe, run.shoe_id).name  # type: ignore[union-attr]


def store(rt: Runtime, *runs: Any) -> list[int]:
    last = max(r.start_time for r in runs)
    return store_runs(rt.db, rt.settings, "anna", list(runs), last + timedelta(hours=2), batch=True)


@pytest.fixture
def anna(rt: Runtime) -> Runtime:
    store(rt, parsed_run(datetime(2019, 5, 4, 7, 0, tzinfo=UTC), key="y2019"))  # creates anna, on no pair
    return rt


# -- the window, pure ----------------------------------------------------------------------------------------


def test_window_of_use() -> None:
    start = datetime(2026, 11, 10, 6, 0, tzinfo=UTC)
    day = start.date()
    window = PairWindow(in_use_from=date(2026, 11, 1))
    assert window.takes(start, day)
    assert window.refusal(start, date(2026, 10, 31)) == "the run is before the pair's in-use-from day (2026-11-01)"
    assert window.takes(start, date(2026, 10, 31), named_by_source=True)  # the source names the pair: any date
    retired = PairWindow(in_use_from=date(2026, 11, 1), retired=True, retired_at=start)
    assert retired.takes(start - timedelta(hours=1), day, named_by_source=True)  # before retirement: still its run
    assert retired.refusal(start, day) == "the pair was retired on 2026-11-10"
    assert not PairWindow(retired=True).takes(start, day, named_by_source=True)  # retired, instant unknown: none
    with pytest.raises(ValueError, match="aware"):
        window.takes(start.replace(tzinfo=None), day)


# -- in use from ---------------------------------------------------------------------------------------------


def test_a_new_default_pair_does_not_take_the_imported_history(anna: Runtime) -> None:
    rt = anna
    out = cli(rt, "shoe", "add", "new-pair", "--use")
    today = NOW.date()  # anna lives in UTC
    assert f"in use from {today}" in out
    # Imported later: a 2019 run and one of last month; neither is counted on today's pair. A run today is.
    old, last_month, now_run = store(
        rt,
        parsed_run(datetime(2019, 6, 1, 7, 0, tzinfo=UTC), key="y2019b"),
        parsed_run(NOW - timedelta(days=30), key="month"),
        parsed_run(NOW - timedelta(hours=3), key="today", minutes=30),
    )
    assert [shoe_of(rt, i) for i in (old, last_month, now_run)] == [None, None, "new-pair"]
    row = pairs(rt)["new-pair"]
    assert row["runs"] == 1 and row["in_use_from"] == today.isoformat()


def test_from_date_counts_runs_from_that_day_and_backfills_runs_on_no_pair(anna: Runtime) -> None:
    rt = anna
    before, first_day, later = store(
        rt,
        parsed_run(NOV - timedelta(days=1), key="oct"),
        parsed_run(NOV, key="nov"),
        parsed_run(NOV + timedelta(days=2), key="nov2"),
    )
    out = cli(rt, "shoe", "add", "pegasus", "--from", "2026-11-02", "--use")
    assert "2 runs on no pair since 2026-11-02 now count on pegasus" in out
    [after] = store(rt, parsed_run(NOV + timedelta(days=4), key="nov4"))
    assert [shoe_of(rt, i) for i in (before, first_day, later, after)] == [None, "pegasus", "pegasus", "pegasus"]
    assert pairs(rt)["pegasus"]["runs"] == 3


def test_from_is_the_athletes_local_day(rt: Runtime) -> None:
    # 23:30 UTC on 1 Nov is already 2 Nov in Tokyo: a pair in use from 2 Nov takes it.
    late = datetime(2026, 11, 1, 23, 30, tzinfo=UTC)
    store(rt, parsed_run(late - timedelta(days=40), key="seed"))
    cli(rt, "athlete", "set", "anna", "--timezone", "Asia/Tokyo")
    cli(rt, "shoe", "add", "tokyo-pair", "--from", "2026-11-02", "--use")
    [run_id] = store(rt, parsed_run(late, key="late"))
    assert shoe_of(rt, run_id) == "tokyo-pair"


def test_bad_from_and_start_km_are_refused_clearly(anna: Runtime) -> None:
    bad = invoke(anna, "shoe", "add", "x", "--from", "1/11/2026")
    assert bad.exit_code == 2 and "--from takes a date as YYYY-MM-DD" in bad.output
    negative = invoke(anna, "shoe", "add", "x", "--start-km", "-5")
    assert negative.exit_code == 2 and "--start-km must be between 0 and 10000" in negative.output
    assert "x" not in pairs(anna)


# -- starting distance ---------------------------------------------------------------------------------------


def test_starting_distance_is_in_every_distance_and_in_the_reminder(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "used-pair", "--start-km", "120", "--remind-at-km", "130", "--from", "2026-11-02", "--use")
    assert pairs(rt)["used-pair"]["distance_km"] == 120.0
    # 8.1 km a run: 128.1 km after the first (no reminder), 136.2 km after the second (the reminder, once).
    store(rt, parsed_run(NOV, key="a"))
    with rt.db.read() as s:
        assert s.scalars(select(Prompt).where(Prompt.kind == "shoe")).all() == []
    store(rt, parsed_run(NOV + timedelta(days=1), key="b"))
    row = pairs(rt)["used-pair"]
    assert row["distance_km"] == pytest.approx(120 + 2 * 8.1, abs=0.01)
    assert row["runs_km"] == pytest.approx(16.2, abs=0.01) and row["start_km"] == 120
    with rt.db.read() as s:
        [reminder] = s.scalars(select(Prompt).where(Prompt.kind == "shoe")).all()
    assert "carried you 136 km, 120 km of them before it was added" in reminder.reasons[0]
    assert "120 km before" in cli(rt, "shoe", "list")


# -- one run, another pair --------------------------------------------------------------------------------------


def test_shoe_use_run_pair_moves_one_run_and_use_pair_still_sets_the_default(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "road", "--from", "2026-11-01", "--use")
    cli(rt, "shoe", "add", "trail", "--from", "2026-11-03")
    first, second = store(rt, parsed_run(NOV, key="a"), parsed_run(NOV + timedelta(days=2), key="b"))
    assert shoe_of(rt, second) == "road"

    assert f"run {second} now counts on trail" in cli(rt, "shoe", "use", str(second), "trail")
    assert shoe_of(rt, second) == "trail"
    assert pairs(rt)["trail"]["runs"] == 1 and pairs(rt)["road"]["runs"] == 1
    assert f"run {second} already counts on trail" in cli(rt, "shoe", "use", str(second), "trail")

    # Before the pair's first day: refused, nothing changed.
    refused = invoke(rt, "shoe", "use", str(first), "trail")
    assert refused.exit_code == 2
    assert "cannot count on trail: the run is before the pair's in-use-from day (2026-11-03)" in refused.output
    assert shoe_of(rt, first) == "road"
    # Unknown run, unknown pair, not a number: clear messages.
    assert "no run 99999" in invoke(rt, "shoe", "use", "99999", "trail").output
    assert "has no shoes named 'nope'" in invoke(rt, "shoe", "use", str(first), "nope").output
    assert "RUN is a run id" in invoke(rt, "shoe", "use", "road", "trail").output

    # The one-argument form still names the default pair.
    assert "new runs of anna count on trail" in cli(rt, "shoe", "use", "trail")
    [third] = store(rt, parsed_run(NOV + timedelta(days=4), key="c"))
    assert shoe_of(rt, third) == "trail"


def test_moving_a_copy_moves_the_session_and_it_counts_once(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "road", "--from", "2026-11-01", "--use")
    cli(rt, "shoe", "add", "trail", "--from", "2026-11-01")
    ids = store(rt, parsed_run(NOV, key="fit", source="fit"), parsed_run(NOV, key="strava", source="strava"))
    with rt.db.read() as s:
        runs = {r.id: r for r in s.scalars(select(Run).where(Run.id.in_(ids)))}
        copy = next(r for r in runs.values() if r.duplicate_of_id is not None)
        primary = copy.duplicate_of_id
    out = cli(rt, "shoe", "use", str(copy.id), "trail")
    assert f"a copy of run {primary}" in out
    assert [shoe_of(rt, i) for i in ids] == ["trail", "trail"]
    assert pairs(rt)["trail"]["runs"] == 1 and pairs(rt)["road"]["runs"] == 0


# -- retirement and the source's gear ------------------------------------------------------------------------------


def test_retired_pairs_take_no_new_runs_but_keep_the_ones_named_before(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "trail", "--strava-gear-id", "g777", "--from", "2026-11-01", "--use")
    [kept] = store(rt, parsed_run(NOV, key="a"))
    cli(rt, "shoe", "retire", "trail")
    retired_at = datetime.fromisoformat(pairs(rt)["trail"]["retired_at"])
    new = replace(parsed_run(NOW + timedelta(minutes=1), key="after"), gear_id="g777")
    # A Strava backfill: a 2025 run naming the pair's gear, from before it was added and before retirement.
    old = replace(parsed_run(datetime(2025, 3, 1, 7, 0, tzinfo=UTC), key="2025"), gear_id="g777")
    plain = parsed_run(NOW + timedelta(hours=2), key="plain")
    after, backfilled, no_gear = store(rt, new, old, plain)
    assert retired_at == NOW
    assert [shoe_of(rt, i) for i in (kept, after, backfilled, no_gear)] == ["trail", None, "trail", None]
    refused = invoke(rt, "shoe", "use", str(after), "trail")
    assert refused.exit_code == 2 and "the pair was retired on" in refused.output
    assert "is retired" in invoke(rt, "shoe", "use", "trail").output
    row = pairs(rt)["trail"]
    assert row["retired"] is True and row["default"] is False and row["runs"] == 2


def test_gear_of_an_unmapped_id_falls_back_to_the_default_within_its_window(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "road", "--from", "2026-11-01", "--use")
    inside = replace(parsed_run(NOV, key="in"), gear_id="g999")
    outside = replace(parsed_run(NOV - timedelta(days=5), key="out"), gear_id="g999")
    a, b = store(rt, inside, outside)
    assert [shoe_of(rt, a), shoe_of(rt, b)] == ["road", None]


@pytest.mark.parametrize("strava_first", [True, False])
def test_the_pair_a_source_names_holds_for_the_whole_session_in_either_order(anna: Runtime, strava_first: bool) -> None:
    """A watch's FIT file names no shoes; Strava's copy of the same session names its gear: the session counts
    on that pair, whichever arrives first and whichever copy is the primary."""
    rt = anna
    cli(rt, "shoe", "add", "road", "--from", "2026-11-01", "--use")
    cli(rt, "shoe", "add", "trail", "--strava-gear-id", "g777")
    fit = parsed_run(NOV, key="fit", source="fit")
    strava = replace(parsed_run(NOV, key="strava", source="strava", with_samples=False), gear_id="g777")
    first, second = (strava, fit) if strava_first else (fit, strava)
    [a] = store(rt, first)
    [b] = store(rt, second)
    assert [shoe_of(rt, a), shoe_of(rt, b)] == ["trail", "trail"]
    assert pairs(rt)["trail"]["runs"] == 1 and pairs(rt)["road"]["runs"] == 0


def test_a_copy_arriving_after_a_move_by_hand_keeps_the_sessions_pair(anna: Runtime) -> None:
    rt = anna
    cli(rt, "shoe", "add", "road", "--from", "2026-11-01", "--use")
    cli(rt, "shoe", "add", "race", "--from", "2026-11-01")
    [summary] = store(rt, parsed_run(NOV, key="strava", source="strava", with_samples=False))
    cli(rt, "shoe", "use", str(summary), "race")
    [richer] = store(rt, parsed_run(NOV, key="fit", source="fit"))  # richer: becomes the primary
    with rt.db.read() as s:
        old = s.get(Run, summary)
        assert old is not None and old.duplicate_of_id == richer
    assert [shoe_of(rt, summary), shoe_of(rt, richer)] == ["race", "race"]
    assert pairs(rt)["race"]["runs"] == 1
