"""Flags (design section 5) and the long-run rule (section 6), from the design's thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stridecare.domain.flags import (
    ACWR_HIGH,
    MONOTONY,
    RAMP,
    SPIKE_CAUTION,
    SPIKE_HIGH,
    acwr_flag,
    evaluate_flags,
    monotony_flag,
    ramp_flag,
    spike_flag,
)
from stridecare.domain.history import RunSummary
from stridecare.domain.long_run import (
    RULE_ABSOLUTE,
    RULE_DISTANCE,
    RULE_NONE,
    RULE_PERCENTILE,
    classify_long_run,
)

NOW = datetime(2025, 6, 1, 8, tzinfo=UTC)


def runs(*spec: tuple[float, float], timer_s: float = 2400) -> list[RunSummary]:
    """Runs given as (days before NOW, distance in m)."""
    return [RunSummary(NOW - timedelta(days=d), distance_m=m, timer_s=timer_s) for d, m in spec]


HISTORY = runs((2, 10_000), (6, 16_200), (13, 12_000), (25, 8_000))


def test_spike_caution_reason_has_the_numbers_and_suggests() -> None:
    flag = spike_flag(21_100, NOW, HISTORY)
    assert flag is not None
    assert flag.name == SPIKE_CAUTION
    assert flag.level == "caution"
    assert "21.1 km is 1.30× your longest run of the last 30 days (16.2 km)" in flag.reason
    assert "consider" in flag.reason
    assert "you will" not in flag.reason.lower()
    assert flag.facts["longest_m"] == 16_200


@pytest.mark.parametrize(
    ("ratio", "name"),
    [
        (1.09, None),
        (1.10, None),
        (1.11, SPIKE_CAUTION),
        (1.99, SPIKE_CAUTION),
        (2.0, None),
        (2.01, SPIKE_HIGH),
    ],
)
def test_spike_thresholds(ratio: float, name: str | None) -> None:
    flag = spike_flag(16_200 * ratio, NOW, HISTORY)
    if ratio == 2.0:
        # Exactly 2.0× is not above the high threshold, but it is above the caution one.
        assert flag is not None
        assert flag.name == SPIKE_CAUTION
    elif name is None:
        assert flag is None
    else:
        assert flag is not None
        assert flag.name == name


def test_spike_needs_three_runs_in_the_window_and_ignores_older_ones() -> None:
    two_recent = runs((2, 5000), (10, 5000), (31, 30_000), (40, 30_000))
    assert spike_flag(20_000, NOW, two_recent) is None
    three_recent = [*two_recent, *runs((20, 5000))]
    flag = spike_flag(20_000, NOW, three_recent)
    assert flag is not None  # the 30 km runs are older than 30 days and do not count as the longest
    assert flag.name == SPIKE_HIGH


def test_ramp_compares_the_last_14_days_with_the_14_before() -> None:
    before = runs((15, 10_000), (20, 10_000), (26, 10_000))  # 30 km
    recent = runs((3, 12_000), (8, 15_000))  # + today's run
    assert ramp_flag(12_000, NOW, before + recent) is None  # 39 km = 1.3×: not above
    flag = ramp_flag(13_000, NOW, before + recent)  # 40 km = 1.33×
    assert flag is not None
    assert flag.name == RAMP
    assert "40.0 km" in flag.reason
    assert "30.0 km" in flag.reason
    assert "consider" in flag.reason


def test_ramp_at_exactly_130_percent_is_silent() -> None:
    before = runs((15, 10_000), (20, 10_000), (26, 10_000))
    assert ramp_flag(9_000, NOW, before + runs((3, 15_000), (8, 15_000))) is None


def test_ramp_needs_three_runs_in_the_earlier_fortnight() -> None:
    before = runs((15, 10_000), (20, 10_000))
    assert ramp_flag(30_000, NOW, before) is None


def test_monotony_flag() -> None:
    steady = [1000, 1050, 980, 1020, 1000, 990, 1010]  # mean/SD far above 2
    varied = [1000, 0, 2500, 0, 800, 0, 3000]
    flag = monotony_flag(steady)
    assert flag is not None
    assert flag.name == MONOTONY
    assert "consider" in flag.reason
    assert monotony_flag(varied) is None
    assert monotony_flag([0, 0, 0, 0, 1000, 1000, 0]) is None  # two run days are not enough history
    assert monotony_flag(steady[:6]) is None  # not a full week


def test_acwr_flag_is_information_above_15() -> None:
    assert acwr_flag(None) is None
    assert acwr_flag(1.5) is None
    flag = acwr_flag(1.62)
    assert flag is not None
    assert flag.name == ACWR_HIGH
    assert flag.level == "info"
    assert "1.62" in flag.reason


def test_evaluate_flags_collects_by_name() -> None:
    run = RunSummary(NOW, distance_m=21_100)
    names = [f.name for f in evaluate_flags(run, HISTORY, last_7_daily_loads=[900] * 7, acwr_value=1.7)]
    assert names == [SPIKE_CAUTION, MONOTONY, ACWR_HIGH]
    for f in evaluate_flags(run, HISTORY, last_7_daily_loads=[900] * 7, acwr_value=1.7):
        assert "you will" not in f.reason.lower()


# -- long run ---------------------------------------------------------------------------------------------


def test_ninety_minutes_is_long_without_any_history() -> None:
    d = classify_long_run(90 * 60, 14_000, NOW, [])
    assert d.is_long
    assert d.rule == RULE_ABSOLUTE
    assert not classify_long_run(89 * 60, 14_000, NOW, []).is_long


def test_distance_rule_needs_45_minutes_and_three_runs() -> None:
    hist = runs((3, 10_000), (10, 9_000), (17, 8_000), timer_s=3600)  # 60 min each: the percentile rule stays out
    d = classify_long_run(50 * 60, 11_000, NOW, hist)  # exactly 1.10 × 10 km
    assert d.is_long
    assert d.rule == RULE_DISTANCE
    assert "11.0 km" in d.reason
    assert "10.0 km" in d.reason
    assert not classify_long_run(50 * 60, 10_900, NOW, hist).is_long
    assert not classify_long_run(44 * 60, 20_000, NOW, hist).is_long  # under 45 min only 90 min counts
    assert not classify_long_run(50 * 60, 11_000, NOW, hist[:2]).is_long  # two runs are too few


def test_duration_percentile_rule_over_twelve_weeks() -> None:
    # Ten earlier runs of 30..75 min (every 5 min) within 12 weeks, all of the same 8 km so the distance rule
    # cannot decide. 90th percentile (linear interpolation) of 30,35,...,75 = 30 + 0.9 × 45 = 70.5 min.
    hist = [RunSummary(NOW - timedelta(days=3 + 7 * i), distance_m=8_000, timer_s=(30 + 5 * i) * 60) for i in range(10)]
    d = classify_long_run(71 * 60, 7_000, NOW, hist)
    assert d.is_long
    assert d.rule == RULE_PERCENTILE
    assert d.facts["duration_percentile_s"] == pytest.approx(70.5 * 60)
    assert classify_long_run(70 * 60, 7_000, NOW, hist).rule == RULE_NONE
    old = [RunSummary(NOW - timedelta(weeks=13), distance_m=8_000, timer_s=30 * 60)] * 5
    assert not classify_long_run(60 * 60, 7_000, NOW, old).is_long  # outside the 12 weeks: no history


# -- windows in local days, thresholds on the value shown, history before rolling flags ---------------------

BERLIN = "Europe/Berlin"


def test_a_run_two_weeks_earlier_on_the_same_weekday_is_in_exactly_one_fortnight() -> None:
    from stridecare.domain.flags import runs_in_days

    same_weekday = runs((14, 10_000))  # exactly 14 × 24 h earlier
    assert runs_in_days(same_weekday, NOW, 14) == []
    assert runs_in_days(same_weekday, NOW, 14, skip_days=14) == same_weekday
    day_after = runs((13, 10_000))
    assert runs_in_days(day_after, NOW, 14) == day_after
    assert runs_in_days(day_after, NOW, 14, skip_days=14) == []


def test_the_ramp_of_a_steady_plan_with_a_growing_long_run_is_silent() -> None:
    # Three 8 km runs a week and a weekly long run growing 1.5 km, every run at the same hour. Counting the
    # long run exactly 14 days back in the recent fortnight made this 1.33×; the true ratio is 1.08×.
    easy = runs(*[(d + 7 * w, 8_000) for w in range(4) for d in (1, 3, 5)])
    long_runs = runs((7, 16_500), (14, 15_000), (21, 13_500), (28, 12_000))
    assert ramp_flag(18_000, NOW, easy + long_runs) is None


def test_local_days_decide_the_window_not_24_hour_spans() -> None:
    from stridecare.domain.flags import runs_in_days

    # 07:00 in Berlin on 1 June; a run at 23:30 Berlin time 30 days before is on day −30: outside the 30 days,
    # though less than 30 × 24 h earlier.
    start = datetime(2025, 6, 1, 5, tzinfo=UTC)
    late_evening = RunSummary(datetime(2025, 5, 2, 21, 30, tzinfo=UTC), distance_m=30_000)
    assert start - late_evening.start_time < timedelta(days=30)
    assert runs_in_days([late_evening], start, 30, BERLIN) == []
    assert runs_in_days([late_evening], start, 31, BERLIN) == [late_evening]


@pytest.mark.parametrize(
    ("ratio", "fires", "shown_text"),
    [(1.104, False, None), (1.106, True, "1.11×"), (1.1049, False, None)],
)
def test_the_spike_is_compared_on_the_ratio_it_shows(ratio: float, fires: bool, shown_text: str | None) -> None:
    flag = spike_flag(16_200 * ratio, NOW, HISTORY)
    assert (flag is not None) is fires
    if flag is not None:
        assert shown_text is not None and shown_text in flag.reason
        assert flag.facts["ratio"] > 1.10


def test_nothing_shown_at_the_threshold_fires() -> None:
    import re

    for ratio in [1.095 + i * 0.0005 for i in range(40)]:
        flag = spike_flag(16_200 * ratio, NOW, HISTORY)
        if flag is not None:
            shown_ratio = float(re.search(r"is (\d+\.\d+)×", flag.reason).group(1))  # type: ignore[union-attr]
            assert shown_ratio > 1.10
    assert acwr_flag(1.504) is None  # shown as 1.50
    flag = acwr_flag(1.506)
    assert flag is not None and "1.51×" in flag.reason


def test_rolling_flags_need_28_days_of_history_before_the_run() -> None:
    run = RunSummary(NOW, distance_m=21_100)
    kwargs = {"last_7_daily_loads": [900] * 7, "acwr_value": 1.7}
    assert evaluate_flags(run, HISTORY, history_days=27, **kwargs) == []  # type: ignore[arg-type]
    names = [f.name for f in evaluate_flags(run, HISTORY, history_days=28, **kwargs)]  # type: ignore[arg-type]
    assert names == [SPIKE_CAUTION, MONOTONY, ACWR_HIGH]


def test_each_flag_once() -> None:
    run = RunSummary(NOW, distance_m=21_100)
    flags = evaluate_flags(run, HISTORY + HISTORY, last_7_daily_loads=[900] * 7, acwr_value=1.7)
    assert len({f.name for f in flags}) == len(flags)
    assert len({f.reason for f in flags}) == len(flags)


def test_long_run_distance_rule_compares_the_ratio_it_shows() -> None:
    hist = runs((3, 10_000), (10, 9_000), (17, 8_000), timer_s=3600)
    assert not classify_long_run(50 * 60, 10_949, NOW, hist).is_long  # 1.09×4 shown as 1.09×
    d = classify_long_run(50 * 60, 10_951, NOW, hist)  # shown as 1.10×
    assert d.is_long and "1.10×" in d.reason
