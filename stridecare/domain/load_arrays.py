"""The foot-load model over a run's samples, as whole-array arithmetic (NumPy).

The same model as :func:`stridecare.domain.load.run_load_from_samples`, which stays the reference: every
interval rule, gait, force, grade and sum is the one written there, step by step, and
``tests/test_load_arrays.py`` holds the two to 1e-9 over generated runs and the real-file corpus. This one is
what the pipeline runs: a long run's 10,000 samples cost a few NumPy passes instead of a Python loop each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from stridecare.domain.load import (
    CADENCE_RATIO_MAX,
    CADENCE_RATIO_MIN,
    DEFAULT_CONSTANTS,
    DOWNHILL_MIN_GRADE,
    GRADE_HALF_WINDOW_M,
    GRADE_MIN_SPAN_M,
    MAX_SPEED_MPS,
    LoadConstants,
    RunLoadResult,
    _finish,
    _Sums,
    is_female,
    load_from_samples_or_summary,
)
from stridecare.domain.run import ParsedRun, Samples
from stridecare.domain.steps import STANDING_SPEED_MPS, CadenceModel

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def float_column(values: Sequence[float | None]) -> Floats:
    """A sample series as floats, NaN where nothing was recorded (NumPy turns None into NaN for a float dtype)."""
    return np.array(values, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SampleColumns:
    """A run's :class:`~stridecare.domain.run.Samples` as NumPy columns: float64 with NaN where nothing was
    recorded, the timer state as booleans.

    Turning a long run's lists into arrays is a good part of what checking, storing and planning it costs, so a
    caller that does several of those converts once (:meth:`of`) and hands the columns to each."""

    t: Floats
    distance_m: Floats
    speed_mps: Floats
    cadence_spm: Floats
    altitude_m: Floats
    timer_running: Bools

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def of(cls, samples: Samples) -> SampleColumns:
        """The columns of ``samples``, each series converted in one NumPy pass."""
        return cls(
            t=float_column(samples.t),
            distance_m=float_column(samples.distance_m),
            speed_mps=float_column(samples.speed_mps),
            cadence_spm=float_column(samples.cadence_spm),
            altitude_m=float_column(samples.altitude_m),
            timer_running=np.array(samples.timer_running, dtype=bool),
        )


def _weights(t: Floats, running: npt.NDArray[np.bool_]) -> Floats:
    """``steps.interval_weights``: sample ``i`` covers ``(max(0, t[..i-1]), t[i]]`` while the timer runs."""
    before = np.maximum.accumulate(np.concatenate(([0.0], t[:-1]))) if len(t) else t
    dt = t - before
    return np.where(running & (dt > 0), dt, 0.0)


def interval_weight_column(columns: SampleColumns) -> Floats:
    """``steps.interval_weights`` of the run the columns hold, as an array (the same values)."""
    return _weights(columns.t, columns.timer_running)


def _last_before(values: Floats, initial: float) -> Floats:
    """For each index, the last recorded (non-NaN) value before it, ``initial`` when there is none."""
    n = len(values)
    index = np.where(~np.isnan(values), np.arange(n), -1)
    last = np.maximum.accumulate(np.concatenate(([-1], index[:-1]))) if n else index
    return np.where(last >= 0, values[np.maximum(last, 0)], initial)


def _weighted_median(values: Floats, weights: Floats) -> float | None:
    """``load.weighted_median``: sorted by value then weight, the first value whose running weight reaches
    half of the total."""
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if not len(values):
        return None
    order = np.lexsort((weights, values))
    values, acc = values[order], np.cumsum(weights[order])
    total = acc[-1]
    if total <= 0:
        return None
    return float(values[int(np.searchsorted(acc >= total / 2, True))])


def _profile(distance: Floats, altitude: Floats) -> tuple[Floats, Floats]:
    """``load._AltitudeProfile``: the points with both values where distance goes strictly forward."""
    valid = ~np.isnan(distance) & ~np.isnan(altitude)
    d = np.where(valid, distance, -np.inf)
    before = np.maximum.accumulate(np.concatenate(([-np.inf], d[:-1]))) if len(d) else d
    keep = valid & (d > before)
    return distance[keep], altitude[keep]


def _grades(x: Floats, d: Floats, a: Floats) -> Floats:
    """Smoothed grade at each distance ``x``: rise over run across ±``GRADE_HALF_WINDOW_M``, 0 where the
    window is shorter than ``GRADE_MIN_SPAN_M``."""
    lo = np.maximum(d[0], x - GRADE_HALF_WINDOW_M)
    hi = np.minimum(d[-1], x + GRADE_HALF_WINDOW_M)
    span = hi - lo
    wide = span >= GRADE_MIN_SPAN_M
    rise = np.interp(hi, d, a) - np.interp(lo, d, a)
    return np.where(wide, rise / np.where(wide, span, 1.0), 0.0)


def _downhill_weights(grade: Floats, constants: LoadConstants) -> Floats:
    degrees = np.minimum(np.abs(np.degrees(np.arctan(grade))), constants.downhill_cap_degrees)
    return np.where(grade > -DOWNHILL_MIN_GRADE, 0.0, 1.0 + constants.downhill_per_degree * degrees)


def run_load_from_sample_arrays(
    samples: Samples,
    *,
    cadence_base_spm: float | None = None,
    sex: str | None = None,
    mass_kg: float | None = None,
    cadence_model: CadenceModel | None = None,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> RunLoadResult:
    """Load of a run from its sample series: :func:`stridecare.domain.load.run_load_from_samples`, vectorised."""
    return run_load_from_columns(
        SampleColumns.of(samples),
        cadence_base_spm=cadence_base_spm,
        sex=sex,
        mass_kg=mass_kg,
        cadence_model=cadence_model,
        constants=constants,
    )


def run_load_from_columns(
    columns: SampleColumns,
    *,
    cadence_base_spm: float | None = None,
    sex: str | None = None,
    mass_kg: float | None = None,
    cadence_model: CadenceModel | None = None,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> RunLoadResult:
    """:func:`run_load_from_sample_arrays` over series already converted (:class:`SampleColumns`)."""
    weights = _weights(columns.t, columns.timer_running)
    distance = columns.distance_m
    timed = weights > 0

    # Intervals: distance covered since the last recorded distance (the run starts at 0), speed from distance
    # where the sample has none, distance from speed where it has no distance.
    covered = np.maximum(0.0, distance - _last_before(distance, 0.0))
    dt = weights[timed]
    dist, speed = covered[timed], columns.speed_mps[timed]
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = np.where(np.isnan(speed) & ~np.isnan(dist), dist / dt, speed)
    dist = np.where(np.isnan(dist) & ~np.isnan(speed), speed * dt, dist)
    mid = distance[timed] - dist / 2
    cadence = columns.cadence_spm[timed]

    running_time = float(dt.sum())
    total_distance = float(np.nansum(dist))
    fallback = total_distance / running_time if running_time > 0 else 0.0
    v = np.where(np.isnan(speed), fallback, speed)

    cadence_estimated = not bool((~np.isnan(cadence)).any())
    base = None if cadence_estimated else cadence_base_spm
    if not cadence_estimated and not base:
        # The run's own median is the base only without one given (a sort: not paid when it is unused).
        measured = ~np.isnan(cadence) & (cadence > 0) & (cadence >= constants.walk_cadence_max_spm)
        base = _weighted_median(cadence[measured], dt[measured])

    clamped_v = np.minimum(MAX_SPEED_MPS, np.maximum(0.0, v))
    if cadence_estimated:
        if cadence_model is not None:
            low, high = cadence_model.min_spm, cadence_model.max_spm
            line = cadence_model.intercept_spm + cadence_model.slope_spm_per_mps * (v - 3.0)
        else:
            low, high = constants.default_cadence_min_spm, constants.default_cadence_max_spm
            line = constants.default_cadence_intercept_spm + constants.default_cadence_slope_spm_per_mps * (v - 3.0)
        spm = np.where(v >= STANDING_SPEED_MPS, np.minimum(high, np.maximum(low, line)), 0.0)
        walking = v < constants.walk_speed_max_mps
        factor: Floats | float = 1.0
    else:
        spm = np.where(np.isnan(cadence), 0.0, cadence)
        walking = np.where(spm > 0, spm < constants.walk_cadence_max_spm, v < constants.walk_speed_max_mps)
        if base is None or base <= 0:
            factor = 1.0
        else:
            ratio = np.minimum(CADENCE_RATIO_MAX, np.maximum(CADENCE_RATIO_MIN, spm / base))
            factor = np.where(spm > 0, ratio ** (-constants.cadence_k), 1.0)
    female = is_female(sex)
    a = constants.force_a_female if female else constants.force_a
    b = constants.force_b_female if female else constants.force_b
    run_force = math.pi / 2 * (a + b * clamped_v) * factor
    walk_force = np.minimum(
        constants.walk_force_max_bw,
        np.maximum(constants.walk_force_min_bw, constants.walk_force_a + constants.walk_force_b * clamped_v),
    )
    force = np.where(walking, walk_force, run_force)
    n = spm * dt / 60.0
    steps = n > 0
    n, force, walking, mid = n[steps], force[steps], walking[steps], mid[steps]

    sums = _Sums()
    sums.walking_steps = float(n[walking].sum())
    sums.running_steps = float(n[~walking].sum())
    sums.force_steps = float((n * force).sum())
    sums.max_force = float(force.max()) if len(force) else 0.0
    sums.load = float((n * (force / constants.reference_force_bw) ** constants.exponent).sum())
    sums.stimulus = float((n / 2 * force**constants.exponent).sum())

    d, alt = _profile(distance, columns.altitude_m)
    grade_available = len(d) >= 2 and float(d[-1] - d[0]) >= GRADE_MIN_SPAN_M
    if grade_available:
        known = ~np.isnan(mid)
        grades = _grades(mid[known], d, alt)
        sums.downhill = float((n[known] * _downhill_weights(grades, constants)).sum())

    return _finish(
        sums,
        distance_m=total_distance,
        running_time_s=running_time,
        mass_kg=mass_kg,
        cadence_base_spm=base,
        cadence_estimated=cadence_estimated,
        grade_available=grade_available,
        method="samples",
        constants=constants,
    )


def run_load(
    run: ParsedRun,
    *,
    cadence_base_spm: float | None = None,
    cadence_history: Sequence[tuple[float, float]] = (),
    sex: str | None = None,
    mass_kg: float | None = None,
    constants: LoadConstants = DEFAULT_CONSTANTS,
    columns: SampleColumns | None = None,
) -> RunLoadResult:
    """:func:`stridecare.domain.load.run_load`, the samples integrated on NumPy columns (:func:`run_load_from_columns`).

    ``columns``: the run's samples already converted (:class:`SampleColumns`); ``run.samples`` is then not read,
    so a caller holding only the columns (a stored run's sample blob) passes a run without samples."""
    if columns is None:
        columns = SampleColumns.of(run.samples)
    # The reference's choice between the samples and the summary, made on the columns.
    return load_from_samples_or_summary(
        run,
        timed=len(columns) > 0 and bool(columns.timer_running.any()),
        integrate=partial(run_load_from_columns, columns),
        cadence_base_spm=cadence_base_spm,
        cadence_history=cadence_history,
        sex=sex,
        mass_kg=mass_kg,
        constants=constants,
    )
