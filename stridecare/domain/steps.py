"""Step counting: cadence units, stream integration, and estimates when a device recorded no cadence.

Pure functions (stdlib only) implementing section 1 of the foot-load model. Every source calls these so that
a run from a FIT file, a Strava stream or a Strava summary is counted the same way.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from stridecare.domain.run import CadenceSource, Samples

# A median per-foot cadence above this is impossible for a human (it would be > 240 steps/min), so the device
# must already have written steps per minute.
STEPS_PER_MIN_THRESHOLD = 120.0

# Below this speed an athlete whose timer runs is standing (traffic light, watch still on): an estimated
# cadence must not invent steps for it. 0.3 m/s is well under the slowest walk (~0.8 m/s).
STANDING_SPEED_MPS = 0.3


class CadenceConstants(Protocol):
    """The default cadence-vs-speed constants; ``stridecare.settings.LoadModelSettings`` satisfies this."""

    @property
    def default_cadence_intercept_spm(self) -> float: ...

    @property
    def default_cadence_slope_spm_per_mps(self) -> float: ...

    @property
    def default_cadence_min_spm(self) -> float: ...

    @property
    def default_cadence_max_spm(self) -> float: ...


@dataclass(frozen=True, slots=True)
class DefaultCadence:
    """The model's literature default ``c(v) = 160 + 8 (v − 3)`` spm clamped to 150–190, without settings."""

    default_cadence_intercept_spm: float = 160.0
    default_cadence_slope_spm_per_mps: float = 8.0
    default_cadence_min_spm: float = 150.0
    default_cadence_max_spm: float = 190.0


DEFAULT_CADENCE = DefaultCadence()


@dataclass(frozen=True, slots=True)
class CadenceModel:
    """An athlete's own least-squares line ``spm = intercept + slope · (v − 3)``, clamped like the default.

    The line is centred at 3 m/s so that the intercept reads as "cadence at an easy pace", like the default's
    160.
    """

    intercept_spm: float
    slope_spm_per_mps: float
    min_spm: float = 150.0
    max_spm: float = 190.0
    n_runs: int = 0

    def predict(self, speed_mps: float) -> float:
        """Steps per minute at ``speed_mps``, clamped to the model's range."""
        spm = self.intercept_spm + self.slope_spm_per_mps * (speed_mps - 3.0)
        return min(self.max_spm, max(self.min_spm, spm))


def normalise_cadence(raw_values: Sequence[float | None]) -> tuple[list[float | None], bool]:
    """Convert a run's raw cadence values to steps per minute.

    ``raw_values`` are what the device wrote (FIT ``cadence + fractional_cadence``, Strava's cadence stream):
    normally strides (one foot) per minute. Unit trap: some devices already write steps per minute, so if the
    median of the positive values is above 120 the values are kept as they are; otherwise they are doubled.

    Returns the converted list (``None`` stays ``None``) and whether doubling happened. A run without any
    positive value is doubled (the documented unit) and its zeros stay zeros.
    """
    positive = [v for v in raw_values if v is not None and v > 0]
    already_steps = bool(positive) and statistics.median(positive) > STEPS_PER_MIN_THRESHOLD
    if already_steps:
        return [None if v is None else float(v) for v in raw_values], False
    return [None if v is None else 2.0 * v for v in raw_values], True


def interval_weights(samples: Samples) -> list[float]:
    """Seconds each sample stands for when integrating a rate over the timed part of a run.

    Convention (shared by every integral so that steps, load and time agree): sample ``i`` covers the interval
    ``(t[i-1], t[i]]`` and the rate it carries holds over that interval; the first sample covers ``(0,
    t[0]]``, i.e. from the run's start. An interval counts only when ``timer_running[i]`` is True; sources
    set it False for a sample recorded while the timer was stopped *and* for the first sample after a resume,
    so an interval that spans a pause never counts. Long gaps are not capped: smart recording writes every
    1–9 s. Out-of-order or duplicate times give zero weight rather than a negative one.
    """
    import numpy as np  # deferred: start-up time (the settings import this module; NumPy costs 80 ms)

    t = np.asarray(samples.t, dtype=np.float64)
    if not len(t):
        return []
    before = np.maximum.accumulate(np.concatenate(([0.0], t[:-1])))
    dt = t - before
    weights: list[float] = np.where(np.asarray(samples.timer_running, dtype=bool) & (dt > 0), dt, 0.0).tolist()
    return weights


def steps_from_samples(samples: Samples) -> float:
    """Steps of a run from its cadence stream: Σ spm × Δt / 60 over intervals while the timer runs.

    Uses ``interval_weights`` (each interval attributed to the cadence of the sample that ends it). Samples
    without a cadence value contribute nothing.
    """
    total = 0.0
    for spm, dt in zip(samples.cadence_spm, interval_weights(samples), strict=True):
        if spm is not None and dt > 0:
            total += spm * dt / 60.0
    return total


def timed_seconds(samples: Samples) -> float:
    """Seconds of the run covered by samples while the timer ran (the denominator of an average cadence)."""
    return sum(interval_weights(samples))


def estimate_cadence_spm(
    speed_mps: float, constants: CadenceConstants = DEFAULT_CADENCE, model: CadenceModel | None = None
) -> float:
    """Estimated steps per minute at ``speed_mps`` for a run recorded without cadence.

    Uses the athlete's own ``model`` when the caller has one (see ``fit_cadence_model``), otherwise the
    default ``c(v) = intercept + slope (v − 3)`` clamped to [min, max] from ``constants`` (160 + 8 (v − 3),
    150–190: cadence barely changes with speed, Cavanagh & Kram 1989; Dorn et al. 2012).
    """
    if model is not None:
        return model.predict(speed_mps)
    spm = constants.default_cadence_intercept_spm + constants.default_cadence_slope_spm_per_mps * (speed_mps - 3.0)
    return min(constants.default_cadence_max_spm, max(constants.default_cadence_min_spm, spm))


def steps_estimated_from_speed(
    samples: Samples, constants: CadenceConstants = DEFAULT_CADENCE, model: CadenceModel | None = None
) -> float | None:
    """Steps of a run without cadence, estimating each timed interval's cadence from its speed.

    Intervals slower than a standing threshold count no steps (a running timer at a red light is not
    stepping). Returns None when no sample carries a speed, so the caller can fall back to the run's average
    speed.
    """
    if not any(v is not None for v in samples.speed_mps):
        return None
    total = 0.0
    for v, dt in zip(samples.speed_mps, interval_weights(samples), strict=True):
        if v is not None and dt > 0 and v >= STANDING_SPEED_MPS:
            total += estimate_cadence_spm(v, constants, model) * dt / 60.0
    return total


def steps_from_average_speed(
    distance_m: float,
    timer_s: float,
    constants: CadenceConstants = DEFAULT_CADENCE,
    model: CadenceModel | None = None,
) -> float:
    """Steps of a summary-only run without cadence: c(average speed) × timer / 60 (0 for a zero timer)."""
    if timer_s <= 0:
        return 0.0
    return estimate_cadence_spm(distance_m / timer_s, constants, model) * timer_s / 60.0


def fit_cadence_model(
    pairs: Iterable[tuple[float, float]],
    constants: CadenceConstants = DEFAULT_CADENCE,
    min_runs: int = 5,
) -> CadenceModel | None:
    """Least-squares cadence-vs-speed line from the athlete's own runs that had cadence.

    ``pairs`` are ``(average speed m/s, average cadence steps/min)``, one per run (the caller reads them from
    history). Returns None below ``min_runs`` valid pairs (the model's threshold is five), and a flat line at
    the mean cadence when all speeds are equal (no slope can be learnt then). The clamp range is the
    default's, so a
    wild extrapolation cannot produce an absurd estimate.
    """
    valid = [(v, c) for v, c in pairs if v > 0 and c > 0]
    if len(valid) < min_runs:
        return None
    n = len(valid)
    mean_x = sum(v - 3.0 for v, _ in valid) / n
    mean_y = sum(c for _, c in valid) / n
    sxx = sum((v - 3.0 - mean_x) ** 2 for v, _ in valid)
    sxy = sum((v - 3.0 - mean_x) * (c - mean_y) for v, c in valid)
    slope = sxy / sxx if sxx > 1e-12 else 0.0
    intercept = mean_y - slope * mean_x
    return CadenceModel(
        intercept_spm=intercept,
        slope_spm_per_mps=slope,
        min_spm=constants.default_cadence_min_spm,
        max_spm=constants.default_cadence_max_spm,
        n_runs=n,
    )


def count_steps(
    samples: Samples,
    *,
    distance_m: float,
    timer_s: float,
    session_steps: float | None = None,
    constants: CadenceConstants = DEFAULT_CADENCE,
    model: CadenceModel | None = None,
) -> tuple[float, CadenceSource, float | None]:
    """A run's steps, where they came from, and its average steps/min: the one rule every source applies.

    Strongest evidence first (model section 1): the cadence stream when any timed sample carries a positive
    cadence (it wins over a disagreeing device total); else ``session_steps``, the source's own count (a FIT
    session's ``total_strides`` × 2, or a summary's average cadence × time, see :func:`steps_from_summary`);
    else an estimate from speed, per sample where samples carry speed, otherwise from the average speed.
    """
    weights = interval_weights(samples)
    if any(c is not None and c > 0 and w > 0 for c, w in zip(samples.cadence_spm, weights, strict=True)):
        steps = steps_from_samples(samples)
        timed = timed_seconds(samples)
        return steps, CadenceSource.STREAM, (steps * 60.0 / timed if timed > 0 else None)

    def per_minute(steps: float) -> float | None:
        return steps * 60.0 / timer_s if timer_s > 0 else None

    if session_steps is not None and session_steps > 0:
        return session_steps, CadenceSource.SESSION, per_minute(session_steps)
    estimated = steps_estimated_from_speed(samples, constants, model)
    if estimated is None:
        estimated = steps_from_average_speed(distance_m, timer_s, constants, model)
    return estimated, CadenceSource.ESTIMATED, per_minute(estimated)


def steps_from_summary(avg_cadence_per_foot: float, moving_time_s: float) -> float:
    """Steps of a summary-only run (a Strava activity without streams): 2 × avg cadence × moving time / 60.

    ``avg_cadence_per_foot`` is per foot, as Strava reports runs. The unit trap applies here too: an average
    above 120 is already steps per minute and is not doubled.
    """
    if avg_cadence_per_foot <= 0 or moving_time_s <= 0:
        return 0.0
    factor = 1.0 if avg_cadence_per_foot > STEPS_PER_MIN_THRESHOLD else 2.0
    return factor * avg_cadence_per_foot * moving_time_s / 60.0


# The step lengths a foot can take, in metres, by gait. A running step is about 0.8–1.6 m from a jog to a fast
# race (elite sprinters reach ~2.4 m); below 0.4 m is a shuffle no one runs a session in. A walking or hiking
# step is about 0.5–0.9 m; 0.25 m is a shuffle, 1.3 m a lunge. Outside these the recorded cadence cannot be what
# the feet did (a foot pod dropping out, half the steps counted): the steps are estimated instead.
STEP_LENGTH_M = {"running": (0.4, 2.5), "walking": (0.25, 1.3), "hiking": (0.25, 1.3)}
# Below this distance a step length says little (a few steps at a standstill).
STEP_CHECK_MIN_DISTANCE_M = 200.0


def impossible_step_length(steps: float, distance_m: float, sport: str) -> str | None:
    """Why ``steps`` over ``distance_m`` cannot be the steps of a ``sport`` session (None when they can)."""
    bounds = STEP_LENGTH_M.get(sport)
    if bounds is None or distance_m < STEP_CHECK_MIN_DISTANCE_M:
        return None
    if steps <= 0:
        return f"no steps recorded over {distance_m / 1000:.2f} km"
    length = distance_m / steps
    low, high = bounds
    if low <= length <= high:
        return None
    km = distance_m / 1000
    return f"{steps:,.0f} recorded steps over {km:.2f} km is {length:.2f} m a step, outside {low}–{high} m"
