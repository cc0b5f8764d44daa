"""Is a decoded session physically possible? Pure checks run before a session is stored.

A CRC-valid file can still carry nonsense (a 48-day "run", speeds of kilometres per second, a load of 1e21
reference steps), and one such session would make every later figure of the athlete absurd: the daily
series, the averages, the flags. :func:`implausibility` names the first bound a session breaks, in plain words,
so that the caller can reject it with that reason and store nothing. The bounds and why they sit where they
do are in docs/foot-load-model.md, section "Plausibility".

The load bounds are checked on the highest load any stored figure of the run could reach: the cadence factor
at its clamp (whatever the athlete's baseline) and, for runs without cadence, every estimated step at the
top of the estimate's range. So a session that passes cannot be stored with a load above them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from stridecare.domain.load import DEFAULT_CONSTANTS, LoadConstants
from stridecare.domain.load_arrays import SampleColumns, interval_weight_column, run_load
from stridecare.domain.run import ParsedRun

# A cadence baseline this high puts every running step's cadence factor at its clamp: the upper bound of
# what any athlete history could make of the run.
_WORST_BASELINE_SPM = 1.0e6
# Values are capped at this before they are summed, so that a sliding sum cannot overflow; anything near it
# breaks every bound anyway.
_VALUE_CAP = 1.0e12


@dataclass(frozen=True, slots=True)
class PlausibilityBounds:
    """The physical limits of one foot session (defaults documented in docs/foot-load-model.md)."""

    # Timer time: longer than the longest single-stage ultramarathons most watches can record in one go.
    max_timer_s: float = 48 * 3600.0
    # Wall-clock length, pauses included: a watch left recording for a week is not a session.
    max_elapsed_s: float = 7 * 24 * 3600.0
    # Faster than any human over minutes (the 100 m record averages 10.4 m/s over under 10 s).
    max_speed_mps: float = 12.0
    speed_window_s: float = 300.0
    # Above the highest sprint cadences measured (about 5 steps/s, 300 spm only for a few strides).
    max_cadence_spm: float = 260.0
    cadence_window_s: float = 60.0
    # Load: the worked example carries 912 reference steps per km and 182 per minute; a 10 m/s sprint at
    # 200 spm about 1,500 per km and 900 per minute.
    max_load_per_km: float = 20_000.0
    min_distance_for_load_per_km_m: float = 1000.0  # shorter or distance-less sessions: the per-minute bound
    max_load_per_minute: float = 5_000.0


DEFAULT_BOUNDS = PlausibilityBounds()


def implausibility(
    run: ParsedRun,
    *,
    bounds: PlausibilityBounds = DEFAULT_BOUNDS,
    constants: LoadConstants = DEFAULT_CONSTANTS,
    columns: SampleColumns | None = None,
) -> str | None:
    """The plain reason ``run`` cannot be a real foot session, or None when it is within every bound.

    ``columns``: ``run.samples`` already converted (``SampleColumns.of``), for a caller that stores them next."""
    series = _Series.of(columns if columns is not None else SampleColumns.of(run.samples))
    for check in (_non_finite, _negative, _duration, _speed, _cadence, _steps, _load):
        reason = check(run, bounds, constants, series)
        if reason is not None:
            return f"implausible session: {reason}"
    return None


@dataclass(frozen=True, slots=True)
class _Series:
    """A run's sample series as arrays and its interval weights, built once for every check."""

    columns: SampleColumns
    weights: npt.NDArray[np.float64]
    timed_s: float  # Σ weights, summed in order as ``steps.timed_seconds`` does

    @classmethod
    def of(cls, columns: SampleColumns) -> _Series:
        weights = interval_weight_column(columns)
        return cls(
            columns=columns,
            weights=weights,
            # Summed one value after another as Python does (``steps.timed_seconds``), not pairwise as NumPy does.
            timed_s=sum(weights.tolist()),
        )


def first_implausibility(
    runs: Iterable[ParsedRun],
    *,
    bounds: PlausibilityBounds = DEFAULT_BOUNDS,
    constants: LoadConstants = DEFAULT_CONSTANTS,
    columns: Sequence[SampleColumns] | None = None,
) -> str | None:
    """The reason of the first implausible run of ``runs`` (named by its start time), or None. ``columns``: each
    run's samples already converted, in the order of ``runs``."""
    for i, run in enumerate(runs):
        reason = implausibility(
            run, bounds=bounds, constants=constants, columns=columns[i] if columns is not None else None
        )
        if reason is not None:
            return f"{reason} (session starting {run.start_time.isoformat()})"
    return None


def _fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _non_finite(run: ParsedRun, _b: PlausibilityBounds, _c: LoadConstants, series: _Series) -> str | None:
    summary = {
        "elapsed time": run.elapsed_s,
        "timer time": run.timer_s,
        "distance": run.distance_m,
        "steps": run.steps,
        "average cadence": run.avg_cadence_spm,
        "ascent": run.ascent_m,
        "descent": run.descent_m,
        "device step total": run.device_total_strides,
    }
    for name, value in summary.items():
        if value is not None and not math.isfinite(value):
            return f"its {name} is not a finite number ({value})"
    if not np.isfinite(series.columns.t).all():
        return "a sample's time is not a finite number"
    # NaN stands for "not recorded" in sample series; an infinity is a broken value.
    for name, values in (
        ("distance", series.columns.distance_m),
        ("speed", series.columns.speed_mps),
        ("cadence", series.columns.cadence_spm),
        ("altitude", series.columns.altitude_m),
    ):
        if np.isinf(values).any():
            return f"a sample's {name} is infinite"
    return None


def _negative(run: ParsedRun, _b: PlausibilityBounds, _c: LoadConstants, _s: _Series) -> str | None:
    for name, value in (
        ("elapsed time", run.elapsed_s),
        ("timer time", run.timer_s),
        ("distance", run.distance_m),
        ("steps", run.steps),
    ):
        if value < 0:
            return f"its {name} is negative ({value:g})"
    return None


def _duration(run: ParsedRun, b: PlausibilityBounds, _c: LoadConstants, series: _Series) -> str | None:
    timer = max(run.timer_s, series.timed_s)
    if timer > b.max_timer_s:
        return f"timer time {_fmt_hours(timer)} is over the {_fmt_hours(b.max_timer_s)} limit"
    elapsed = max(run.elapsed_s, run.samples.t[-1] if len(run.samples) else 0.0)
    if elapsed > b.max_elapsed_s:
        return f"elapsed time {_fmt_hours(elapsed)} is over the {_fmt_hours(b.max_elapsed_s)} limit"
    return None


def _speed(run: ParsedRun, b: PlausibilityBounds, _c: LoadConstants, series: _Series) -> str | None:
    timer = max(run.timer_s, series.timed_s)
    if timer > 0 and run.distance_m / timer > b.max_speed_mps:
        return f"average speed {run.distance_m / timer:.1f} m/s is over {b.max_speed_mps:g} m/s"
    worst = _worst_window_mean(*_speed_intervals(series), b.speed_window_s)
    if worst is not None and worst > b.max_speed_mps:
        minutes = b.speed_window_s / 60
        return f"speed {worst:.1f} m/s sustained over {minutes:g} min is over {b.max_speed_mps:g} m/s"
    return None


def _cadence(run: ParsedRun, b: PlausibilityBounds, _c: LoadConstants, series: _Series) -> str | None:
    if run.avg_cadence_spm is not None and run.avg_cadence_spm > b.max_cadence_spm:
        return f"average cadence {run.avg_cadence_spm:.0f} steps/min is over {b.max_cadence_spm:g}"
    recorded = ~np.isnan(series.columns.cadence_spm)
    worst = _worst_window_mean(series.columns.cadence_spm[recorded], series.weights[recorded], b.cadence_window_s)
    if worst is not None and worst > b.max_cadence_spm:
        return f"cadence {worst:.0f} steps/min sustained over {b.cadence_window_s:g} s is over {b.max_cadence_spm:g}"
    return None


def _steps(run: ParsedRun, b: PlausibilityBounds, _c: LoadConstants, series: _Series) -> str | None:
    timer = max(run.timer_s, series.timed_s)
    if run.steps > 0 and timer <= 0:
        return f"{run.steps:.0f} steps without any timer time"
    if timer > 0 and run.steps * 60.0 / timer > b.max_cadence_spm:
        return (
            f"{run.steps:.0f} steps in {timer / 60:.0f} min of timer time is {run.steps * 60.0 / timer:.0f} "
            f"steps/min, over {b.max_cadence_spm:g}"
        )
    return None


def worst_case_load(
    run: ParsedRun, constants: LoadConstants = DEFAULT_CONSTANTS, columns: SampleColumns | None = None
) -> tuple[float, float]:
    """``(load, timer seconds)`` of ``run`` at the highest its stored load could be (see the module doc).
    ``columns``: ``run.samples`` already converted."""
    top = replace(
        constants,
        default_cadence_intercept_spm=constants.default_cadence_max_spm,
        default_cadence_slope_spm_per_mps=0.0,
    )
    result = run_load(run, cadence_base_spm=_WORST_BASELINE_SPM, constants=top, columns=columns)
    return result.load, max(run.timer_s, result.running_time_s)


def _load(run: ParsedRun, b: PlausibilityBounds, constants: LoadConstants, series: _Series) -> str | None:
    try:
        load, timer = worst_case_load(run, constants, series.columns)
    except OverflowError:
        return "its load is not a finite number"
    if not math.isfinite(load):
        return "its load is not a finite number"
    if load > 0 and timer <= 0:
        return "a load without any timer time"
    if timer > 0 and load * 60.0 / timer > b.max_load_per_minute:
        return (
            f"load {load * 60.0 / timer:,.0f} reference steps per minute is over {b.max_load_per_minute:,.0f} "
            "(far outside the human range)"
        )
    if run.distance_m >= b.min_distance_for_load_per_km_m and load * 1000.0 / run.distance_m > b.max_load_per_km:
        return (
            f"load {load * 1000.0 / run.distance_m:,.0f} reference steps per km is over {b.max_load_per_km:,.0f} "
            "(far outside the human range)"
        )
    return None


def _speed_intervals(series: _Series) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Speed and seconds of each timed interval: the speed field, else the distance covered since the last
    recorded distance."""
    weights = series.weights
    distance = series.columns.distance_m
    n = len(distance)
    recorded = np.where(~np.isnan(distance), np.arange(n), -1)
    last = np.maximum.accumulate(np.concatenate(([-1], recorded[:-1]))) if n else recorded
    previous = np.where(last >= 0, distance[np.maximum(last, 0)], np.nan)
    timed = weights > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        from_distance = np.maximum(0.0, distance - previous) / np.where(timed, weights, 1.0)
    speed = np.where(np.isnan(series.columns.speed_mps), from_distance, series.columns.speed_mps)
    keep = timed & ~np.isnan(speed)
    return speed[keep], weights[keep]


def _worst_window_mean(
    values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], window_s: float
) -> float | None:
    """The highest time-weighted mean of ``values`` (each held for its ``weights`` seconds) over any run of
    consecutive intervals lasting at least ``window_s`` (the whole series when it is shorter); None for an
    empty series.

    For each interval the window ends at, it starts at the latest interval that still leaves it ``window_s``
    long (prefix sums and a binary search, not a loop per interval)."""
    if not len(values):
        return None
    values = np.minimum(values, _VALUE_CAP)
    total_t = float(weights.sum())
    if total_t <= 0:
        return None
    if total_t <= window_s:
        return float((values * weights).sum()) / total_t
    w_acc = np.concatenate(([0.0], np.cumsum(weights)))
    vw_acc = np.concatenate(([0.0], np.cumsum(values * weights)))
    ends = np.arange(1, len(w_acc))
    # The window over intervals [start, end) with the latest start whose length is still at least window_s.
    starts = np.searchsorted(w_acc, w_acc[ends] - window_s, side="right") - 1
    full = starts >= 0
    ends, starts = ends[full], starts[full]
    lengths = w_acc[ends] - w_acc[starts]
    ok = lengths >= window_s
    if not ok.any():
        return -math.inf
    return float(((vw_acc[ends] - vw_acc[starts])[ok] / lengths[ok]).max())
