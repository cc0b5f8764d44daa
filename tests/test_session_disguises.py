"""One session counted once when the copies' sport labels disagree, when one copy's clock is off by whole hours,
when a Strava edit moves an activity, and whichever equal copy arrives first."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fake_strava import make_activity
from sqlalchemy import select
from test_more_sources import gpx_xml, track_points
from test_session_identity import START, assert_one_session, fit, ingest, runs_of, store_strava

from ingest.strava.convert import convert_activity
from stridecare.db.models import Prompt, Run
from stridecare.domain.load import DEFAULT_CONSTANTS
from stridecare.domain.run import ParsedRun
from stridecare.runtime import Runtime

FRESH = START + timedelta(hours=1)  # the session just ended: every copy is fresh, so a second prompt would show


def uphill_fit(tmp_path: Path) -> Path:
    """A slow trail run as the watch records it: running/trail, 1.3 m/s uphill, with cadence."""
    return fit(tmp_path / "uphill.fit", duration_s=2400, speed_mps=1.3, cadence_rpm=78, sub_sport="trail")


def uphill_gpx(tmp_path: Path) -> Path:
    """The same session as a GPX without ``<type>``: judged walking by its speed."""
    path = tmp_path / "uphill.gpx"
    path.write_text(gpx_xml([(None, track_points(start=START, duration_s=2400, speed_mps=1.3), None)]))
    return path


def uphill_hike() -> ParsedRun:
    """The same session from Strava, labelled Hike."""
    activity = make_activity(
        99, START, sport_type="Hike", moving_time=2400, elapsed_time=2400, distance=2400 * 1.3, average_cadence=None
    )
    parsed = convert_activity(activity, DEFAULT_CONSTANTS)
    assert isinstance(parsed, ParsedRun)
    return parsed


def prompts(rt: Runtime) -> int:
    with rt.db.read() as s:
        return len(list(s.scalars(select(Prompt).where(Prompt.kind == "post_run"))))


ORDERS = list(itertools.permutations(["fit", "gpx", "strava"]))


@pytest.mark.parametrize("order", ORDERS)
def test_copies_whose_labels_disagree_are_one_session_in_every_order(
    rt: Runtime, tmp_path: Path, order: tuple[str, ...]
) -> None:
    copies_whose_labels_disagree(rt, tmp_path, order)


def test_copies_whose_labels_disagree_are_one_session_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    from conftest import make_settings

    rt = Runtime.open(make_settings(tmp_path, database_url=pg_url))
    try:
        copies_whose_labels_disagree(rt, tmp_path, ORDERS[-1])
    finally:
        rt.close()


def copies_whose_labels_disagree(any_rt: Runtime, tmp_path: Path, order: tuple[str, ...]) -> None:
    arrive: dict[str, Callable[[], None]] = {
        "fit": lambda: ingest(any_rt, uphill_fit(tmp_path), now=FRESH),
        "gpx": lambda: ingest(any_rt, uphill_gpx(tmp_path), now=FRESH),
        "strava": lambda: store_strava(any_rt, uphill_hike(), now=FRESH),
    }
    for name in order:
        arrive[name]()
    sports = {r.source: r.sport for r in runs_of(any_rt)}
    assert sports["gpx"] == "walking" and sports["strava"] == "hiking" and sports["fit"] == "running"
    primary = assert_one_session(any_rt, copies=3)
    assert primary.source == "fit"  # the richest record: its samples decide the gait
    assert prompts(any_rt) == 1


def test_two_sessions_with_different_labels_that_only_touch_stay_two(any_rt: Runtime, tmp_path: Path) -> None:
    ingest(any_rt, uphill_fit(tmp_path), now=FRESH)
    walk = tmp_path / "walk.gpx"  # a walk home right after, of another distance
    points = track_points(start=START + timedelta(seconds=2300), duration_s=1800, speed_mps=1.2)
    walk.write_text(gpx_xml([(None, points, None)]))
    ingest(any_rt, walk, now=FRESH + timedelta(hours=1))
    assert all(r.duplicate_of_id is None for r in runs_of(any_rt))


@pytest.mark.parametrize("hours", [2, -3])
def test_a_copy_written_with_a_clock_off_by_whole_hours_is_the_same_session(
    any_rt: Runtime, tmp_path: Path, hours: int
) -> None:
    ingest(any_rt, fit(tmp_path / "watch.fit"), now=FRESH)
    shifted = fit(tmp_path / "resaved.fit", start=START + timedelta(hours=hours))
    ingest(any_rt, shifted, now=FRESH + timedelta(hours=abs(hours)))
    assert_one_session(any_rt)
    assert prompts(any_rt) == 1


def test_a_run_of_another_length_two_hours_later_is_a_second_session(any_rt: Runtime, tmp_path: Path) -> None:
    ingest(any_rt, fit(tmp_path / "morning.fit"), now=FRESH)
    ingest(any_rt, fit(tmp_path / "later.fit", start=START + timedelta(hours=2), duration_s=1860), now=FRESH)
    assert all(r.duplicate_of_id is None for r in runs_of(any_rt))


def test_the_winner_between_equal_copies_does_not_depend_on_arrival_order(tmp_path: Path) -> None:
    from conftest import make_settings

    winners = []
    for i, order in enumerate([("a", "b"), ("b", "a")]):
        rt = Runtime.open(make_settings(tmp_path / f"rt{i}"))
        files = {"a": fit(tmp_path / f"a{i}.fit"), "b": fit(tmp_path / f"b{i}.fit", speed_mps=3.2004)}
        for name in order:
            ingest(rt, files[name], now=FRESH)
        primary = assert_one_session(rt)
        winners.append((primary.source_key, primary.distance_m))
        rt.close()
    assert winners[0] == winners[1]


def strava_at(start: datetime, activity_id: int = 5) -> ParsedRun:
    activity = make_activity(activity_id, start, moving_time=1800, elapsed_time=1800, distance=1800 * 3.2)
    parsed = convert_activity(activity, DEFAULT_CONSTANTS)
    assert isinstance(parsed, ParsedRun)
    return parsed


def test_a_strava_edit_that_moves_an_activity_onto_a_file_session_links_it(any_rt: Runtime, tmp_path: Path) -> None:
    ingest(any_rt, fit(tmp_path / "watch.fit"), now=FRESH)
    store_strava(any_rt, strava_at(START + timedelta(minutes=40)), now=FRESH)  # the wrong start at first
    assert all(r.duplicate_of_id is None for r in runs_of(any_rt))
    store_strava(any_rt, strava_at(START), now=FRESH)  # the athlete fixes the start on Strava
    assert assert_one_session(any_rt).source == "fit"


def test_a_strava_edit_that_moves_an_activity_away_unlinks_it(any_rt: Runtime, tmp_path: Path) -> None:
    ingest(any_rt, fit(tmp_path / "watch.fit"), now=FRESH)
    store_strava(any_rt, strava_at(START), now=FRESH)
    assert_one_session(any_rt)
    store_strava(any_rt, strava_at(START + timedelta(days=1)), now=FRESH + timedelta(days=1))
    every = runs_of(any_rt)
    assert all(r.duplicate_of_id is None for r in every)
    with any_rt.db.read() as s:
        loads = {r.source: r.load is not None for r in s.scalars(select(Run))}
    assert loads == {"fit": True, "strava": True}  # the moved activity counts again, with a load of its own
