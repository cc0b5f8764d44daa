"""Caution flags of the load model (design/foot-load-model.md, section 5).

None of these predicts an individual injury, so every reason suggests ("consider …") and never forecasts.
Relative rules need history: at least ``min_history_runs`` (3) runs in the window they compare against;
without it the flag stays silent rather than comparing against a thin or empty past.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from stridecare.domain.history import RunSummary
from stridecare.domain.load import DEFAULT_CONSTANTS, LoadConstants

SPIKE_CAUTION = "spike_caution"
SPIKE_HIGH = "spike_high"
RAMP = "ramp"
MONOTONY = "monotony"
ACWR_HIGH = "acwr_high"
SPIKE_FLAGS = frozenset({SPIKE_CAUTION, SPIKE_HIGH})

FlagLevel = Literal["caution", "high", "info"]


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


def runs_in_window(runs: Sequence[RunSummary], end: datetime, days: float) -> list[RunSummary]:
    """Runs that started in ``[end − days, end)``: the "previous N days" before a run starting at ``end``."""
    begin = end - timedelta(days=days)
    return [r for r in runs if begin <= r.start_time < end]


def spike_flag(
    distance_m: float,
    start_time: datetime,
    previous_runs: Sequence[RunSummary],
    *,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> Flag | None:
    """Single-run spike: distance above 1.10× (caution) or 2.0× (high) the previous 30 days' longest run.

    Only the stronger of the two is returned. Silent with fewer than three runs in the window.
    """
    window = runs_in_window(previous_runs, start_time, constants.spike_window_days)
    if len(window) < constants.min_history_runs:
        return None
    longest = max(r.distance_m for r in window)
    if longest <= 0:
        return None
    ratio = distance_m / longest
    facts = {
        "distance_m": distance_m,
        "longest_m": longest,
        "ratio": ratio,
        "window_runs": float(len(window)),
    }
    base = (
        f"{km(distance_m)} is {ratio:.1f}× your longest run of the last "
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
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> Flag | None:
    """Two-week ramp: distance of the last 14 days (this run included) above 1.30× the 14 days before.

    The history requirement applies to the earlier fortnight, the baseline the ratio divides by.
    """
    span = constants.ramp_window_days
    recent = runs_in_window(previous_runs, start_time, span)
    before = runs_in_window(previous_runs, start_time - timedelta(days=span), span)
    if len(before) < constants.min_history_runs:
        return None
    recent_m = distance_m + sum(r.distance_m for r in recent)
    before_m = sum(r.distance_m for r in before)
    if before_m <= 0:
        return None
    ratio = recent_m / before_m
    if ratio <= constants.ramp_ratio:
        return None
    return Flag(
        RAMP,
        "caution",
        f"{km(recent_m)} in the last {span} days is {ratio:.1f}× the {span} days before ({km(before_m)}); "
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
    if value is None or value <= constants.monotony_limit:
        return None
    shown = "very high" if value == float("inf") else f"{value:.1f}"
    return Flag(
        MONOTONY,
        "caution",
        f"Your daily load over the last {days} days has been very uniform (monotony {shown}, above "
        f"{constants.monotony_limit:.1f}); consider making one day clearly easier or a rest day.",
        {"monotony": value, "limit": constants.monotony_limit},
    )


def acwr_flag(acwr_value: float | None, *, constants: LoadConstants = DEFAULT_CONSTANTS) -> Flag | None:
    """ACWR above 1.5, as information. Pass the row's ``acwr``, which is None before 28 days of history."""
    if acwr_value is None or acwr_value <= constants.acwr_high:
        return None
    return Flag(
        ACWR_HIGH,
        "info",
        f"Your last week's load is {acwr_value:.2f}× your longer-term average "
        f"(above {constants.acwr_high:.1f}). "
        "This is information, not a forecast; consider an easier day if your feet feel tired.",
        {"acwr": acwr_value, "limit": constants.acwr_high},
    )


def evaluate_flags(
    run: RunSummary,
    previous_runs: Sequence[RunSummary],
    *,
    last_7_daily_loads: Sequence[float] = (),
    acwr_value: float | None = None,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> list[Flag]:
    """Every flag for ``run``: spike, ramp, monotony, ACWR, in that order.

    ``previous_runs`` are the athlete's runs that started before this one (at least the last 30
    days; 28 for the ramp). ``last_7_daily_loads`` and ``acwr_value`` come from the daily series up to
    the run's local day.
    """
    found = [
        spike_flag(run.distance_m, run.start_time, previous_runs, constants=constants),
        ramp_flag(run.distance_m, run.start_time, previous_runs, constants=constants),
        monotony_flag(last_7_daily_loads, constants=constants),
        acwr_flag(acwr_value, constants=constants),
    ]
    return [f for f in found if f is not None]
