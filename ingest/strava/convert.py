"""Strava activity (+ streams) → :class:`ParsedRun`. Pure: no network, no database, no clock.

The streams become the same normalised :class:`Samples` a FIT file gives (``moving`` is Strava's timer), and
every figure comes from the same domain functions as for the file sources (``normalise.normalised_run``), so
one session gives the same steps and descent whichever way it arrived (docs/foot-load-model.md, section 1):

* cadence: ``steps.normalise_cadence`` (per foot, doubled, unless already steps per minute);
* steps: ``steps.count_steps``: the cadence stream while moving, else ``2 × average_cadence × moving_time /
  60`` (``steps.steps_from_summary``), else an estimate from speed;
* ascent and descent: ``terrain.ascent_descent`` over the altitude stream, Strava's ``total_elevation_gain``
  only without one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from stridecare.domain.normalise import RunHeader, normalised_run
from stridecare.domain.run import ParsedRun, Samples, SkippedSession, heart_rate_bpm
from stridecare.domain.steps import CadenceConstants, normalise_cadence, steps_from_summary

SOURCE = "strava"
STREAM_KEYS = ("time", "distance", "velocity_smooth", "cadence", "altitude", "moving")

# sport_type → (sport, sub_sport). Run with ``trainer`` set is a treadmill run.
_SPORTS: dict[str, tuple[str, str | None]] = {
    "Run": ("running", None),
    "TrailRun": ("running", "trail"),
    "VirtualRun": ("running", "virtual"),
    "Walk": ("walking", None),
    "Hike": ("hiking", None),
}


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


def samples_from_streams(streams: Any) -> Samples | None:
    """The normalised samples of Strava streams (any of the forms ``_stream_data`` accepts); None without a
    time stream. A stream whose length differs from the time stream's is treated as absent."""
    data = _stream_data(streams)
    t_raw = data.get("time")
    if not t_raw:
        return None
    n = len(t_raw)
    moving_raw = data.get("moving")
    moving = [bool(v) for v in moving_raw] if moving_raw is not None and len(moving_raw) == n else [True] * n
    cadence_spm, _doubled = normalise_cadence(_floats(data.get("cadence"), n))
    return Samples(
        t=[float(v) for v in t_raw],
        distance_m=_floats(data.get("distance"), n),
        speed_mps=_floats(data.get("velocity_smooth"), n),
        cadence_spm=cadence_spm,
        altitude_m=_floats(data.get("altitude"), n),
        timer_running=moving,
    )


def convert_activity(activity: Any, constants: CadenceConstants, streams: Any = None) -> ParsedRun | SkippedSession:
    """Turn a Strava activity (summary or detailed, dict or stravalib model) and optional streams into a run.

    ``constants`` are the model's, built from the settings: they decide the steps of a run without cadence.
    Returns a :class:`SkippedSession` for activities that are not a foot sport.
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
    total_gain = data.get("total_elevation_gain")

    samples = samples_from_streams(streams) or Samples.empty()
    avg_cadence = data.get("average_cadence")
    summary_steps = steps_from_summary(float(avg_cadence), moving_time) if avg_cadence else None
    return normalised_run(
        samples,
        constants,
        RunHeader(
            source=SOURCE,
            source_key=str(data["id"]),
            sport=sport,
            sub_sport=sub_sport,
            start_time=start,
            utc_offset_s=utc_offset_s,
            elapsed_s=elapsed,
            timer_s=moving_time,
            distance_m=distance,
        ),
        session_steps=summary_steps,
        source_ascent_m=None if total_gain is None else float(total_gain),
        device=data.get("device_name"),
        name=data.get("name"),
        gear_id=str(data["gear_id"]) if data.get("gear_id") else None,
        avg_heart_rate_bpm=heart_rate_bpm(data.get("average_heartrate")),
        max_heart_rate_bpm=heart_rate_bpm(data.get("max_heartrate")),
    )
