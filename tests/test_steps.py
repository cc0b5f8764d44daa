"""Unit tests of the pure step counting (foot-load model, section 1)."""

from __future__ import annotations

import pytest

from stridecare.domain.run import Samples
from stridecare.domain.steps import (
    CadenceModel,
    estimate_cadence_spm,
    fit_cadence_model,
    interval_weights,
    normalise_cadence,
    steps_estimated_from_speed,
    steps_from_average_speed,
    steps_from_samples,
    steps_from_summary,
)
from stridecare.settings import LoadModelSettings


def _samples(
    t: list[float],
    cadence: list[float | None],
    running: list[bool] | None = None,
    speed: list[float | None] | None = None,
) -> Samples:
    n = len(t)
    return Samples(
        t=t,
        distance_m=[None] * n,
        speed_mps=speed if speed is not None else [None] * n,
        cadence_spm=cadence,
        altitude_m=[None] * n,
        timer_running=running if running is not None else [True] * n,
    )


# -- unit trap
# ------------------------------------------------------------------------------------------------


def test_strides_per_minute_are_doubled() -> None:
    spm, doubled = normalise_cadence([85.0, 86.5, None, 0.0, 84.0])
    assert doubled is True
    assert spm == [170.0, 173.0, None, 0.0, 168.0]


def test_model_check_2_stream_at_170_rpm_is_steps_per_minute_not_doubled() -> None:
    spm, doubled = normalise_cadence([170.0] * 600)
    assert doubled is False
    assert spm == [170.0] * 600
    samples = _samples([float(i) for i in range(1, 601)], spm)
    assert steps_from_samples(samples) == pytest.approx(1700.0)


def test_unit_trap_median_ignores_zeros_and_gaps() -> None:
    # Long stops written as zeros must not drag a steps/min stream below the threshold.
    raw: list[float | None] = [0.0] * 700 + [None] * 50 + [172.0] * 300
    _, doubled = normalise_cadence(raw)
    assert doubled is False


def test_unit_trap_threshold_is_a_median_not_a_maximum() -> None:
    # A few sprint spikes above 120 in a per-foot stream do not flip the unit.
    _, doubled = normalise_cadence([85.0] * 50 + [130.0] * 10)
    assert doubled is True


# -- stream integration
# ---------------------------------------------------------------------------------------


def test_steps_from_one_second_stream() -> None:
    samples = _samples([float(i) for i in range(1, 3001)], [170.0] * 3000)
    assert steps_from_samples(samples) == pytest.approx(8500.0)


def test_long_smart_recording_gaps_are_not_capped() -> None:
    # Samples every 9 s (smart recording): each interval counts fully.
    samples = _samples([9.0 * i for i in range(1, 101)], [180.0] * 100)
    assert steps_from_samples(samples) == pytest.approx(180.0 * 900 / 60)


def test_interval_attributed_to_the_later_sample() -> None:
    samples = _samples([10.0, 20.0, 30.0], [120.0, 180.0, 60.0])
    # (0,10] at 120, (10,20] at 180, (20,30] at 60
    assert steps_from_samples(samples) == pytest.approx((120 + 180 + 60) * 10 / 60)


def test_interval_spanning_a_timer_stop_does_not_count() -> None:
    # Paused from 100 to 400 s: the first sample after the resume is marked not running.
    t = [float(i) for i in range(1, 101)] + [400.0 + i for i in range(0, 100)]
    running = [True] * 100 + [False] + [True] * 99
    samples = _samples(t, [170.0] * 200, running)
    assert steps_from_samples(samples) == pytest.approx(170.0 * 199 / 60)
    assert sum(interval_weights(samples)) == pytest.approx(199.0)


def test_samples_without_cadence_add_nothing_and_backwards_time_adds_nothing() -> None:
    samples = _samples([1.0, 2.0, 1.5, 3.0], [170.0, None, 170.0, 170.0])
    # (0,1] 170, (1,2] None, (2,1.5] nothing, (2,3] 170
    assert steps_from_samples(samples) == pytest.approx(170.0 * 2 / 60)


# -- estimates
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speed", "expected"),
    [(3.0, 160.0), (4.0, 168.0), (2.0, 152.0), (0.5, 150.0), (10.0, 190.0), (6.75, 190.0)],
)
def test_default_cadence_line_is_clamped(speed: float, expected: float) -> None:
    assert estimate_cadence_spm(speed) == pytest.approx(expected)


def test_estimate_uses_settings_constants() -> None:
    settings = LoadModelSettings(default_cadence_intercept_spm=170.0, default_cadence_max_spm=200.0)
    assert estimate_cadence_spm(3.0, settings) == pytest.approx(170.0)
    assert estimate_cadence_spm(6.0, settings) == pytest.approx(194.0)


def test_athlete_model_recovers_a_line_and_needs_five_runs() -> None:
    pairs = [(v, 150.0 + 5.0 * (v - 3.0) + 15.0) for v in (2.5, 2.8, 3.0, 3.3, 3.9)]
    assert fit_cadence_model(pairs[:4]) is None
    model = fit_cadence_model(pairs)
    assert model is not None
    assert model.intercept_spm == pytest.approx(165.0)
    assert model.slope_spm_per_mps == pytest.approx(5.0)
    assert estimate_cadence_spm(3.5, model=model) == pytest.approx(167.5)
    assert model.predict(30.0) == 190.0  # clamped, not extrapolated


def test_athlete_model_with_one_speed_is_flat() -> None:
    model = fit_cadence_model([(3.0, c) for c in (170.0, 172.0, 174.0, 176.0, 178.0)])
    assert model == CadenceModel(174.0, 0.0, 150.0, 190.0, 5)


def test_estimated_steps_skip_standing_intervals() -> None:
    samples = _samples([float(i) for i in range(1, 121)], [None] * 120, speed=[3.0] * 60 + [0.0] * 60)
    assert steps_estimated_from_speed(samples) == pytest.approx(160.0)  # 60 s at 160 spm
    assert steps_estimated_from_speed(_samples([1.0], [None])) is None


def test_steps_from_average_speed() -> None:
    assert steps_from_average_speed(9000.0, 3000.0) == pytest.approx(160.0 * 50)
    assert steps_from_average_speed(100.0, 0.0) == 0.0


# -- summaries
# --------------------------------------------------------------------------------------------------


def test_steps_from_summary_doubles_per_foot_average() -> None:
    assert steps_from_summary(85.0, 3000.0) == pytest.approx(8500.0)


def test_steps_from_summary_keeps_steps_per_minute() -> None:
    assert steps_from_summary(170.0, 3000.0) == pytest.approx(8500.0)
    assert steps_from_summary(0.0, 3000.0) == 0.0


# -- the one step rule every source applies ------------------------------------------------------------------


def test_count_steps_prefers_the_stream_then_the_source_total_then_an_estimate() -> None:
    from stridecare.domain.run import CadenceSource
    from stridecare.domain.steps import count_steps

    with_cadence = _samples([float(i) for i in range(601)], [170.0] * 601)
    steps, source, avg = count_steps(with_cadence, distance_m=2000, timer_s=600, session_steps=5000)
    assert (round(steps), source, avg) == (1700, CadenceSource.STREAM, pytest.approx(170.0))

    without = _samples([float(i) for i in range(601)], [None] * 601)
    steps, source, avg = count_steps(without, distance_m=2000, timer_s=600, session_steps=1650)
    assert (steps, source, avg) == (1650, CadenceSource.SESSION, pytest.approx(165.0))

    steps, source, _ = count_steps(without, distance_m=1800, timer_s=600)
    assert source is CadenceSource.ESTIMATED
    assert steps == pytest.approx(estimate_cadence_spm(3.0) * 10)
