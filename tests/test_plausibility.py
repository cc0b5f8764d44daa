"""Physically impossible sessions are rejected with a plain reason and never stored; stored loads stay bounded."""

from __future__ import annotations

import dataclasses
import itertools
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from factories import ingest_planned
from fitgen import write_activity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ingest.fit import FitSource
from ingest.strava.sync import store_parsed
from recommender.planner import replan
from stridecare.db.athletes import ensure_athlete
from stridecare.db.models import ImportedFile, Run, RunLoad
from stridecare.domain.load import run_load
from stridecare.domain.plausibility import (
    DEFAULT_BOUNDS,
    PlausibilityBounds,
    first_implausibility,
    implausibility,
    worst_case_load,
)
from stridecare.domain.run import CadenceSource, ParsedRun, Samples
from stridecare.domain.steps import timed_seconds
from stridecare.runtime import Runtime

START = datetime(2026, 4, 6, 6, 0, tzinfo=UTC)
NOW = START + timedelta(days=60)


def samples(*segments: tuple[float, float, float | None], step_s: float = 1.0) -> Samples:
    """Samples every ``step_s`` seconds of consecutive ``(seconds, speed m/s, steps/min or None)`` segments."""
    t: list[float] = []
    d: list[float | None] = []
    v: list[float | None] = []
    c: list[float | None] = []
    now = dist = 0.0
    for seconds, speed, cadence in segments:
        for _ in range(max(1, round(seconds / step_s))):
            now += step_s
            dist += speed * step_s
            t.append(now)
            d.append(dist)
            v.append(speed)
            c.append(cadence)
    n = len(t)
    return Samples(t, d, v, c, [None] * n, [True] * n)


def session(s: Samples, key: str = "1", **changes: object) -> ParsedRun:
    timed = timed_seconds(s)
    distance = next((x for x in reversed(s.distance_m) if x is not None), 0.0)
    cadences = [x for x in s.cadence_spm if x is not None]
    base = ParsedRun(
        source="strava",
        source_key=key,
        sport="running",
        sub_sport=None,
        start_time=START,
        utc_offset_s=0,
        elapsed_s=s.t[-1] if len(s) else 0.0,
        timer_s=timed,
        distance_m=distance,
        ascent_m=None,
        descent_m=None,
        steps=sum((x or 0.0) for x in s.cadence_spm) / 60.0,
        avg_cadence_spm=sum(cadences) / len(cadences) if cadences else None,
        cadence_source=CadenceSource.STREAM if cadences else CadenceSource.ESTIMATED,
        samples=s,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


EASY = samples((3000.0, 10_000 / 3000, 170.0))


def count(rt: Runtime, model: type) -> int:
    with rt.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


# -- the bounds one by one ------------------------------------------------------------------------------------


def test_a_real_run_walk_and_sprint_are_plausible() -> None:
    assert implausibility(session(EASY)) is None
    assert implausibility(session(samples((3600.0, 1.4, 110.0)))) is None
    assert implausibility(session(samples((12.0, 10.4, 260.0)))) is None  # 100 m at record pace
    assert implausibility(session(samples((3600.0, 2.0, None)))) is None
    # A 24-hour race, and a single GPS jump of 500 m inside a run.
    assert implausibility(session(samples((86_400.0, 2.3, 160.0), step_s=5.0))) is None
    jump = samples((1500.0, 3.3, 170.0), (1.0, 500.0, 170.0), (1500.0, 3.3, 170.0))
    assert implausibility(session(jump)) is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"timer_s": 49 * 3600.0}, "timer time 49.0 h is over the 48.0 h limit"),
        ({"elapsed_s": 48 * 86_400.0}, "elapsed time 1152.0 h"),
        ({"distance_m": math.nan}, "distance is not a finite number"),
        ({"steps": math.inf}, "steps is not a finite number"),
        ({"distance_m": -5.0}, "distance is negative"),
        ({"distance_m": 200_000.0}, "average speed 66.7 m/s is over 12 m/s"),
        ({"steps": 2_000_000.0}, "steps/min, over 260"),
        ({"avg_cadence_spm": 400.0}, "average cadence 400 steps/min is over 260"),
    ],
)
def test_a_summary_outside_the_bounds_is_implausible(changes: dict[str, object], words: str) -> None:
    reason = implausibility(session(EASY, **changes))
    assert reason is not None and words in reason, reason


def test_speed_sustained_over_five_minutes_is_implausible_though_the_average_is_not() -> None:
    # Ten minutes at 15 m/s (a car) inside three hours of running: the average is 3.9 m/s.
    car = session(samples((5000.0, 3.0, 170.0), (600.0, 15.0, 170.0), (5000.0, 3.0, 170.0)))
    assert car.distance_m / car.timer_s < 12
    reason = implausibility(car)
    assert reason is not None and "speed 15.0 m/s sustained over 5 min" in reason


def test_cadence_sustained_over_a_minute_is_implausible_a_single_glitch_is_not() -> None:
    glitch = session(samples((1500.0, 3.3, 170.0), (1.0, 3.3, 510.0), (1500.0, 3.3, 170.0)))
    assert implausibility(glitch) is None
    sustained = session(samples((1500.0, 3.3, 170.0), (120.0, 3.3, 300.0), (1500.0, 3.3, 170.0)))
    reason = implausibility(sustained)
    assert reason is not None and "cadence 300 steps/min sustained over 60 s" in reason


def test_an_infinite_sample_is_implausible() -> None:
    s = samples((600.0, 3.3, 170.0))
    broken = dataclasses.replace(s, speed_mps=[*s.speed_mps[:-1], math.inf])
    reason = implausibility(session(broken))
    assert reason is not None and "speed is infinite" in reason


def test_the_load_bounds_reject_what_the_model_makes_of_the_session() -> None:
    tight = PlausibilityBounds(max_load_per_minute=100.0)
    reason = implausibility(session(EASY), bounds=tight)
    assert reason is not None and "reference steps per minute is over 100" in reason
    per_km = PlausibilityBounds(max_load_per_km=500.0)
    reason = implausibility(session(EASY), bounds=per_km)
    assert reason is not None and "reference steps per km is over 500" in reason


def unclamped_load(steps: float, speed: float) -> float:
    """The running formula with no limit on speed: what a glitch made of a run before."""
    return steps * (math.pi / 2 * (1.27 + 0.105 * speed) / 2.5) ** 4


def test_an_absurd_speed_is_rejected_and_could_not_make_an_absurd_load_anyway() -> None:
    absurd = session(samples((60.0, 3.2e5, 170.0)))
    assert unclamped_load(170.0, 3.2e5) > 1e18
    # The model limits the speed a step's force is computed at to 12 m/s.
    assert run_load(absurd).load < 170 * 10
    reason = implausibility(absurd)
    assert reason is not None and "m/s" in reason


def test_first_implausibility_names_the_session() -> None:
    good, bad = session(EASY), session(EASY, key="2", timer_s=50 * 3600.0, start_time=START + timedelta(hours=1))
    assert first_implausibility([good]) is None
    reason = first_implausibility([good, bad])
    assert reason is not None and "2026-04-06T07:00:00+00:00" in reason


# -- wired where sessions are stored ---------------------------------------------------------------------------


def test_a_crafted_48_day_fit_file_is_rejected_with_a_reason_and_nothing_stored(tx_rt: Runtime, tmp_path: Path) -> None:
    # A valid file whose timer ran for 48 days, one record an hour at 85 strides/min: 11.75 M "steps".
    path = tmp_path / "48days.fit"
    write_activity(path, start=START, duration_s=48 * 86_400, sample_interval_s=3600, speed_mps=3.0, cadence_rpm=85)
    (decoded,) = FitSource().decode(path, "h").runs
    assert decoded.steps == pytest.approx(11_750_400, rel=0.01)

    report = ingest_planned(tx_rt.db, tx_rt.settings, "me", path, NOW)

    assert report.status == "rejected"
    assert report.reason is not None and "implausible session: timer time 1152.0 h" in report.reason
    assert (count(tx_rt, Run), count(tx_rt, RunLoad)) == (0, 0)
    with tx_rt.db.transaction() as s:
        imported = s.scalar(select(ImportedFile))
        assert imported is not None and imported.status == "rejected" and imported.reason == report.reason
    # Seen once, rejected once: importing it again does not store it either.
    assert ingest_planned(tx_rt.db, tx_rt.settings, "me", path, NOW).status == "duplicate"
    assert count(tx_rt, Run) == 0


def test_a_fit_file_that_would_load_1e21_is_rejected_and_nothing_stored(tx_rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "absurd.fit"
    write_activity(path, start=START, duration_s=30, speed_mps=1.0e6, cadence_rpm=85)
    (decoded,) = FitSource().decode(path, "h").runs
    assert unclamped_load(decoded.steps, decoded.distance_m / decoded.timer_s) > 1e20

    report = ingest_planned(tx_rt.db, tx_rt.settings, "me", path, NOW)

    assert report.status == "rejected"
    assert report.reason is not None and "over 12 m/s" in report.reason
    assert (count(tx_rt, Run), count(tx_rt, RunLoad)) == (0, 0)


def test_an_implausible_strava_activity_is_not_stored_and_the_rest_are(tx_rt: Runtime) -> None:
    good = session(EASY, key="100")
    bad = session(EASY, key="101", elapsed_s=48 * 86_400.0, start_time=START + timedelta(days=1))
    with tx_rt.db.transaction() as s:
        athlete = ensure_athlete(s, "me", tx_rt.settings)
        stored = store_parsed(s, athlete, [good, bad]).runs
    assert [r.source_key for r in stored] == ["100"]
    assert count(tx_rt, Run) == 1


# -- property: whatever a source hands over, what is stored is finite and bounded ----------------------------


@st.composite
def sessions(draw: st.DrawFn) -> ParsedRun:
    """A session as a damaged or crafted file might give it: segments of any speed, cadence and length (up to
    a week, up to 1,000 samples each), paused or not, and a summary that may disagree with the samples."""
    t: list[float] = []
    d: list[float | None] = []
    v: list[float | None] = []
    c: list[float | None] = []
    running: list[bool] = []
    now = dist = 0.0
    for _ in range(draw(st.integers(1, 4))):
        seconds = draw(st.floats(1.0, 7 * 86_400.0))
        speed = draw(st.one_of(st.floats(0.0, 20.0), st.floats(0.0, 1e7)))
        cadence = draw(st.one_of(st.none(), st.floats(0.0, 300.0), st.floats(0.0, 1e6)))
        timer = draw(st.booleans())
        n = draw(st.integers(1, 1000))
        for _ in range(n):
            now += seconds / n
            dist += speed * seconds / n
            t.append(now)
            d.append(dist)
            v.append(speed)
            c.append(cadence)
            running.append(timer)
    run = session(Samples(t, d, v, c, [None] * len(t), running))
    return dataclasses.replace(
        run,
        timer_s=draw(st.one_of(st.just(run.timer_s), st.floats(0.0, 1e9))),
        distance_m=draw(st.one_of(st.just(run.distance_m), st.floats(0.0, 1e9))),
        steps=draw(st.one_of(st.just(run.steps), st.floats(0.0, 1e9))),
    )


def _assert_bounded(load: float, stimulus: float, downhill: float, run: ParsedRun) -> None:
    assert all(math.isfinite(x) for x in (load, stimulus, downhill))
    timer = max(run.timer_s, timed_seconds(run.samples))
    assert load == 0 or timer > 0
    if timer > 0:
        assert load * 60 / timer <= DEFAULT_BOUNDS.max_load_per_minute
    if run.distance_m >= DEFAULT_BOUNDS.min_distance_for_load_per_km_m:
        assert load * 1000 / run.distance_m <= DEFAULT_BOUNDS.max_load_per_km


@settings(max_examples=300, deadline=None)
@given(sessions())
def test_property_a_plausible_session_has_a_finite_bounded_load(run: ParsedRun) -> None:
    if implausibility(run) is None:
        worst, _ = worst_case_load(run)
        result = run_load(run)
        assert result.load <= worst * (1 + 1e-9)
        _assert_bounded(worst, result.stimulus_sum, result.downhill_impact, run)


_keys = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sessions())
def test_property_every_stored_load_is_finite_and_within_the_bounds(tx_rt: Runtime, run: ParsedRun) -> None:
    # One database for all examples, a new athlete for each: every stored run is judged on its own.
    n = next(_keys)
    run = dataclasses.replace(run, source_key=f"p{n}")
    with tx_rt.db.transaction() as s:
        athlete = ensure_athlete(s, f"athlete-{n}", tx_rt.settings)
        store_parsed(s, athlete, [run])
        athlete_id = athlete.id
    replan(tx_rt.db, tx_rt.settings, athlete_id, NOW)
    with tx_rt.db.transaction() as s:
        stored = s.scalar(select(Run).where(Run.athlete_id == athlete_id))
        if stored is None:
            assert implausibility(run) is not None
            return
        assert stored.load is not None
        load = stored.load
        _assert_bounded(load.load, load.stimulus_sum, load.downhill_impact, run)
        assert math.isfinite(load.walking_steps) and math.isfinite(load.running_steps)
