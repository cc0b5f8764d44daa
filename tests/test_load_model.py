"""The checks of docs/foot-load-model.md section 7, one test (or group) per check, plus the load over time.

Check 1 (stream steps within 3 % of the device's ``total_strides`` on the real-file corpus) needs
``../shared/corpus`` and the FIT decoder; it lives with the ingest tests, not here.

Expected values come from the design's formulas and worked example, not from this code's output.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, timedelta

import pytest

from stridecare.domain.history import (
    DayTotals,
    EwmaState,
    RunSummary,
    Seeding,
    daily_series,
    daily_totals,
    ewma_lambda,
    local_day,
    recompute_from,
    weekly_volume,
)
from stridecare.domain.load import (
    DEFAULT_CONSTANTS,
    RunLoadResult,
    downhill_weight,
    load_constants_from_settings,
    run_load_from_samples,
    run_load_from_summary,
    step_force_bw,
)
from stridecare.domain.run import Samples
from stridecare.domain.steps import normalise_cadence

# The worked example: 10 km at 5:00/km, 170 spm, timer 3000 s, 70 kg.
EX_DISTANCE = 10_000.0
EX_TIMER = 3000.0
EX_SPEED = EX_DISTANCE / EX_TIMER
EX_CADENCE = 170.0


def steady_samples(
    seconds: int,
    speed: float,
    cadence: float | None,
    *,
    grade: float = 0.0,
    step_s: float = 1.0,
    with_speed: bool = True,
) -> Samples:
    """A run at constant speed and cadence, one sample per ``step_s`` seconds from t = 0."""
    n = int(seconds / step_s) + 1
    t = [i * step_s for i in range(n)]
    d = [speed * x for x in t]
    return Samples(
        t=t,
        distance_m=list[float | None](d),
        speed_mps=[speed if with_speed else None] * n,
        cadence_spm=[cadence] * n,
        altitude_m=[100.0 + grade * x for x in d],
        timer_running=[True] * n,
    )


def concat(*parts: Samples) -> Samples:
    """Samples of consecutive segments (each starting at t = 0, distance 0), joined end to end."""
    t: list[float] = []
    d: list[float | None] = []
    v: list[float | None] = []
    c: list[float | None] = []
    a: list[float | None] = []
    r: list[bool] = []
    t0 = d0 = 0.0
    for p in parts:
        start = 1 if t else 0  # the segment's t = 0 sample is the previous segment's last
        for i in range(start, len(p)):
            t.append(t0 + p.t[i])
            dist = p.distance_m[i]
            d.append(None if dist is None else d0 + dist)
            v.append(p.speed_mps[i])
            c.append(p.cadence_spm[i])
            a.append(p.altitude_m[i])
            r.append(p.timer_running[i])
        t0 = t[-1]
        d0 = d[-1] or 0.0
    return Samples(t, d, v, c, a, r)


def lap(samples: Samples, first: int, last: int) -> Samples:
    """Samples ``first..last`` as a lap of their own: time and distance start where the previous lap ended."""
    t0 = samples.t[first - 1] if first > 0 else 0.0
    d_prev = samples.distance_m[first - 1] if first > 0 else 0.0
    d0 = d_prev or 0.0
    sl = slice(first, last + 1)
    return Samples(
        t=[x - t0 for x in samples.t[sl]],
        distance_m=[None if x is None else x - d0 for x in samples.distance_m[sl]],
        speed_mps=samples.speed_mps[sl],
        cadence_spm=samples.cadence_spm[sl],
        altitude_m=samples.altitude_m[sl],
        timer_running=samples.timer_running[sl],
    )


def expected_load(steps: float, speed: float, cadence_ratio: float = 1.0) -> float:
    """The design's formula written out independently of the code."""
    force = math.pi / 2 * (1.27 + 0.105 * speed) * cadence_ratio ** (-0.4)
    return float(steps * (force / 2.5) ** 4)


# -- check 2 -----------------------------------------------------------------------------------------------


def test_check2_stream_at_170_rpm_is_steps_per_minute_not_doubled() -> None:
    spm, doubled = normalise_cadence([170.0] * 600)
    assert doubled is False
    assert spm == [170.0] * 600
    # The ordinary unit (strides/min) is doubled, so the rule really distinguishes the two.
    spm85, doubled85 = normalise_cadence([85.0] * 600)
    assert doubled85 is True
    assert spm85 == [170.0] * 600
    # And the load counts 170 steps/min from such a stream, not 340.
    result = run_load_from_samples(steady_samples(600, 3.0, spm[0]))
    assert result.steps == pytest.approx(170.0 * 600 / 60)


# -- check 3 -----------------------------------------------------------------------------------------------


def varied_run() -> Samples:
    return concat(
        steady_samples(600, 2.8, 164.0),
        steady_samples(300, 4.2, 182.0, grade=-0.04),
        steady_samples(900, 3.3, 172.0, grade=0.03),
        steady_samples(420, 3.6, 176.0, step_s=3.0),
    )


def test_check3_splitting_into_laps_gives_the_same_load() -> None:
    run = varied_run()
    whole = run_load_from_samples(run, cadence_base_spm=172.0)
    bounds = [(0, 500), (501, 1200), (1201, len(run) - 1)]
    laps = [run_load_from_samples(lap(run, a, b), cadence_base_spm=172.0) for a, b in bounds]
    assert sum(x.load for x in laps) == pytest.approx(whole.load, rel=1e-9)
    assert sum(x.steps for x in laps) == pytest.approx(whole.steps, rel=1e-9)
    assert sum(x.stimulus_sum for x in laps) == pytest.approx(whole.stimulus_sum, rel=1e-9)
    # Different paces really were in play: the laps differ from each other.
    assert len({round(x.load / x.steps, 6) for x in laps}) == 3


def test_check3_doubling_the_distance_doubles_the_load() -> None:
    single = run_load_from_samples(steady_samples(1800, 3.2, 168.0), cadence_base_spm=168.0)
    double = run_load_from_samples(steady_samples(3600, 3.2, 168.0), cadence_base_spm=168.0)
    assert double.distance_m == pytest.approx(2 * single.distance_m)
    assert double.load == pytest.approx(2 * single.load, rel=1e-9)
    summary1 = run_load_from_summary(distance_m=5000, timer_s=1500, avg_cadence_spm=170)
    summary2 = run_load_from_summary(distance_m=10000, timer_s=3000, avg_cadence_spm=170)
    assert summary2.load == pytest.approx(2 * summary1.load, rel=1e-12)


def test_check3_load_grows_with_distance() -> None:
    loads = [run_load_from_samples(steady_samples(s, 3.0, 170.0)).load for s in (300, 900, 1800, 3600, 7200)]
    assert all(a < b for a, b in itertools.pairwise(loads))


# -- check 4 -----------------------------------------------------------------------------------------------


def test_check4_load_and_acwr_do_not_depend_on_body_mass() -> None:
    start = datetime(2025, 1, 1, 7, tzinfo=UTC)
    series = {}
    for mass in (50.0, 95.0):
        runs = []
        for i in range(40):
            r = run_load_from_summary(
                distance_m=6000 + 250 * (i % 5),
                timer_s=1800 + 60 * (i % 3),
                avg_cadence_spm=168,
                mass_kg=mass,
            )
            runs.append(RunSummary(start + timedelta(days=i * 1.5), r.load, r.distance_m, r.running_time_s))
        series[mass] = daily_series(runs, "Europe/Berlin")
    light, heavy = series[50.0], series[95.0]
    assert [r.load for r in light] == [r.load for r in heavy]
    assert [r.acwr for r in light] == [r.acwr for r in heavy]
    assert any(r.acwr is not None for r in light)


def test_check4_newtons_scale_with_mass() -> None:
    r50 = run_load_from_summary(distance_m=EX_DISTANCE, timer_s=EX_TIMER, avg_cadence_spm=170, mass_kg=50)
    r100 = run_load_from_summary(distance_m=EX_DISTANCE, timer_s=EX_TIMER, avg_cadence_spm=170, mass_kg=100)
    assert r100.peak_force_n == pytest.approx(2 * r50.peak_force_n)
    assert r50.peak_force_n == pytest.approx(r50.peak_force_bw * 50 * 9.81)
    assert r50.peak_force_bw == r100.peak_force_bw


# -- check 5 -----------------------------------------------------------------------------------------------


def constant_runs(days: int, load: float = 9124.0) -> list[RunSummary]:
    start = datetime(2025, 3, 1, 6, 30, tzinfo=UTC)
    return [RunSummary(start + timedelta(days=i), load) for i in range(days)]


def test_check5_acwr_is_exactly_one_when_seeded_with_the_first_day() -> None:
    rows = daily_series(constant_runs(150), "UTC", seeding=Seeding.FIRST_DAY)
    assert all(r.acute == pytest.approx(9124.0, rel=1e-12) for r in rows)
    assert all(r.chronic == pytest.approx(9124.0, rel=1e-12) for r in rows)
    shown = [r.acwr for r in rows if r.acwr is not None]
    assert len(shown) == 150 - 27
    assert all(x == pytest.approx(1.0, abs=1e-12) for x in shown)


def test_check5_acwr_from_zero_converges_by_day_60_and_120() -> None:
    rows = daily_series(constant_runs(150), "UTC", seeding=Seeding.ZERO)
    by_day = {r.history_days: r for r in rows}
    assert by_day[1].acute == pytest.approx(0.25 * 9124.0)  # zero seed: the first day is λ·load
    early = by_day[28].acwr
    assert early is not None
    assert early - 1 > 0.1
    for day in range(60, 151):
        value = by_day[day].acwr
        assert value is not None
        assert abs(value - 1) <= 0.02
    for day in range(120, 151):
        value = by_day[day].acwr
        assert value is not None
        assert abs(value - 1) <= 0.001


def test_check5_acwr_hidden_before_28_days_of_history() -> None:
    rows = daily_series(constant_runs(40), "UTC")
    assert all(r.acwr is None for r in rows if r.history_days < 28)
    assert all(r.acwr is not None for r in rows if r.history_days >= 28)


def test_ewma_lambdas_match_the_design() -> None:
    assert ewma_lambda(7) == 0.25
    assert ewma_lambda(28) == pytest.approx(0.0690, abs=5e-5)


# -- check 6 (the flag itself is tested in test_flags_long_run.py) -----------------------------------------


def test_check6_spike_fires_at_111_percent_not_at_109_percent() -> None:
    from stridecare.domain.flags import spike_flag

    now = datetime(2025, 6, 1, 8, tzinfo=UTC)
    previous = [RunSummary(now - timedelta(days=d), distance_m=m) for d, m in ((3, 8000), (9, 10000), (20, 6000))]
    at_111 = spike_flag(11_100, now, previous)
    assert at_111 is not None
    assert at_111.name == "spike_caution"
    assert spike_flag(10_900, now, previous) is None


# -- check 7 -----------------------------------------------------------------------------------------------


def assert_worked_example(r: RunLoadResult) -> None:
    assert r.steps == pytest.approx(8500, rel=1e-9)
    assert r.mean_force_bw == pytest.approx(1.620, abs=0.0005)
    assert r.peak_force_bw == pytest.approx(2.545, abs=0.0005)
    assert r.peak_force_n == pytest.approx(1747, abs=1)
    assert r.load == pytest.approx(9124, rel=0.005)
    assert r.load / (r.distance_m / 1000) == pytest.approx(912, rel=0.005)


def test_check7_worked_example_from_samples() -> None:
    r = run_load_from_samples(steady_samples(int(EX_TIMER), EX_SPEED, EX_CADENCE), mass_kg=70)
    assert r.distance_m == pytest.approx(EX_DISTANCE)
    assert r.running_time_s == EX_TIMER
    assert_worked_example(r)


def test_check7_worked_example_from_summary() -> None:
    r = run_load_from_summary(distance_m=EX_DISTANCE, timer_s=EX_TIMER, avg_cadence_spm=EX_CADENCE, mass_kg=70)
    assert_worked_example(r)


def test_check7_worked_example_with_speed_from_distance_deltas() -> None:
    r = run_load_from_samples(steady_samples(int(EX_TIMER), EX_SPEED, EX_CADENCE, step_s=5, with_speed=False))
    assert_worked_example(r)


@pytest.mark.parametrize(("cadence", "expected"), [(187.0, 8617.0), (153.0, 9720.0)])
def test_check7_cadence_sensitivity(cadence: float, expected: float) -> None:
    # Same run, same timer, a different cadence against the usual 170: more steps, each a little lighter.
    r = run_load_from_samples(steady_samples(int(EX_TIMER), EX_SPEED, cadence), cadence_base_spm=EX_CADENCE)
    assert r.steps == pytest.approx(cadence * EX_TIMER / 60)
    assert r.load == pytest.approx(expected, rel=0.005)
    assert r.load == pytest.approx(expected_load(r.steps, EX_SPEED, cadence / EX_CADENCE), rel=1e-9)
    s = run_load_from_summary(
        distance_m=EX_DISTANCE, timer_s=EX_TIMER, avg_cadence_spm=cadence, cadence_base_spm=EX_CADENCE
    )
    assert s.load == pytest.approx(expected, rel=0.005)


def test_own_median_cadence_is_factor_one_without_a_baseline() -> None:
    r = run_load_from_samples(steady_samples(int(EX_TIMER), EX_SPEED, 187.0))
    assert r.cadence_base_spm == 187.0
    assert r.load == pytest.approx(expected_load(187 * 50, EX_SPEED), rel=1e-9)


# -- other model properties ----------------------------------------------------------------------------------


def test_womens_coefficients_give_the_lower_contact_force() -> None:
    assert step_force_bw(3.0, sex="female") == pytest.approx(math.pi / 2 * (1.24 + 0.106 * 3.0))
    assert step_force_bw(3.0, sex="m") == pytest.approx(math.pi / 2 * (1.27 + 0.105 * 3.0))


def test_timer_stopped_samples_add_nothing() -> None:
    run = steady_samples(600, 3.0, 170.0)
    paused = Samples(
        run.t,
        run.distance_m,
        run.speed_mps,
        run.cadence_spm,
        run.altitude_m,
        [not (100 < i <= 400) for i in range(len(run))],
    )
    assert run_load_from_samples(paused).steps == pytest.approx(170 * 300 / 60)


def test_downhill_impact_weights_downhill_steps_only_and_caps_at_9_degrees() -> None:
    flat = run_load_from_samples(steady_samples(1200, 3.0, 170.0))
    up = run_load_from_samples(steady_samples(1200, 3.0, 170.0, grade=0.06))
    down = run_load_from_samples(steady_samples(1200, 3.0, 170.0, grade=-0.06))
    steep = run_load_from_samples(steady_samples(1200, 3.0, 170.0, grade=-0.40))
    assert flat.downhill_impact == 0
    assert up.downhill_impact == 0
    assert down.downhill_impact == pytest.approx(down.steps * (1 + 0.06 * math.degrees(math.atan(0.06))), rel=1e-6)
    assert steep.downhill_impact == pytest.approx(steep.steps * 1.54, rel=1e-6)
    # Grade does not change the force: the load is the same on the flat, up and down.
    assert up.load == pytest.approx(flat.load)
    assert down.load == pytest.approx(flat.load)
    assert downhill_weight(-0.005) == 0  # altimeter noise on the flat is not downhill


def test_summary_only_run_has_no_downhill_figure() -> None:
    r = run_load_from_summary(distance_m=8000, timer_s=2700, avg_cadence_spm=None)
    assert not r.grade_available
    assert r.downhill_impact == 0
    assert r.cadence_estimated
    assert r.steps == pytest.approx((160 + 8 * (8000 / 2700 - 3)) * 2700 / 60)


def test_constants_come_from_settings_duck_typed() -> None:
    from stridecare.settings import LoadModelSettings

    c = load_constants_from_settings(LoadModelSettings(cadence_k=0.5, spike_window_days=21))
    assert c.cadence_k == 0.5
    assert c.spike_window_days == 21
    assert c.force_a == DEFAULT_CONSTANTS.force_a


# -- load over time ---------------------------------------------------------------------------------


def test_daily_load_uses_the_athletes_local_day() -> None:
    late = RunSummary(datetime(2025, 3, 29, 23, 30, tzinfo=UTC), load=100)  # 00:30 on the 30th in Berlin
    assert local_day(late.start_time, "Europe/Berlin") == date(2025, 3, 30)
    assert local_day(late.start_time, "America/New_York") == date(2025, 3, 29)
    totals = daily_totals([late], "Europe/Berlin")
    assert [(t.day, t.load) for t in totals] == [(date(2025, 3, 30), 100)]


def test_rest_days_are_zero_rows_and_averages_decay() -> None:
    runs = [
        RunSummary(datetime(2025, 5, 1, 7, tzinfo=UTC), 1000),
        RunSummary(datetime(2025, 5, 4, 7, tzinfo=UTC), 0),
    ]
    rows = daily_series(runs, "UTC")
    assert [r.day.day for r in rows] == [1, 2, 3, 4]
    assert rows[1].load == 0
    assert rows[1].acute == pytest.approx(750)


def test_weekly_volume_per_iso_week() -> None:
    days = [
        DayTotals(date(2025, 3, 30), 500, 5000, 1500, 4000, runs=1),  # Sunday, week 13
        DayTotals(date(2025, 3, 31), 700, 7000, 2100, 6000, runs=1),  # Monday, week 14
        DayTotals(date(2025, 4, 2), 300, 3000, 900, 2000, runs=1),
    ]
    weeks = weekly_volume(days)
    assert [(w.iso_week, w.load, w.distance_m, w.timer_s, w.steps, w.runs) for w in weeks] == [
        (13, 500, 5000, 1500, 4000, 1),
        (14, 1000, 10000, 3000, 8000, 2),
    ]
    assert weeks[1].week_start == date(2025, 3, 31)


def _runs_history() -> list[RunSummary]:
    start = datetime(2025, 1, 6, 6, tzinfo=UTC)
    return [RunSummary(start + timedelta(days=d), 800 + 37 * d) for d in range(0, 70, 2)]


@pytest.mark.parametrize("seeding", list(Seeding))
def test_incremental_recompute_matches_a_full_recompute(seeding: Seeding) -> None:
    runs = _runs_history()
    through = date(2025, 3, 20)
    stored = daily_series(runs, "UTC", through=through, seeding=seeding)
    late = RunSummary(datetime(2025, 2, 11, 18, tzinfo=UTC), 2500)  # a late upload for an earlier day
    changed = [r for r in runs if r.start_time.date() != date(2025, 2, 25)] + [late]  # one deleted, one added
    expected = daily_series(changed, "UTC", through=through, seeding=seeding)

    day = date(2025, 2, 11)
    previous = next(r for r in stored if r.day == day - timedelta(days=1))
    totals = daily_totals([r for r in changed if r.start_time.date() >= day], "UTC")
    new_rows = recompute_from(
        totals,
        start=day,
        through=through,
        previous=EwmaState(previous.day, previous.acute, previous.chronic),
        first_day=stored[0].day,
        seeding=seeding,
    )
    merged = [r for r in stored if r.day < day] + new_rows
    assert merged == expected
    assert merged != stored


def test_recompute_rejects_a_state_that_is_not_the_day_before() -> None:
    with pytest.raises(ValueError, match="day before"):
        recompute_from(
            [],
            start=date(2025, 1, 10),
            through=date(2025, 1, 12),
            previous=EwmaState(date(2025, 1, 8), 1.0, 1.0),
            first_day=date(2025, 1, 1),
        )


# -- limits that keep one glitch from outweighing a run ------------------------------------------------------


def test_a_speed_glitch_gets_the_force_at_12_mps_not_its_own() -> None:
    # One second at 500 m/s (a GPS jump) inside an easy run.
    run = steady_samples(int(EX_TIMER), EX_SPEED, EX_CADENCE)
    glitched = Samples(
        run.t,
        run.distance_m,
        [500.0 if i == 1500 else v for i, v in enumerate(run.speed_mps)],
        run.cadence_spm,
        run.altitude_m,
        run.timer_running,
    )
    r = run_load_from_samples(glitched)
    assert r.max_force_bw == pytest.approx(step_force_bw(12.0))
    assert r.load == pytest.approx(9124, rel=0.01)


def test_the_cadence_factor_is_limited_to_cadence_ratios_of_0_8_to_1_25() -> None:
    assert step_force_bw(EX_SPEED, 100.0, 170.0) == pytest.approx(step_force_bw(EX_SPEED, 136.0, 170.0))
    assert step_force_bw(EX_SPEED, 250.0, 170.0) == pytest.approx(step_force_bw(EX_SPEED, 212.5, 170.0))
    assert step_force_bw(EX_SPEED, 187.0, 170.0) < step_force_bw(EX_SPEED, 170.0, 170.0)
