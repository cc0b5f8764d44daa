"""Caution flags of the load model (docs/foot-load-model.md, section 5).

None of these predicts an individual injury, so every reason suggests ("consider …") and never forecasts.

What makes a flag mean something:

* Windows are the athlete's local calendar days. "The last N days" of a run are the N local days ending with
  the run's own day, holding the runs that started before it; the two-week ramp compares those 14 days with
  the 14 local days before them, so a run on the same weekday two weeks earlier is in exactly one of them.
* A threshold is compared on the value the reason shows (:func:`shown`): nothing displayed as "1.10×" fires
  at "above 1.10", and a ratio that fires is displayed above its threshold.
* Relative rules need history: at least ``min_history_runs`` (3) runs in the window they compare against,
  and (through :func:`evaluate_flags`) the athlete's own ``acwr_min_history_days`` (28) days of history
  before the run's day, counted from the first stored run, so an imported archive does not flag its first
  weeks against a cold start.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from stridecare.domain.history import RunSummary, local_day, utc_bounds_of_local_day
from stridecare.domain.load import DEFAULT_CONSTANTS, LoadConstants

SPIKE_CAUTION = "spike_caution"
SPIKE_HIGH = "spike_high"
RAMP = "ramp"
MONOTONY = "monotony"
ACWR_HIGH = "acwr_high"
SPIKE_FLAGS = frozenset({SPIKE_CAUTION, SPIKE_HIGH})
# Ratios are shown, and therefore compared, with two decimals: 1.11× is visibly above 1.10×.
RATIO_DIGITS = 2
MONOTONY_DIGITS = 1

FlagLevel = Literal["caution", "high", "info"]
Zone = str | ZoneInfo


@dataclass(frozen=True, slots=True)
class Flag:
    """A raised flag: stable ``name``, ``level``, a plain-language ``reason`` and the numbers behind it."""

    name: str
    level: FlagLevel
    reason: str
    facts: Mapping[str, float] = field(default_factory=dict)


def km(distance_m: float) -> str:
    """A distance for people: ``"21.1 km"``."""
    return f"{distance_m / 1000:.1f} km"


def shown(value: float, digits: int = RATIO_DIGITS) -> float:
    """``value`` as the reason displays it (``f"{value:.2f}"``), the figure every threshold is compared on."""
    return float(f"{value:.{digits}f}")


def ratio_text(value: float) -> str:
    """A ratio for people, with the digits it is compared on: ``"1.11×"``."""
    return f"{value:.{RATIO_DIGITS}f}×"


def local_days_window(start_time: datetime, days: int, tz: Zone, *, skip_days: int = 0) -> tuple[date, date]:
    """First and last local day of the ``days`` days ending ``skip_days`` days before the run's own day."""
    last = local_day(start_time, tz) - timedelta(days=skip_days)
    return last - timedelta(days=days - 1), last


def runs_in_days(
    runs: Sequence[RunSummary], start_time: datetime, days: int, tz: Zone = "UTC", *, skip_days: int = 0
) -> list[RunSummary]:
    """Runs that started before ``start_time`` on the ``days`` local days ending ``skip_days`` days before the
    local day of ``start_time`` (``skip_days=0``: the run's own day is the last one)."""
    first, last = local_days_window(start_time, days, tz, skip_days=skip_days)
    # Compare instants with the window's UTC bounds: one conversion per window, not per run.
    lo = utc_bounds_of_local_day(first, tz)[0]
    hi = min(utc_bounds_of_local_day(last, tz)[1], start_time)
    return [r for r in runs if lo <= r.start_time < hi]


def spike_flag(
    distance_m: float,
    start_time: datetime,
    previous_runs: Sequence[RunSummary],
    *,
    tz: Zone = "UTC",
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> Flag | None:
    """Single-run spike: distance above 1.10× (caution) or 2.0× (high) the longest run of the 30 local days
    ending with the run's day (earlier runs only).

    Only the stronger of the two is returned. Silent with fewer than three runs in the window.
    """
    window = runs_in_days(previous_runs, start_time, constants.spike_window_days, tz)
    if len(window) < constants.min_history_runs:
        return None
    longest = max(r.distance_m for r in window)
    if longest <= 0:
        return None
    ratio = shown(distance_m / longest)
    facts = {
        "distance_m": distance_m,
        "longest_m": longest,
        "ratio": ratio,
        "window_runs": float(len(window)),
    }
    base = (
        f"{km(distance_m)} is {ratio_text(ratio)} your longest run of the last "
        f"{constants.spike_window_days} days ({km(longest)})"
    )
    if ratio > constants.spike_high:
        return Flag(
            SPIKE_HIGH,
            "high",
            f"{base}; consider a few easy days next and building distance in smaller steps.",
            facts,
        )
    if ratio > constants.spike_caution:
        return Flag(SPIKE_CAUTION, "caution", f"{base}; consider keeping the next runs easy.", facts)
    return None


def ramp_flag(
    distance_m: float,
    start_time: datetime,
    previous_runs: Sequence[RunSummary],
    *,
    tz: Zone = "UTC",
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> Flag | None:
    """Two-week ramp: distance of the 14 local days ending with the run's day (this run included) above 1.30×
    the 14 local days before them.

    The history requirement applies to the earlier fortnight, the baseline the ratio divides by.
    """
    span = constants.ramp_window_days
    recent = runs_in_days(previous_runs, start_time, span, tz)
    before = runs_in_days(previous_runs, start_time, span, tz, skip_days=span)
    if len(before) < constants.min_history_runs:
        return None
    recent_m = distance_m + sum(r.distance_m for r in recent)
    before_m = sum(r.distance_m for r in before)
    if before_m <= 0:
        return None
    ratio = shown(recent_m / before_m)
    if ratio <= constants.ramp_ratio:
        return None
    return Flag(
        RAMP,
        "caution",
        f"{km(recent_m)} in the last {span} days is {ratio_text(ratio)} the {span} days before ({km(before_m)}); "
        "consider holding this volume for a while before adding more.",
        {"recent_m": recent_m, "before_m": before_m, "ratio": ratio},
    )


def monotony(daily_loads: Sequence[float]) -> float | None:
    """Foster's monotony, mean / SD of daily load (population SD); None when every day is 0.

    Identical non-zero days give infinity: the most monotonous week there is.
    """
    if not daily_loads or not any(daily_loads):
        return None
    mean = statistics.fmean(daily_loads)
    sd = statistics.pstdev(daily_loads)
    return float("inf") if sd == 0 else mean / sd


def monotony_flag(daily_loads: Sequence[float], *, constants: LoadConstants = DEFAULT_CONSTANTS) -> Flag | None:
    """Monotony over the last 7 local days (pass one value per day, rest days as 0, oldest first).

    Needs a full week of values and at least three days with running.
    """
    days = constants.monotony_days
    week = list(daily_loads[-days:])
    if len(week) < days or sum(1 for x in week if x > 0) < constants.min_history_runs:
        return None
    value = monotony(week)
    if value is None:
        return None
    value = value if value == float("inf") else shown(value, MONOTONY_DIGITS)
    if value <= constants.monotony_limit:
        return None
    text = "very high" if value == float("inf") else f"{value:.{MONOTONY_DIGITS}f}"
    return Flag(
        MONOTONY,
        "caution",
        f"Your daily load over the last {days} days has been very uniform (monotony {text}, above "
        f"{constants.monotony_limit:.{MONOTONY_DIGITS}f}); consider making one day clearly easier or a rest day.",
        {"monotony": value, "limit": constants.monotony_limit},
    )


def acwr_flag(acwr_value: float | None, *, constants: LoadConstants = DEFAULT_CONSTANTS) -> Flag | None:
    """ACWR above 1.5, as information. Pass the row's ``acwr``, which is None before 28 days of history."""
    if acwr_value is None:
        return None
    value = shown(acwr_value)
    if value <= constants.acwr_high:
        return None
    return Flag(
        ACWR_HIGH,
        "info",
        f"Your acute load (ref. steps/day, weighted over about 7 days) is {ratio_text(value)} your chronic load "
        "(ref. steps/day, weighted over about 28 days), "
        f"above {constants.acwr_high:.{RATIO_DIGITS}f}×. "
        "This is information, not a forecast; consider an easier day if your feet feel tired.",
        {"acwr": value, "limit": constants.acwr_high},
    )


def enough_history(history_days: int | None, constants: LoadConstants = DEFAULT_CONSTANTS) -> bool:
    """Whether ``history_days`` (local days from the athlete's first stored run to the run's day, not counting
    the run's day) is enough for the rolling-average flags. None means the caller does not gate."""
    return history_days is None or history_days >= constants.acwr_min_history_days


def evaluate_flags(
    run: RunSummary,
    previous_runs: Sequence[RunSummary],
    *,
    last_7_daily_loads: Sequence[float] = (),
    acwr_value: float | None = None,
    history_days: int | None = None,
    tz: Zone = "UTC",
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> list[Flag]:
    """Every flag for ``run``: spike, ramp, monotony, ACWR, in that order, each at most once.

    ``previous_runs`` are the athlete's runs that started before this one (at least the 30 local days ending
    with its day; 28 for the ramp). ``last_7_daily_loads`` and ``acwr_value`` come from the daily series up
    to the run's local day. ``history_days`` counts the local days from the athlete's first stored run to
    this run's day: below 28 no flag is raised (see :func:`enough_history`).
    """
    if not enough_history(history_days, constants):
        return []
    found = [
        spike_flag(run.distance_m, run.start_time, previous_runs, tz=tz, constants=constants),
        ramp_flag(run.distance_m, run.start_time, previous_runs, tz=tz, constants=constants),
        monotony_flag(last_7_daily_loads, constants=constants),
        acwr_flag(acwr_value, constants=constants),
    ]
    return [f for f in found if f is not None]
