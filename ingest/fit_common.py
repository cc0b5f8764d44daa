"""What both FIT scans share: the shape one pass over a file keeps (``Scan``), the fields it reads, and how
enum names, device strings and foot sports are read from its values.

``ingest.fit`` fills a ``Scan`` from fitparse's stream, ``ingest.fit_fast`` from the native decoder's columns;
``FitSource`` builds runs from either, so both must mean the same by every field here.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stridecare.domain.run import FOOT_SPORTS, HEART_RATE_RANGE_BPM

FIT_EPOCH = datetime(1989, 12, 31, tzinfo=UTC)
FIT_EPOCH_NAIVE = FIT_EPOCH.replace(tzinfo=None)
# FIT date_time values below this are seconds since the device powered on, not since the FIT epoch.
RELATIVE_TS_LIMIT = 0x10000000
# Sub-sports that are foot sessions whatever sport the device filed them under (e.g.
# fitness_equipment/treadmill).
_FOOT_SUB_SPORTS = frozenset({"treadmill", "trail", "trail_running"})
TIMER_STOPS = frozenset({"stop", "stop_all", "stop_disable", "stop_disable_all"})
_NAN = math.nan

RECORD_FIELDS = frozenset(
    {
        "timestamp",
        "distance",
        "speed",
        "enhanced_speed",
        "cadence",
        "fractional_cadence",
        "altitude",
        "enhanced_altitude",
        "heart_rate",
    }
)
SESSION_FIELDS = frozenset(
    {
        "timestamp",
        "start_time",
        "sport",
        "sub_sport",
        "total_elapsed_time",
        "total_timer_time",
        "total_distance",
        "total_ascent",
        "total_descent",
        "total_strides",
        "total_cycles",
        "total_fractional_cycles",
        "avg_running_cadence",
        "avg_cadence",
        "avg_fractional_cadence",
        "avg_speed",
        "enhanced_avg_speed",
        "avg_heart_rate",
        "max_heart_rate",
    }
)


@dataclass(slots=True)
class Records:
    """The record stream in compact columns; NaN stands for "not recorded"."""

    t: array[float] = field(default_factory=lambda: array("d"))
    distance: array[float] = field(default_factory=lambda: array("d"))
    speed: array[float] = field(default_factory=lambda: array("d"))
    cadence: array[float] = field(default_factory=lambda: array("d"))  # raw, strides/min incl. fractional
    altitude: array[float] = field(default_factory=lambda: array("d"))
    heart_rate: array[float] = field(default_factory=lambda: array("d"))  # beats per minute

    def append(self, t: float, values: dict[str, Any]) -> None:
        self.t.append(t)
        self.distance.append(num(values.get("distance")))
        speed = values.get("enhanced_speed")
        self.speed.append(num(speed if speed is not None else values.get("speed")))
        cadence = num(values.get("cadence"))
        if not math.isnan(cadence):
            frac = num(values.get("fractional_cadence"))
            cadence += 0.0 if math.isnan(frac) else frac
        self.cadence.append(cadence)
        alt = values.get("enhanced_altitude")
        self.altitude.append(num(alt if alt is not None else values.get("altitude")))
        self.heart_rate.append(num(values.get("heart_rate")))

    def sort_by_time(self) -> None:
        """Chained files and summary-first files can go back in time; integration needs order."""
        t = self.t
        if all(t[i] <= t[i + 1] for i in range(len(t) - 1)):
            return
        order = sorted(range(len(t)), key=t.__getitem__)
        for name in ("t", "distance", "speed", "cadence", "altitude", "heart_rate"):
            col: array[float] = getattr(self, name)
            setattr(self, name, array("d", (col[i] for i in order)))


@dataclass(slots=True)
class Scan:
    """Everything one pass over the file keeps."""

    file_type: str | None = None
    device: str | None = None
    activity_ts: float | None = None
    activity_local: datetime | None = None
    correlation_offset_s: float | None = None  # absolute − device-relative seconds
    sport_msg: tuple[str, str | None] | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    timer_events: list[tuple[float, bool]] = field(default_factory=list)  # (t, running afterwards)
    records: Records = field(default_factory=Records)


def num(value: Any) -> float:
    """A numeric field value as a float; NaN when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _NAN
    return float(value)


def enum_name(value: Any) -> str | None:
    """fitparse gives enum names as str and unknown enum values as int; keep both readable."""
    if value is None:
        return None
    return str(value)


def device_name(file_id: dict[str, Any]) -> str | None:
    """The recording device as "manufacturer product" from a ``file_id`` message's values, or None."""
    manufacturer = enum_name(file_id.get("manufacturer"))
    product = file_id.get("garmin_product") or file_id.get("product_name") or file_id.get("product")
    parts = [p for p in (manufacturer, enum_name(product)) if p]
    return " ".join(parts) or None


def is_foot(sport: str | None, sub_sport: str | None) -> bool:
    """True for a session on foot: a foot sport, or a foot sub-sport filed under another sport."""
    return sport in FOOT_SPORTS or sub_sport in _FOOT_SUB_SPORTS


def heart_rate_of_records(rec: Records, lo: int, hi: int) -> tuple[float | None, float | None]:
    """Average and highest heart rate of records ``lo`` to ``hi`` (bpm), from the values a heart can have; None
    when none was recorded. For sessions whose summary names no heart rate."""
    beats = [b for b in rec.heart_rate[lo:hi] if HEART_RATE_RANGE_BPM[0] <= b <= HEART_RATE_RANGE_BPM[1]]
    if not beats:
        return None, None
    return sum(beats) / len(beats), max(beats)
