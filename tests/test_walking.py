"""Walking in the foot-load model (version 2): gait per sample, the walking force, steps by gait.

The two checks of the model's walking section, the worked example unchanged, and walking and running steps
stored apart on a run's load.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ingest.strava.sync import store_parsed
from recommender.planner import replan
from stridecare.db.athletes import ensure_athlete
from stridecare.db.models import Run
from stridecare.domain.load import (
    MODEL_VERSION,
    gait_of,
    run_load_from_samples,
    run_load_from_summary,
    walking_force_bw,
)
from stridecare.domain.run import CadenceSource, ParsedRun, Samples
from stridecare.runtime import Runtime

START = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)


def stream(*segments: tuple[float, float, float | None]) -> Samples:
    """One-second samples of consecutive ``(seconds, speed m/s, steps/min or None)`` segments."""
    t: list[float] = []
    d: list[float | None] = []
    v: list[float | None] = []
    c: list[float | None] = []
    now = dist = 0.0
    for seconds, speed, cadence in segments:
        for _ in range(round(seconds)):
            now += 1.0
            dist += speed
            t.append(now)
            d.append(dist)
            v.append(speed)
            c.append(cadence)
    n = len(t)
    return Samples(t, d, v, c, [None] * n, [True] * n)


def test_model_version_is_2() -> None:
    assert MODEL_VERSION == 2


@pytest.mark.parametrize(
    ("cadence", "speed", "gait"),
    [(110.0, 1.4, "walking"), (139.0, 2.5, "walking"), (140.0, 1.4, "running"), (170.0, 3.3, "running")],
)
def test_gait_from_cadence_when_there_is_one(cadence: float, speed: float, gait: str) -> None:
    assert gait_of(cadence, speed) == gait


@pytest.mark.parametrize(("speed", "gait"), [(1.4, "walking"), (1.89, "walking"), (1.9, "running"), (3.0, "running")])
def test_gait_from_speed_without_cadence(speed: float, gait: str) -> None:
    assert gait_of(None, speed) == gait


def test_walking_force_is_1_2_bw_at_1_5_mps_and_clamped() -> None:
    assert walking_force_bw(1.5) == pytest.approx(1.2)
    assert walking_force_bw(0.0) == pytest.approx(1.05)
    assert walking_force_bw(-1.0) == pytest.approx(1.05)
    assert walking_force_bw(6.0) == pytest.approx(1.5)  # clamped: 1.05 + 0.6 would be 1.65


def test_check8a_a_5_km_walk_is_under_10_percent_of_a_5_km_run() -> None:
    walk = run_load_from_samples(stream((5000 / 1.4, 1.4, 110.0)))
    run = run_load_from_samples(stream((5000 / 3.3, 3.3, 170.0)))
    assert walk.distance_m == pytest.approx(5000, abs=2)
    assert run.distance_m == pytest.approx(5000, abs=4)
    assert walk.load < 0.10 * run.load
    # Independently: 110 spm × 3571 s at 1.19 BW against 170 spm × 1515 s at (π/2)(1.27 + 0.105·3.3) BW.
    walk_expected = 110 * (5000 / 1.4) / 60 * (1.19 / 2.5) ** 4
    run_expected = 170 * (5000 / 3.3) / 60 * (math.pi / 2 * (1.27 + 0.105 * 3.3) / 2.5) ** 4
    assert walk.load == pytest.approx(walk_expected, rel=0.003)
    assert run.load == pytest.approx(run_expected, rel=0.003)
    assert walk.walking_steps == pytest.approx(walk.steps) and walk.running_steps == 0
    assert run.running_steps == pytest.approx(run.steps) and run.walking_steps == 0


def test_check8b_walk_breaks_are_walking_load_within_2_percent() -> None:
    # 50 min in all, 10 % of it (5 one-minute breaks) walked at 1.4 m/s and 110 spm.
    running = (540.0, 3.333, 170.0)
    walk = (60.0, 1.4, 110.0)
    with_breaks = run_load_from_samples(stream(*[running, walk] * 5))
    without_breaks = run_load_from_samples(stream((2700.0, 3.333, 170.0)))
    breaks_alone = run_load_from_samples(stream((300.0, 1.4, 110.0)))
    assert with_breaks.load == pytest.approx(without_breaks.load + breaks_alone.load, rel=0.02)
    assert with_breaks.walking_steps == pytest.approx(110 * 300 / 60)
    assert with_breaks.running_steps == pytest.approx(170 * 2700 / 60)
    assert with_breaks.steps == pytest.approx(with_breaks.walking_steps + with_breaks.running_steps)
    # Under version 1 every break step had the running force (about 1.9 BW at 1.4 m/s): far more load.
    v1_break_load = 110 * 300 / 60 * (math.pi / 2 * (1.27 + 0.105 * 1.4) / 2.5) ** 4
    assert with_breaks.load < without_breaks.load + v1_break_load / 2


def test_worked_example_is_unchanged_by_walking() -> None:
    r = run_load_from_samples(stream((3000.0, 10_000 / 3000, 170.0)))
    assert r.steps == pytest.approx(8500, rel=0.005)
    assert r.load == pytest.approx(9124, rel=0.005)
    assert r.walking_steps == 0


def test_a_walk_without_cadence_is_walked_by_its_speed() -> None:
    hike = run_load_from_samples(stream((3600.0, 1.2, None)))
    assert hike.cadence_estimated
    assert hike.walking_steps == pytest.approx(hike.steps) and hike.steps > 0
    assert hike.peak_force_bw == pytest.approx(walking_force_bw(1.2))


def test_a_summary_only_walk_is_one_gait() -> None:
    walk = run_load_from_summary(distance_m=5000, timer_s=3600, avg_cadence_spm=112.0)
    assert walk.walking_steps == pytest.approx(112 * 60) and walk.running_steps == 0
    run = run_load_from_summary(distance_m=10_000, timer_s=3000, avg_cadence_spm=170.0)
    assert run.running_steps == pytest.approx(8500) and run.walking_steps == 0


def test_walk_breaks_do_not_move_the_runs_own_cadence_baseline() -> None:
    # Half the time walking: the median over all samples would sit between the gaits.
    r = run_load_from_samples(stream((1200.0, 3.3, 170.0), (1300.0, 1.4, 110.0)))
    assert r.cadence_base_spm == 170.0


def _parsed(samples: Samples) -> ParsedRun:
    return ParsedRun(
        source="strava",
        source_key="42",
        sport="running",
        sub_sport=None,
        start_time=START,
        utc_offset_s=0,
        elapsed_s=samples.t[-1],
        timer_s=samples.t[-1],
        distance_m=samples.distance_m[-1] or 0.0,
        ascent_m=None,
        descent_m=None,
        steps=170 * 2700 / 60 + 110 * 300 / 60,
        avg_cadence_spm=164.0,
        cadence_source=CadenceSource.STREAM,
        samples=samples,
    )


def test_walking_and_running_steps_are_stored_on_the_runs_load(tx_rt: Runtime) -> None:
    samples = stream(*[(540.0, 3.333, 170.0), (60.0, 1.4, 110.0)] * 5)
    with tx_rt.db.transaction() as session:
        athlete = ensure_athlete(session, "me", tx_rt.settings)
        store_parsed(session, athlete, [_parsed(samples)])
        athlete_id = athlete.id
    replan(tx_rt.db, tx_rt.settings, athlete_id, START + timedelta(days=1))
    with tx_rt.db.transaction() as session:
        run = session.scalar(select(Run).where(Run.source_key == "42"))
        assert run is not None and run.load is not None
        assert run.load.model_version == 2
        assert run.load.walking_steps == pytest.approx(550.0)
        assert run.load.running_steps == pytest.approx(7650.0)
        assert run.load.walking_steps + run.load.running_steps == pytest.approx(run.steps)
