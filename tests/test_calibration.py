"""Flags that mean something (design sections 4-5), through the planner on stored runs.

A steady training history raises at most one flag in any four weeks, whichever way it is imported; every
rule of section 5 still fires on a history built to trigger it; and the design's checks 5 (EWMA at constant
load) and 6 (the spike at 1.11×, not at 1.09×).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from factories import parsed_run, store_runs
from sqlalchemy import select

from stridecare.db.models import Athlete, DailyLoad, Run
from stridecare.domain.history import DayTotals, Seeding, recompute_from
from stridecare.domain.run import ParsedRun
from stridecare.runtime import Runtime

TZ = "Europe/Berlin"
ZONE = ZoneInfo(TZ)
FIRST_MONDAY = date(2025, 1, 6)
SPEED = 3.0  # m/s: distance and duration go together
RUN_DAYS = (0, 2, 4, 6)  # Monday, Wednesday, Friday, and the Sunday long run


def run_at(day: date, km: float, *, hour: int = 7) -> ParsedRun:
    """A run of ``km`` at 07:00 local time: every run of a weekday starts exactly 7 × 24 h after the last."""
    start = datetime(day.year, day.month, day.day, hour, tzinfo=ZONE).astimezone(UTC)
    return parsed_run(start, minutes=km * 1000 / SPEED / 60, speed_mps=SPEED, cadence_spm=170.0, interval_s=30)


def steady_weeks(weeks: int, *, seed: int = 1, first: date = FIRST_MONDAY) -> list[ParsedRun]:
    """Four runs a week; weekly distance 40 km ± 10 %; the long run 12 km growing 5 % a week."""
    rng = random.Random(seed)
    runs: list[ParsedRun] = []
    for week in range(weeks):
        volume = 40.0 * rng.uniform(0.9, 1.1)
        long_km = 12.0 * 1.05**week
        easy = (volume - long_km) / 3
        monday = first + timedelta(weeks=week)
        for weekday in RUN_DAYS:
            runs.append(run_at(monday + timedelta(days=weekday), long_km if weekday == 6 else easy))
    return runs


def flags_by_day(rt: Runtime) -> list[tuple[date, list[str]]]:
    with rt.db.transaction() as s:
        return [
            (r.start_time.astimezone(ZONE).date(), list(r.load.flags))
            for r in s.scalars(select(Run).order_by(Run.start_time))
            if r.load is not None
        ]


def store(rt: Runtime, runs: list[ParsedRun], *, batch: bool = True) -> None:
    with rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone=TZ))
    now = max(r.start_time for r in runs) + timedelta(days=30)  # an archive: no prompts
    store_runs(rt.db, rt.settings, "me", runs, now, batch=batch)


@pytest.mark.parametrize("batch", [True, False], ids=["imported archive", "run by run"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_steady_twelve_weeks_raise_at_most_one_flag_in_any_four_weeks(tx_rt: Runtime, seed: int, batch: bool) -> None:
    store(tx_rt, steady_weeks(12, seed=seed), batch=batch)
    flagged = [(day, names) for day, names in flags_by_day(tx_rt) if names]
    for day, _ in flagged:
        window = [names for d, names in flagged if day <= d < day + timedelta(days=28)]
        assert sum(len(n) for n in window) <= 1, flagged
    # Nothing from a cold start: the first 28 days of an imported history carry no flag at all.
    assert all(day >= FIRST_MONDAY + timedelta(days=28) for day, _ in flagged)


def test_the_ramp_counts_a_run_two_weeks_earlier_in_exactly_one_fortnight(tx_rt: Runtime) -> None:
    # Four weeks of the same four runs at the same local hour, then a fifth week the same: the fortnights
    # hold eight runs each, so the ratio is 1.00, never 9 runs against 8.
    store(tx_rt, [run_at(FIRST_MONDAY + timedelta(weeks=w, days=d), 10.0) for w in range(7) for d in RUN_DAYS])
    with tx_rt.db.transaction() as s:
        last = s.scalars(select(Run).order_by(Run.start_time.desc()).limit(1)).one()
        assert last.load is not None
        assert last.load.flags == []
        assert last.load.facts["flag_reasons"] == {}


Case = Callable[[], list[ParsedRun]]
TAIL = FIRST_MONDAY + timedelta(weeks=8)  # after eight steady weeks


def spike(factor: float) -> Case:
    return lambda: [*steady_weeks(8), run_at(TAIL + timedelta(days=1), 12.0 * 1.05**7 * factor)]


def ramp() -> list[ParsedRun]:
    # Two weeks of six easy runs instead of three, none longer than the usual long run.
    extra = [run_at(TAIL + timedelta(weeks=w, days=d), 9.0) for w in range(2) for d in (0, 1, 2, 3, 4, 5)]
    return [*steady_weeks(8), *extra]


def monotony() -> list[ParsedRun]:
    return [*steady_weeks(8), *(run_at(TAIL + timedelta(days=d), 10.0) for d in range(7))]


def acwr() -> list[ParsedRun]:
    return [*steady_weeks(8), *(run_at(TAIL + timedelta(days=d), 16.0) for d in range(7))]


@pytest.mark.parametrize(
    ("case", "flag"),
    [
        (spike(1.2), "spike_caution"),
        (spike(2.1), "spike_high"),
        (ramp, "ramp"),
        (monotony, "monotony"),
        (acwr, "acwr_high"),
    ],
    ids=["spike caution", "spike high", "ramp", "monotony", "acwr"],
)
def test_every_rule_of_section_5_fires_on_its_own_case(tx_rt: Runtime, case: Case, flag: str) -> None:
    store(tx_rt, case())
    raised = {name for day, names in flags_by_day(tx_rt) if day >= TAIL for name in names}
    assert flag in raised
    assert not any(names for day, names in flags_by_day(tx_rt) if day < TAIL)  # the steady part stays quiet


# -- check 5: constant daily load --------------------------------------------------------------------------


def test_check5_constant_load_gives_an_acwr_of_one() -> None:
    days = [DayTotals(FIRST_MONDAY + timedelta(days=i), load=1000.0) for i in range(120)]
    end = days[-1].day
    first_day = recompute_from(days, start=FIRST_MONDAY, through=end, previous=None)
    assert all(r.acute / r.chronic == 1.0 for r in first_day)
    zero = recompute_from(days, start=FIRST_MONDAY, through=end, previous=None, seeding=Seeding.ZERO)
    assert abs(zero[59].acute / zero[59].chronic - 1) <= 0.02
    assert abs(zero[119].acute / zero[119].chronic - 1) <= 0.001
    assert abs(zero[27].acute / zero[27].chronic - 1) > 0.02  # why the product seeds with the first day


def test_check5_through_the_planner_a_run_every_day_keeps_both_averages_at_its_load(tx_rt: Runtime) -> None:
    store(tx_rt, [run_at(FIRST_MONDAY + timedelta(days=i), 8.0) for i in range(60)])
    with tx_rt.db.transaction() as s:
        rows = list(s.scalars(select(DailyLoad).order_by(DailyLoad.day)))
    assert len(rows) == 60
    assert all(r.acute == pytest.approx(r.load, rel=1e-9) for r in rows)
    assert all(r.chronic == pytest.approx(r.load, rel=1e-9) for r in rows)


# -- check 6: the spike at 1.11× and not at 1.09× ----------------------------------------------------------


@pytest.mark.parametrize(("ratio", "fires"), [(1.09, False), (1.10, False), (1.11, True)])
def test_check6_spike_at_111_not_109_through_the_planner(tx_rt: Runtime, ratio: float, fires: bool) -> None:
    runs = [run_at(FIRST_MONDAY + timedelta(days=2 * i), 10.0) for i in range(20)]
    runs.append(run_at(FIRST_MONDAY + timedelta(days=41), 10.0 * ratio))
    store(tx_rt, runs)
    with tx_rt.db.transaction() as s:
        last = s.scalars(select(Run).order_by(Run.start_time.desc()).limit(1)).one()
        assert last.load is not None
        assert ("spike_caution" in last.load.flags) is fires
        if fires:
            assert f"{ratio:.2f}×" in last.load.facts["flag_reasons"]["spike_caution"]
