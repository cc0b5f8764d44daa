"""Routine rules (docs/routines.md): triggers, once per local day, toe-isolation cadence, balance
progression, the weekly prompt, quiet hours across midnight and DST, freshness."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from recommender.routines import BALANCE_LEVELS, ROUTINES, WELLNESS_DISCLAIMER
from recommender.rules import (
    HistoryFacts,
    RunFacts,
    balance_level_from_completions,
    defer_for_quiet_hours,
    fast_threshold_mps,
    is_fresh,
    iso_week_key,
    next_balance_level,
    post_run_decision,
    toe_isolation_due,
    weekly_balance_decision,
    weekly_balance_due,
)
from stridecare.domain.flags import spike_flag
from stridecare.domain.history import RunSummary
from stridecare.domain.long_run import classify_long_run

TZ = "Europe/Berlin"
BERLIN = ZoneInfo(TZ)
# Wednesday 4 June 2025, 07:00 local
START = datetime(2025, 6, 4, 5, tzinfo=UTC)
PAST = [
    RunSummary(START - timedelta(days=d), distance_m=m, timer_s=t)
    for d, m, t in ((2, 10_000, 3000), (6, 16_200, 5100), (13, 12_000, 3700), (25, 8_000, 2500))
]


def facts(
    distance_m: float = 8_000,
    timer_s: float = 2_700,
    *,
    downhill: float | None = None,
    sub_sport: str | None = None,
    history: list[RunSummary] | None = None,
) -> RunFacts:
    past = PAST if history is None else history
    flag = spike_flag(distance_m, START, past)
    return RunFacts(
        start_time=START,
        end_time=START + timedelta(seconds=timer_s + 120),
        timer_s=timer_s,
        distance_m=distance_m,
        load=distance_m * 0.9,
        long_run=classify_long_run(timer_s, distance_m, START, past),
        downhill_impact=downhill,
        flags=[flag] if flag else [],
        sub_sport=sub_sport,
    )


# A Monday toe-isolation session keeps the easy runs below from asking for one unless a test wants it.
QUIET = HistoryFacts(toe_isolation_days=[date(2025, 6, 3)])


def test_every_run_gets_toe_spread_and_nothing_else_when_unremarkable() -> None:
    d = post_run_decision(facts(), QUIET, tz=TZ)
    assert d.routines == ["toe_spread"]
    assert d.reasons == ["after every run → toe spread, 10 × 5 s per foot"]
    assert d.local_day == date(2025, 6, 4)


def test_long_run_rolls_out_and_extends_the_big_toe() -> None:
    d = post_run_decision(facts(21_100, 4_800), QUIET, tz=TZ)
    assert d.routines == ["roll_out", "toe_extension", "toe_spread"]
    assert d.reasons[0] == (
        "long run: 21.1 km, 1.30× your longest of the last 30 days (16.2 km) → roll out both soles, "
        "at least 1 min per foot"
    )
    assert "roll_out=long" in d.rule
    assert "toe_extension=long" in d.rule
    # The run is also a spike: the flag travels with the decision and its reason suggests.
    assert [f.name for f in d.flags] == ["spike_caution"]
    assert d.flags[0].reason.startswith("21.1 km is 1.30× your longest run") and "consider" in d.flags[0].reason
    # Each reason once per prompt: the flag's reason is shown with the flags, not repeated among the reasons.
    assert not any("your longest run" in r for r in d.reasons)
    assert len(d.reasons) == len(set(d.reasons))


def test_long_by_absolute_time_without_history() -> None:
    d = post_run_decision(facts(15_000, 95 * 60, history=[]), QUIET, tz=TZ)
    assert "roll_out" in d.routines
    assert "toe_extension" in d.routines


@pytest.mark.parametrize(
    ("timer_min", "impact", "history", "expect"),
    [
        (35, 1200.0, [1000.0, 900.0, 1100.0], True),  # 1.2× the median of 1000
        (35, 1190.0, [1000.0, 900.0, 1100.0], False),
        (29, 3000.0, [1000.0, 900.0, 1100.0], False),  # under 30 min
        (35, 3000.0, [1000.0, 1100.0], False),  # two runs are too little history
        (35, 3000.0, [0.0, 0.0, 0.0], False),  # a flat-lander's median of 0 compares with nothing
        (35, None, [1000.0, 900.0, 1100.0], False),  # no altitude on this run
    ],
)
def test_downhill_roll_out(timer_min: int, impact: float | None, history: list[float], expect: bool) -> None:
    hist = HistoryFacts(recent_downhill_impacts=history, toe_isolation_days=QUIET.toe_isolation_days)
    d = post_run_decision(facts(7_000, timer_min * 60, downhill=impact), hist, tz=TZ)
    assert ("roll_out" in d.routines) is expect
    if expect:
        assert "roll_out=downhill" in d.rule
        assert "1.20× your usual (1000)" in d.reasons[0]


def test_fast_threshold_is_the_80th_percentile_and_5_percent_over_median() -> None:
    speeds = [2.8, 2.9, 3.0, 3.0, 3.1, 3.2]  # p80 = 3.1, 1.05 × median = 3.15
    assert fast_threshold_mps(speeds) == pytest.approx(3.15)
    assert fast_threshold_mps([3.0] * 6) == pytest.approx(3.15)
    assert fast_threshold_mps([2.0, 2.5, 3.0, 3.5, 4.0, 4.5]) == pytest.approx(4.0)  # p80 wins
    assert fast_threshold_mps(speeds[:4]) is None  # five runs needed


def test_fast_run_gets_toe_extension() -> None:
    hist = HistoryFacts(recent_speeds_mps=[2.8, 2.9, 3.0, 3.0, 3.1, 3.2], toe_isolation_days=QUIET.toe_isolation_days)
    fast = post_run_decision(facts(8_000, 8_000 / 3.2), hist, tz=TZ)
    steady = post_run_decision(facts(8_000, 8_000 / 3.1), hist, tz=TZ)
    assert "toe_extension" in fast.routines
    assert "toe_extension=fast" in fast.rule
    assert "5:13/km" in fast.reasons[0]  # 1000 / 3.2 s per km
    assert "toe_extension" not in steady.routines


@pytest.mark.parametrize(
    ("load_7d", "history_days", "emphasised"),
    [(13_000.0, 30, True), (12_000.0, 30, False), (13_000.0, 20, False)],
)
def test_toe_spread_emphasis_when_7_day_load_is_above_12x_the_28_day_average(
    load_7d: float, history_days: int, emphasised: bool
) -> None:
    hist = HistoryFacts(
        load_7d=load_7d,
        load_28d=40_000.0,
        load_28d_before=40_000.0,
        history_days=history_days,
        toe_isolation_days=QUIET.toe_isolation_days,
    )
    d = post_run_decision(facts(), hist, tz=TZ)
    assert "toe_spread" in d.routines
    assert (d.emphasis == ["toe_spread"]) is emphasised
    assert ("toe_spread=every_run+load_7d" in d.rule) is emphasised


def test_balance_after_trail_runs_at_the_athletes_level() -> None:
    d = post_run_decision(facts(sub_sport="trail"), QUIET, tz=TZ, balance_level_now=1)
    assert "balance" in d.routines
    assert d.balance_level == 1
    assert "eyes closed" in d.reasons[-1]
    assert "balance" not in post_run_decision(facts(), QUIET, tz=TZ).routines


def test_no_routine_twice_on_one_local_day() -> None:
    d = post_run_decision(facts(21_100, 4_800), QUIET, tz=TZ, given_today={"roll_out", "toe_spread"})
    assert d.routines == ["toe_extension"]
    assert d.facts["already_today"] == ["roll_out", "toe_spread"]
    assert not any("roll out" in r for r in d.reasons)
    nothing = post_run_decision(facts(), QUIET, tz=TZ, given_today={"toe_spread"})
    assert nothing.routines == []


def test_toe_isolation_on_easy_runs_not_on_hard_ones() -> None:
    easy = post_run_decision(facts(), HistoryFacts(), tz=TZ)
    assert easy.routines == ["toe_spread", "toe_isolation"]
    assert "isolation session 1 of up to 3 this week" in easy.reasons[-1]
    long_run = post_run_decision(facts(21_100, 4_800), HistoryFacts(), tz=TZ)
    assert "toe_isolation" not in long_run.routines
    after_spike = post_run_decision(facts(), HistoryFacts(last_spike_day=date(2025, 6, 3)), tz=TZ)
    assert "toe_isolation" not in after_spike.routines


def test_toe_isolation_cadence_is_three_per_iso_week_with_a_day_between() -> None:
    given: list[date] = []
    monday = date(2025, 6, 2)
    for i in range(14):
        day = monday + timedelta(days=i)
        if toe_isolation_due(day, given):
            given.append(day)
    assert [d.strftime("%a %d") for d in given] == [
        "Mon 02",
        "Wed 04",
        "Fri 06",
        "Mon 09",
        "Wed 11",
        "Fri 13",
    ]


def test_toe_isolation_never_the_day_after_a_spike() -> None:
    spike = date(2025, 6, 3)
    assert not toe_isolation_due(spike + timedelta(days=1), [], last_spike_day=spike)
    assert toe_isolation_due(spike + timedelta(days=2), [], last_spike_day=spike)
    assert not toe_isolation_due(date(2025, 6, 5), [], hard_day=True)


def test_balance_progression_after_three_sessions_at_a_level() -> None:
    assert next_balance_level(0, 2) == 0
    assert next_balance_level(0, 3) == 1
    assert next_balance_level(1, 3) == 2
    assert next_balance_level(2, 9) == 2  # unstable surface is the last level
    assert balance_level_from_completions([0, 0, 0, 1, 1, 0, 1]) == 2
    # Sessions reported at a level not yet reached (or a stale easier one) do not count.
    assert balance_level_from_completions([1, 1, 1, 0, 0]) == 0
    assert [lv.title for lv in BALANCE_LEVELS] == ["eyes open", "eyes closed", "unstable surface"]


def test_weekly_balance_decision_moves_up_and_says_so() -> None:
    up = weekly_balance_decision(0, 3)
    assert up.routines == ["balance"]
    assert up.balance_level == 1
    assert "3 sessions done eyes open → moving up to eyes closed" in up.reasons[0]
    same = weekly_balance_decision(1, 1)
    assert same.balance_level == 1
    assert weekly_balance_decision(0, 0, given_today={"balance"}).routines == []


def test_weekly_balance_due_on_the_chosen_local_weekday_and_time() -> None:
    # Sunday 30 March 2025 is the spring-forward day in Berlin: 18:00 local is 16:00 UTC (CEST).
    due_at = datetime(2025, 3, 30, 16, tzinfo=UTC)
    assert weekly_balance_due(due_at - timedelta(minutes=1), TZ, 6, "18:00", None) is None
    assert weekly_balance_due(due_at, TZ, 6, "18:00", None) == due_at
    assert weekly_balance_due(due_at + timedelta(hours=3), TZ, 6, "18:00", "2025-W12") == due_at
    assert weekly_balance_due(due_at + timedelta(hours=3), TZ, 6, "18:00", "2025-W13") is None
    # Monday of the next week: a new week, but its Sunday has not come yet.
    assert weekly_balance_due(datetime(2025, 3, 31, 10, tzinfo=UTC), TZ, 6, "18:00", "2025-W13") is None
    assert iso_week_key(date(2025, 3, 30)) == "2025-W13"


@pytest.mark.parametrize(
    ("due_local", "expected_local"),
    [
        (datetime(2025, 6, 4, 23, 15), datetime(2025, 6, 5, 7, 0)),  # late evening → next morning
        (datetime(2025, 6, 5, 3, 0), datetime(2025, 6, 5, 7, 0)),  # after midnight → same morning
        (datetime(2025, 6, 4, 22, 0), datetime(2025, 6, 5, 7, 0)),  # the start itself is quiet
        (datetime(2025, 6, 4, 7, 0), datetime(2025, 6, 4, 7, 0)),  # the end is not
        (datetime(2025, 6, 4, 12, 0), datetime(2025, 6, 4, 12, 0)),
    ],
)
def test_quiet_hours_across_midnight(due_local: datetime, expected_local: datetime) -> None:
    due = due_local.replace(tzinfo=BERLIN).astimezone(UTC)
    assert defer_for_quiet_hours(due, TZ, "22:00", "07:00") == expected_local.replace(tzinfo=BERLIN)


def test_quiet_hours_over_the_dst_nights() -> None:
    # Spring forward (night of 29/30 March 2025): the night is an hour shorter, 07:00 CEST is 05:00 UTC.
    spring = defer_for_quiet_hours(datetime(2025, 3, 29, 22, 30, tzinfo=UTC), TZ, "22:00", "07:00")
    assert spring == datetime(2025, 3, 30, 5, 0, tzinfo=UTC)
    # Fall back (night of 25/26 October 2025): 07:00 CET is 06:00 UTC.
    autumn = defer_for_quiet_hours(datetime(2025, 10, 25, 21, 30, tzinfo=UTC), TZ, "22:00", "07:00")
    assert autumn == datetime(2025, 10, 26, 6, 0, tzinfo=UTC)
    # A window ending inside the skipped hour (02:30 does not exist that night): deferred past the gap, never
    # dropped and never earlier than due.
    due = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)  # 01:30 CET
    moved = defer_for_quiet_hours(due, TZ, "01:00", "02:30")
    assert moved > due
    assert moved.astimezone(BERLIN).hour == 3


def test_quiet_hours_same_day_window_and_none() -> None:
    due = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)  # 14:00 in Berlin
    assert defer_for_quiet_hours(due, TZ, "13:00", "15:00") == datetime(2025, 6, 4, 13, 0, tzinfo=UTC)
    assert defer_for_quiet_hours(due, TZ, None, None) == due
    assert defer_for_quiet_hours(due, TZ, "13:00", "13:00") == due


def test_freshness_window() -> None:
    now = datetime(2025, 6, 4, 12, tzinfo=UTC)
    assert is_fresh(now - timedelta(hours=23), now)
    assert is_fresh(now - timedelta(hours=24), now)
    assert not is_fresh(now - timedelta(hours=25), now)
    assert not is_fresh(now - timedelta(days=200), now)  # a history import
    assert is_fresh(now + timedelta(minutes=5), now)  # device clock slightly ahead
    assert is_fresh(now - timedelta(hours=30), now, window_hours=36)
    with pytest.raises(ValueError, match="timezone-aware"):
        is_fresh(datetime(2025, 6, 4, 11), now)


def test_routine_texts_and_disclaimer() -> None:
    assert set(ROUTINES) == {"roll_out", "toe_extension", "toe_isolation", "toe_spread", "balance"}
    assert ROUTINES["toe_extension"].dose == "3 × 30 s per foot"
    assert ROUTINES["toe_spread"].dose == "10 × 5 s per foot"
    assert "not medical advice" in WELLNESS_DISCLAIMER
    for word in ("pain", "swelling", "numbness", "clinician"):
        assert word in WELLNESS_DISCLAIMER
