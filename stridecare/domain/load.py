"""The foot-load model, version 2 (docs/foot-load-model.md, sections 1-3 and walking).

Each timed interval has a gait: walking below 140 steps/min (without cadence: below 1.9 m/s), running
otherwise. Force of one running step in body weights: ``F = (π/2)(a + b·v)(c/c_base)^(-k)``; of one walking
step ``F_walk = 1.05 + 0.10·v`` clamped to 1.0–1.5. Load of a run in reference-step
equivalents: ``L = Σ n·(F/2.5)^4``. Per-foot stimulus sum ``Σ (n/2)·F^4`` and ``ψ = (Σ ...)^(1/4)``. A
separate downhill-impact figure weights downhill steps by ``1 + 0.06·|θ°|``; only the routine rules use it.

Samples are integrated with the step counter's convention (``stridecare.domain.steps.interval_weights``):
sample ``i`` carries the interval ``(t[i-1], t[i]]``, counted only while the timer runs, so the load's step
count is the stored step count. A lap is additive when its ``t`` and ``distance_m`` start where the previous
lap ended.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Literal

from stridecare.domain.run import ParsedRun, Samples
from stridecare.domain.steps import (
    STANDING_SPEED_MPS,
    CadenceModel,
    estimate_cadence_spm,
    fit_cadence_model,
    interval_weights,
)

MODEL_VERSION = 2
GRAVITY = 9.81

# Half-width of the distance window used to smooth grade. Barometric altitude jitters by ±0.3 m sample to
# sample; over a 50 m baseline that is under 1 % grade, which the downhill threshold below absorbs.
GRADE_HALF_WINDOW_M = 25.0
# Shorter baselines (near the ends of a track) turn altitude noise into steep fake grades.
GRADE_MIN_SPAN_M = 10.0
# Only grades steeper than this count as downhill, so altimeter noise on flat ground adds nothing.
DOWNHILL_MIN_GRADE = 0.01

# No human runs faster (the 100 m record peaks at about 12.4 m/s): a faster sample is a GPS or sensor glitch,
# and its step gets the force at this speed instead of one that would outweigh the whole run.
MAX_SPEED_MPS = 12.0
# The range of c / c_base over which the cadence factor follows its power law (see ``cadence_factor``).
CADENCE_RATIO_MIN = 0.8
CADENCE_RATIO_MAX = 1.25

_FEMALE = frozenset({"f", "female", "w", "woman"})


@dataclass(frozen=True, slots=True)
class LoadConstants:
    """Every constant of the model, defaults as in the design; a plain value object the domain can carry.

    The application builds one per settings object from ``STRIDECARE_LOAD_*`` (``LoadModelSettings.constants``,
    through :func:`load_constants_from_settings`); every field here is one of those settings.
    """

    force_a: float = 1.27
    force_b: float = 0.105
    force_a_female: float = 1.24
    force_b_female: float = 0.106
    cadence_k: float = 0.4
    reference_force_bw: float = 2.5
    exponent: float = 4.0
    downhill_per_degree: float = 0.06
    downhill_cap_degrees: float = 9.0
    default_mass_kg: float = 70.0
    acute_days: int = 7
    chronic_days: int = 28
    acwr_min_history_days: int = 28
    spike_caution: float = 1.10
    spike_high: float = 2.0
    spike_window_days: int = 30
    ramp_ratio: float = 1.30
    ramp_window_days: int = 14
    monotony_limit: float = 2.0
    monotony_days: int = 7
    acwr_high: float = 1.5
    long_run_absolute_min: float = 90.0
    long_run_relative_min: float = 45.0
    long_run_distance_ratio: float = 1.10
    long_run_percentile: float = 90.0
    long_run_percentile_weeks: int = 12
    min_history_runs: int = 3
    cadence_baseline_days: int = 90
    default_cadence_intercept_spm: float = 160.0
    default_cadence_slope_spm_per_mps: float = 8.0
    default_cadence_min_spm: float = 150.0
    default_cadence_max_spm: float = 190.0
    cadence_fit_min_runs: int = 5
    # Walking (model version 2): gait thresholds and the walking force line (Keller et al. 1996).
    walk_cadence_max_spm: float = 140.0
    walk_speed_max_mps: float = 1.9
    walk_force_a: float = 1.05
    walk_force_b: float = 0.10
    walk_force_min_bw: float = 1.0
    walk_force_max_bw: float = 1.5


DEFAULT_CONSTANTS = LoadConstants()

Gait = Literal["walking", "running"]


def load_constants_from_settings(settings: object) -> LoadConstants:
    """The model constants from a settings object that has one attribute per field (``LoadModelSettings``).

    Duck-typed so that the domain never imports the settings framework; a missing attribute is an error, not
    a silent default, so a constant cannot exist without its setting.
    """
    values: dict[str, object] = {}
    for f in fields(LoadConstants):
        raw = getattr(settings, f.name)
        values[f.name] = int(raw) if isinstance(f.default, int) else float(raw)
    return LoadConstants(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RunLoadResult:
    """The model's figures for one run (or one lap).

    ``steps`` is ``walking_steps + running_steps``: each timed interval's steps go to the gait of that
    interval (see :func:`gait_of`).

    ``peak_force_bw`` is the step-weighted mean of the per-step peak force, ``mean_force_bw`` the same steps'
    contact-average force (peak × 2/π); ``max_force_bw`` is the highest interval's peak. ``downhill_impact``
    is 0 when the run has no usable altitude (``grade_available`` False) and must then be left out of medians.
    """

    load: float
    stimulus_sum: float
    psi: float
    downhill_impact: float
    peak_force_bw: float
    mean_force_bw: float
    max_force_bw: float
    peak_force_n: float
    steps: float
    walking_steps: float
    running_steps: float
    distance_m: float
    running_time_s: float
    mass_kg: float
    cadence_base_spm: float | None
    cadence_estimated: bool
    grade_available: bool
    method: Literal["samples", "summary"]
    model_version: int = MODEL_VERSION


# -- single-step physics ------------------------------------------------------------------


def is_female(sex: str | None) -> bool:
    """True when ``sex`` names the female coefficients (``"f"``, ``"female"``, ``"w"``, ``"woman"``)."""
    return sex is not None and sex.strip().lower() in _FEMALE


def contact_force_bw(
    speed_mps: float, *, sex: str | None = None, constants: LoadConstants = DEFAULT_CONSTANTS
) -> float:
    """Average vertical force during ground contact, body weights: ``a + b·v`` (Weyand & Davis 2005), with
    ``v`` limited to 0–12 m/s."""
    v = min(MAX_SPEED_MPS, max(0.0, speed_mps))
    if is_female(sex):
        return constants.force_a_female + constants.force_b_female * v
    return constants.force_a + constants.force_b * v


def cadence_factor(
    cadence_spm: float | None, cadence_base_spm: float | None, *, constants: LoadConstants = DEFAULT_CONSTANTS
) -> float:
    """``(c / c_base)^(−k)`` with ``c / c_base`` clamped to 0.8–1.25; 1 when either cadence is unknown.

    The cadence effect is measured within about ±10 % of the usual cadence (Firminger et al. 2017); the clamp
    keeps a wild baseline (another athlete's runs, a misread stream) from scaling a run's force without limit.
    """
    if cadence_spm is None or cadence_base_spm is None or cadence_spm <= 0 or cadence_base_spm <= 0:
        return 1.0
    ratio = min(CADENCE_RATIO_MAX, max(CADENCE_RATIO_MIN, cadence_spm / cadence_base_spm))
    return float(ratio ** (-constants.cadence_k))


def step_force_bw(
    speed_mps: float,
    cadence_spm: float | None = None,
    cadence_base_spm: float | None = None,
    *,
    sex: str | None = None,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> float:
    """Peak force of one step in body weights, ``F = (π/2)(a + b·v)(c/c_base)^(−k)``."""
    contact = contact_force_bw(speed_mps, sex=sex, constants=constants)
    return math.pi / 2 * contact * cadence_factor(cadence_spm, cadence_base_spm, constants=constants)


def gait_of(cadence_spm: float | None, speed_mps: float, *, constants: LoadConstants = DEFAULT_CONSTANTS) -> Gait:
    """Walking below 140 steps/min (walkers step at 90–125, runners rarely below 150); without a measured
    cadence, walking below 1.9 m/s; running otherwise."""
    if cadence_spm is not None and cadence_spm > 0:
        return "walking" if cadence_spm < constants.walk_cadence_max_spm else "running"
    return "walking" if speed_mps < constants.walk_speed_max_mps else "running"


def walking_force_bw(speed_mps: float, *, constants: LoadConstants = DEFAULT_CONSTANTS) -> float:
    """Peak force of one walking step in body weights: ``1.05 + 0.10·v`` clamped to 1.0–1.5 (1.2 at 1.5 m/s)."""
    force = constants.walk_force_a + constants.walk_force_b * min(MAX_SPEED_MPS, max(0.0, speed_mps))
    return min(constants.walk_force_max_bw, max(constants.walk_force_min_bw, force))


def force_newtons(
    force_bw: float, mass_kg: float | None = None, *, constants: LoadConstants = DEFAULT_CONSTANTS
) -> float:
    """Body weights to newtons: ``F × mass × 9.81``, with the default mass when the athlete gave none."""
    mass = constants.default_mass_kg if mass_kg is None else mass_kg
    return force_bw * mass * GRAVITY


def reference_steps(n_steps: float, force_bw: float, *, constants: LoadConstants = DEFAULT_CONSTANTS) -> float:
    """Load of ``n_steps`` steps at ``force_bw``: ``n·(F/2.5)^4``."""
    return float(n_steps * (force_bw / constants.reference_force_bw) ** constants.exponent)


def downhill_weight(grade: float, *, constants: LoadConstants = DEFAULT_CONSTANTS) -> float:
    """Impact weight of a step at ``grade`` (rise/run): ``1 + 0.06·|θ°|`` downhill, capped at 9°; else 0.

    Zero off downhill keeps the figure a pure downhill measure, so a flat long run does not look "hilly".
    """
    if grade > -DOWNHILL_MIN_GRADE:
        return 0.0
    degrees = min(abs(math.degrees(math.atan(grade))), constants.downhill_cap_degrees)
    return 1.0 + constants.downhill_per_degree * degrees


# -- cadence helpers ------------------------------------------------------------------


def baseline_cadence_spm(
    history: Sequence[tuple[float, float]],
    speed_mps: float,
    *,
    tolerance_mps: float = 0.3,
    min_points: int = 3,
) -> float | None:
    """Median cadence at similar speed: ``history`` is (speed m/s, cadence spm) of the athlete's last 90 days.

    The caller chooses the points (whole runs or laps); None when fewer than ``min_points`` lie within
    ``tolerance_mps`` of ``speed_mps``, and the run's own median then stands in (factor 1).
    """
    near = [c for v, c in history if abs(v - speed_mps) <= tolerance_mps and c > 0]
    if len(near) < min_points:
        return None
    return float(statistics.median(near))


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float | None:
    """Median of ``values`` weighted by ``weights`` (time-weighted: samples come at uneven intervals)."""
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=True) if w > 0)
    total = sum(w for _, w in pairs)
    if total <= 0:
        return None
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= total / 2:
            return v
    return pairs[-1][0]


# -- grade ------------------------------------------------------------------


class _AltitudeProfile:
    """Altitude as a function of cumulative distance, linearly interpolated, for smoothed grades."""

    def __init__(self, distance: Sequence[float | None], altitude: Sequence[float | None]) -> None:
        self.d: list[float] = []
        self.a: list[float] = []
        for d, a in zip(distance, altitude, strict=True):
            if d is None or a is None or math.isnan(d) or math.isnan(a):
                continue
            if self.d and d <= self.d[-1]:
                continue  # a distance that goes back or stands still adds no slope information
            self.d.append(d)
            self.a.append(a)

    @property
    def usable(self) -> bool:
        return len(self.d) >= 2 and self.d[-1] - self.d[0] >= GRADE_MIN_SPAN_M

    def _alt(self, x: float) -> float:
        j = bisect.bisect_left(self.d, x)
        if j <= 0:
            return self.a[0]
        if j >= len(self.d):
            return self.a[-1]
        d0, d1 = self.d[j - 1], self.d[j]
        return self.a[j - 1] + (self.a[j] - self.a[j - 1]) * (x - d0) / (d1 - d0)

    def grade_at(self, x: float) -> float:
        lo = max(self.d[0], x - GRADE_HALF_WINDOW_M)
        hi = min(self.d[-1], x + GRADE_HALF_WINDOW_M)
        if hi - lo < GRADE_MIN_SPAN_M:
            return 0.0
        return (self._alt(hi) - self._alt(lo)) / (hi - lo)


# -- run load ------------------------------------------------------------------


@dataclass(slots=True)
class _Interval:
    dt: float
    distance: float | None
    speed: float | None
    cadence: float | None
    mid_distance: float | None


def _clean(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def _intervals(samples: Samples) -> list[_Interval]:
    """Timed intervals under the step counter's convention (``steps.interval_weights``), so that the load's
    step count equals the stored one: sample ``i`` carries the interval ``(t[i-1], t[i]]``."""
    out: list[_Interval] = []
    prev_d: float | None = 0.0  # the run starts at distance 0, like the first interval starts at t = 0
    for i, dt in enumerate(interval_weights(samples)):
        d = _clean(samples.distance_m[i])
        if dt > 0:
            dist = max(0.0, d - prev_d) if d is not None and prev_d is not None else None
            speed = _clean(samples.speed_mps[i])
            if speed is None and dist is not None:
                speed = dist / dt
            if dist is None and speed is not None:
                dist = speed * dt
            mid = d - dist / 2 if d is not None and dist is not None else None
            out.append(_Interval(dt, dist, speed, _clean(samples.cadence_spm[i]), mid))
        if d is not None:
            prev_d = d
    return out


@dataclass(slots=True)
class _Sums:
    """Running totals of one run's integral, by gait where the split matters."""

    load: float = 0.0
    stimulus: float = 0.0
    downhill: float = 0.0
    force_steps: float = 0.0
    walking_steps: float = 0.0
    running_steps: float = 0.0
    max_force: float = 0.0

    def add(self, n: float, force: float, gait: Gait, constants: LoadConstants) -> None:
        if gait == "walking":
            self.walking_steps += n
        else:
            self.running_steps += n
        self.force_steps += n * force
        self.max_force = max(self.max_force, force)
        self.load += reference_steps(n, force, constants=constants)
        self.stimulus += n / 2 * force**constants.exponent


def _finish(
    sums: _Sums,
    *,
    distance_m: float,
    running_time_s: float,
    mass_kg: float | None,
    cadence_base_spm: float | None,
    cadence_estimated: bool,
    grade_available: bool,
    method: Literal["samples", "summary"],
    constants: LoadConstants,
) -> RunLoadResult:
    steps = sums.walking_steps + sums.running_steps
    peak = sums.force_steps / steps if steps > 0 else 0.0
    mass = constants.default_mass_kg if mass_kg is None else mass_kg
    return RunLoadResult(
        load=sums.load,
        stimulus_sum=sums.stimulus,
        psi=sums.stimulus ** (1.0 / constants.exponent) if sums.stimulus > 0 else 0.0,
        downhill_impact=sums.downhill,
        peak_force_bw=peak,
        mean_force_bw=peak * 2 / math.pi,
        max_force_bw=sums.max_force,
        peak_force_n=force_newtons(peak, mass, constants=constants),
        steps=steps,
        walking_steps=sums.walking_steps,
        running_steps=sums.running_steps,
        distance_m=distance_m,
        running_time_s=running_time_s,
        mass_kg=mass,
        cadence_base_spm=cadence_base_spm,
        cadence_estimated=cadence_estimated,
        grade_available=grade_available,
        method=method,
    )


def _step_force(
    gait: Gait,
    speed: float,
    cadence: float | None,
    base: float | None,
    sex: str | None,
    constants: LoadConstants,
) -> float:
    if gait == "walking":
        return walking_force_bw(speed, constants=constants)
    return step_force_bw(speed, cadence, base, sex=sex, constants=constants)


def run_load_from_samples(
    samples: Samples,
    *,
    cadence_base_spm: float | None = None,
    sex: str | None = None,
    mass_kg: float | None = None,
    cadence_model: CadenceModel | None = None,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> RunLoadResult:
    """Load of a run from its sample series (cadence already in steps/min), counting only timer-running time.

    Each interval is walked or run (:func:`gait_of`) and gets that gait's force. ``cadence_base_spm`` is the
    athlete's usual running cadence at this speed (see :func:`baseline_cadence_spm`); when None the run's own
    time-weighted median cadence of its running intervals stands in, so a steady run gets factor 1 and walk
    breaks do not move it. As in the step counter, an interval without cadence adds no steps. A run with no
    cadence at all gets its cadence from speed (``cadence_model`` or the design's default curve), its gait from
    speed, and factor 1: an estimate must not move the force.
    """
    intervals = _intervals(samples)
    running_time = sum(iv.dt for iv in intervals)
    total_distance = sum(iv.distance or 0.0 for iv in intervals)
    fallback_speed = total_distance / running_time if running_time > 0 else 0.0

    def speed_of(iv: _Interval) -> float:
        return iv.speed if iv.speed is not None else fallback_speed

    measured = [
        (iv.cadence, iv.dt)
        for iv in intervals
        if iv.cadence is not None
        and iv.cadence > 0
        and gait_of(iv.cadence, speed_of(iv), constants=constants) == "running"
    ]
    run_median = weighted_median([c for c, _ in measured], [w for _, w in measured])
    cadence_estimated = not any(iv.cadence is not None for iv in intervals)
    base = None if cadence_estimated else (cadence_base_spm or run_median)

    profile = _AltitudeProfile(samples.distance_m, samples.altitude_m)
    grade_available = profile.usable

    sums = _Sums()
    for iv in intervals:
        v = speed_of(iv)
        if cadence_estimated:
            # Same standing threshold as the step counter: a running timer at a red light is not stepping.
            cadence = estimate_cadence_spm(v, constants, cadence_model) if v >= STANDING_SPEED_MPS else 0.0
            gait = gait_of(None, v, constants=constants)
            force = _step_force(gait, v, None, None, sex, constants)
        else:
            cadence = iv.cadence or 0.0
            gait = gait_of(cadence, v, constants=constants)
            force = _step_force(gait, v, cadence, base, sex, constants)
        n = cadence * iv.dt / 60.0
        if n <= 0:
            continue
        sums.add(n, force, gait, constants)
        if grade_available and iv.mid_distance is not None:
            sums.downhill += n * downhill_weight(profile.grade_at(iv.mid_distance), constants=constants)

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


def run_load_from_summary(
    *,
    distance_m: float,
    timer_s: float,
    avg_cadence_spm: float | None,
    steps: float | None = None,
    cadence_base_spm: float | None = None,
    sex: str | None = None,
    mass_kg: float | None = None,
    cadence_model: CadenceModel | None = None,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> RunLoadResult:
    """Load of a summary-only run (no samples): every step at the average speed and cadence, in one gait.

    ``steps`` wins when given (the source's own count); otherwise ``avg_cadence_spm × timer_s / 60``, and
    without cadence the estimated cadence at the average speed. The 4th power makes an average-pace figure
    slightly low for an uneven run; there is no downhill figure.
    """
    v = distance_m / timer_s if timer_s > 0 else 0.0
    cadence: float | None = avg_cadence_spm if avg_cadence_spm is not None and avg_cadence_spm > 0 else None
    cadence_estimated = cadence is None
    spm = cadence if cadence is not None else estimate_cadence_spm(v, constants, cadence_model)
    n = steps if steps is not None and steps > 0 else spm * max(0.0, timer_s) / 60.0
    base = None if cadence is None else (cadence_base_spm or cadence)
    gait = gait_of(cadence, v, constants=constants)
    sums = _Sums()
    if n > 0:
        sums.add(n, _step_force(gait, v, cadence, base, sex, constants), gait, constants)
    return _finish(
        sums,
        distance_m=distance_m,
        running_time_s=max(0.0, timer_s),
        mass_kg=mass_kg,
        cadence_base_spm=base,
        cadence_estimated=cadence_estimated,
        grade_available=False,
        method="summary",
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
    from_samples: Callable[..., RunLoadResult] = run_load_from_samples,
) -> RunLoadResult:
    """Load of a normalised run: from its samples when they hold timed steps, else from its summary.

    ``cadence_history`` holds ``(average speed m/s, average steps/min)`` of the athlete's recent runs with
    measured cadence: once there are ``cadence_fit_min_runs`` of them, a run without cadence gets its cadence
    from the athlete's own line (``steps.fit_cadence_model``) instead of the default curve. ``from_samples``
    integrates the samples: this module's reference loop by default, the array version in the pipeline
    (``stridecare.domain.load_arrays.run_load``).
    """
    return load_from_samples_or_summary(
        run,
        timed=len(run.samples) > 0 and any(run.samples.timer_running),
        integrate=lambda **figures: from_samples(run.samples, **figures),
        cadence_base_spm=cadence_base_spm,
        cadence_history=cadence_history,
        sex=sex,
        mass_kg=mass_kg,
        constants=constants,
    )


def load_from_samples_or_summary(
    run: ParsedRun,
    *,
    timed: bool,
    integrate: Callable[..., RunLoadResult],
    cadence_base_spm: float | None = None,
    cadence_history: Sequence[tuple[float, float]] = (),
    sex: str | None = None,
    mass_kg: float | None = None,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> RunLoadResult:
    """The choice :func:`run_load` makes, whatever holds the samples: ``integrate`` (called with the athlete's
    figures and cadence model) when the samples hold timed steps (``timed``) and it counts some, else the load
    from ``run``'s summary."""
    model = fit_cadence_model(cadence_history, constants, constants.cadence_fit_min_runs)
    if timed:
        result = integrate(
            cadence_base_spm=cadence_base_spm,
            sex=sex,
            mass_kg=mass_kg,
            cadence_model=model,
            constants=constants,
        )
        if result.steps > 0:
            return result
    return run_load_from_summary(
        distance_m=run.distance_m,
        timer_s=run.timer_s,
        avg_cadence_spm=run.avg_cadence_spm,
        steps=run.steps,
        cadence_base_spm=cadence_base_spm,
        sex=sex,
        mass_kg=mass_kg,
        cadence_model=model,
        constants=constants,
    )
