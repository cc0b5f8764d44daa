"""Strava activity (+ streams) → :class:`ParsedRun`. Pure: no network, no database, no clock.

Strava's ``cadence`` stream and ``average_cadence`` count one foot (strides per minute): steps per minute are
twice that, unless the values are already steps per minute (median above 120, see foot-load-model.md §1).
Steps are summed over samples while the ``moving`` stream is true (Strava's timer); a summary-only activity
gets ``2 × average_cadence × moving_time / 60``; an activity without any cadence gets an estimate from its
speed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from stridecare.domain.run import CadenceSource, ParsedRun, Samples, SkippedSession
from stridecare.settings import LoadModelSettings

SOURCE = "strava"
STREAM_KEYS = ("time", "distance", "velocity_smooth", "cadence", "altitude", "moving")
# Medians above this are steps per minute already (a per-foot cadence of 120 would be a sprint).
SPM_THRESHOLD = 120.0

# sport_type → (sport, sub_sport). Run with ``trainer`` set is a treadmill run.
_SPORTS: dict[str, tuple[str, str | None]] = {
    "Run": ("running", None),
    "TrailRun": ("running", "trail"),
    "VirtualRun": ("running", "virtual"),
    "Walk": ("walking", None),
    "Hike": ("hiking", None),
}

CadenceModel = Callable[[float], float]


def _default_cadence_model() -> CadenceModel:
    # Class defaults, not the environment: this module stays pure. Callers with the athlete's own
    # cadence-vs-speed fit pass it as ``cadence_model``.
    fields = LoadModelSettings.model_fields
    intercept = float(fields["default_cadence_intercept_spm"].default)
    slope = float(fields["default_cadence_slope_spm_per_mps"].default)
    low = float(fields["default_cadence_min_spm"].default)
    high = float(fields["default_cadence_max_spm"].default)

    def model(speed_mps: float) -> float:
        return min(high, max(low, intercept + slope * (speed_mps - 3.0)))

    return model


DEFAULT_CADENCE_MODEL = _default_cadence_model()


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _as_dict(activity: Any) -> Mapping[str, Any]:
    if isinstance(activity, Mapping):
        return activity
    dump = getattr(activity, "model_dump", None)
    if callable(dump):
        # A stravalib model: its JSON form has Strava's own field names and string enums.
        data: Mapping[str, Any] = dump(mode="json")
        return data
    raise TypeError(f"cannot read a Strava activity from {type(activity).__name__}")


def sport_of(activity: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """``(sport, sub_sport)`` for a foot activity, ``None`` for anything else (rides, swims, …)."""
    sport_type = activity.get("sport_type") or activity.get("type")
    if isinstance(sport_type, Mapping):  # a serialised enum model: {"root": "Run"}
        sport_type = sport_type.get("root")
    mapped = _SPORTS.get(str(sport_type)) if sport_type else None
    if mapped is None:
        return None
    sport, sub = mapped
    if sport_type == "Run" and activity.get("trainer"):
        sub = "treadmill"
    return sport, sub


def is_foot_activity(activity: Mapping[str, Any]) -> bool:
    """True when the activity's sport loads the feet (running, walking, hiking)."""
    return sport_of(activity) is not None


def _stream_data(streams: Any) -> dict[str, list[Any]]:
    """Accept ``key_by_type=true`` dicts, the list form, or stravalib ``Stream`` models."""
    out: dict[str, list[Any]] = {}
    if streams is None:
        return out
    items: Iterable[tuple[str, Any]]
    if isinstance(streams, Mapping):
        items = streams.items()
    else:
        items = ((str(s.get("type") if isinstance(s, Mapping) else getattr(s, "type", "")), s) for s in streams)
    for key, stream in items:
        data = stream.get("data") if isinstance(stream, Mapping) else getattr(stream, "data", None)
        if data is not None:
            out[str(key)] = list(data)
    return out


def _floats(values: list[Any] | None, n: int) -> list[float | None]:
    if values is None or len(values) != n:
        return [None] * n
    return [None if v is None else float(v) for v in values]


def _samples(streams: dict[str, list[Any]]) -> tuple[Samples, bool] | None:
    """Samples from streams and whether raw cadence was per foot; None without a time stream."""
    t_raw = streams.get("time")
    if not t_raw:
        return None
    n = len(t_raw)
    t = [float(v) for v in t_raw]
    raw_cadence = _floats(streams.get("cadence"), n)
    moving_raw = streams.get("moving")
    moving = [bool(v) for v in moving_raw] if moving_raw is not None and len(moving_raw) == n else [True] * n
    positive = [c for c, m in zip(raw_cadence, moving, strict=True) if c is not None and c > 0 and m]
    per_foot = not positive or statistics.median(positive) <= SPM_THRESHOLD
    factor = 2.0 if per_foot else 1.0
    samples = Samples(
        t=t,
        distance_m=_floats(streams.get("distance"), n),
        speed_mps=_floats(streams.get("velocity_smooth"), n),
        cadence_spm=[None if c is None else c * factor for c in raw_cadence],
        altitude_m=_floats(streams.get("altitude"), n),
        timer_running=moving,
    )
    return samples, per_foot


def steps_from_samples(samples: Samples) -> tuple[float, float]:
    """``(steps, moving seconds with cadence)``: Σ spm × Δt / 60 over samples while the timer runs.

    Each sample's cadence covers the interval since the previous sample; long gaps are kept (smart recording).
    """
    steps = 0.0
    seconds = 0.0
    for i in range(1, len(samples)):
        spm = samples.cadence_spm[i]
        if not samples.timer_running[i] or spm is None:
            continue
        dt = samples.t[i] - samples.t[i - 1]
        if dt <= 0:
            continue
        steps += spm * dt / 60.0
        seconds += dt
    return steps, seconds


def _descent(altitude: list[float | None]) -> float | None:
    values = [a for a in altitude if a is not None]
    if len(values) < 2:
        return None
    # A 1 m hysteresis keeps GPS/barometer jitter from adding up to phantom descent.
    total = 0.0
    ref = values[0]
    for a in values[1:]:
        if a > ref:
            ref = a
        elif ref - a >= 1.0:
            total += ref - a
            ref = a
    return total


def convert_activity(
    activity: Any,
    streams: Any = None,
    *,
    cadence_model: CadenceModel | None = None,
) -> ParsedRun | SkippedSession:
    """Turn a Strava activity (summary or detailed, dict or stravalib model) and optional streams into a run.

    Returns a :class:`SkippedSession` for activities that are not a foot sport. ``cadence_model`` maps average
    speed (m/s) to steps per minute for activities without any cadence (default: the model's ``c(v)``).
    """
    data = _as_dict(activity)
    mapped = sport_of(data)
    sport_type = str(data.get("sport_type") or data.get("type") or "unknown")
    if mapped is None:
        return SkippedSession(sport=sport_type, sub_sport=None, reason=f"Strava {sport_type} is not a foot sport")
    sport, sub_sport = mapped

    start = _parse_time(data.get("start_date"))
    if start is None:
        raise ValueError(f"Strava activity {data.get('id')} has no start_date")
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    local = _parse_time(data.get("start_date_local"))
    utc_offset_s: int | None
    if local is not None:
        # start_date_local is local wall time despite its "Z" suffix.
        utc_offset_s = round((local.replace(tzinfo=None) - start.replace(tzinfo=None)).total_seconds())
    elif data.get("utc_offset") is not None:
        utc_offset_s = round(float(data["utc_offset"]))
    else:
        utc_offset_s = None

    moving_time = float(data.get("moving_time") or 0.0)
    elapsed = float(data.get("elapsed_time") or moving_time)
    distance = float(data.get("distance") or 0.0)
    ascent = data.get("total_elevation_gain")

    stream_data = _stream_data(streams)
    built = _samples(stream_data)
    samples = built[0] if built else Samples.empty()

    steps: float = 0.0
    avg_spm: float | None = None
    source: CadenceSource | None = None
    if built is not None:
        stream_steps, cadence_seconds = steps_from_samples(samples)
        if stream_steps > 0 and cadence_seconds > 0:
            steps, source = stream_steps, CadenceSource.STREAM
            avg_spm = stream_steps / (cadence_seconds / 60.0)
    avg_cadence = data.get("average_cadence")
    if source is None and avg_cadence and moving_time > 0:
        raw = float(avg_cadence)
        avg_spm = raw if raw > SPM_THRESHOLD else 2.0 * raw
        steps, source = avg_spm * moving_time / 60.0, CadenceSource.SESSION
    if source is None:
        speed = float(data.get("average_speed") or (distance / moving_time if moving_time > 0 else 0.0))
        avg_spm = (cadence_model or DEFAULT_CADENCE_MODEL)(speed)
        steps, source = avg_spm * moving_time / 60.0, CadenceSource.ESTIMATED

    return ParsedRun(
        source=SOURCE,
        source_key=str(data["id"]),
        sport=sport,
        sub_sport=sub_sport,
        start_time=start,
        utc_offset_s=utc_offset_s,
        elapsed_s=elapsed,
        timer_s=moving_time,
        distance_m=distance,
        ascent_m=None if ascent is None else float(ascent),
        descent_m=_descent(samples.altitude_m) if len(samples) else None,
        steps=steps,
        avg_cadence_spm=avg_spm,
        cadence_source=source,
        device=data.get("device_name"),
        samples=samples,
        name=data.get("name"),
        gear_id=str(data["gear_id"]) if data.get("gear_id") else None,
    )
