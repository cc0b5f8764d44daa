"""The normalised run every source produces, whatever the file format or API it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# Sports whose ground contacts load the feet; everything else is recorded as skipped.
FOOT_SPORTS = frozenset({"running", "walking", "hiking", "trail_running", "treadmill"})


class CadenceSource(StrEnum):
    """Where a run's step count came from, strongest evidence first."""

    STREAM = "stream"
    SESSION = "session"
    ESTIMATED = "estimated"


@dataclass(frozen=True, slots=True)
class Samples:
    """Per-sample series of one run, aligned by index; ``t`` is seconds since the run's start.

    ``cadence_spm`` is already in steps per minute (both feet), ``None`` where the device wrote nothing.
    ``timer_running`` is False for samples recorded while the timer was stopped (auto-pause, manual stop).
    """

    t: list[float]
    distance_m: list[float | None]
    speed_mps: list[float | None]
    cadence_spm: list[float | None]
    altitude_m: list[float | None]
    timer_running: list[bool]

    def __len__(self) -> int:
        return len(self.t)

    def __post_init__(self) -> None:
        n = len(self.t)
        for name in ("distance_m", "speed_mps", "cadence_spm", "altitude_m", "timer_running"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"sample series {name!r} has {len(getattr(self, name))} values, t has {n}")

    @classmethod
    def empty(cls) -> Samples:
        """A run with no samples (summary-only)."""
        return cls([], [], [], [], [], [])


@dataclass(frozen=True, slots=True)
class ParsedRun:
    """One foot session as a source decoded it, before it is stored.

    ``source_key`` identifies the session within its source (for FIT: content hash and session index; for
    Strava: the activity id) and makes every write of it idempotent.
    """

    source: str
    source_key: str
    sport: str
    sub_sport: str | None
    start_time: datetime  # timezone-aware, UTC
    utc_offset_s: int | None
    elapsed_s: float
    timer_s: float
    distance_m: float
    ascent_m: float | None
    descent_m: float | None
    steps: float
    avg_cadence_spm: float | None
    cadence_source: CadenceSource
    device: str | None = None
    device_total_strides: float | None = None
    samples: Samples = field(default_factory=Samples.empty)
    name: str | None = None
    gear_id: str | None = None  # the source's id of the shoes worn (Strava gear), mapped to a Shoe on store
    avg_heart_rate_bpm: float | None = None
    max_heart_rate_bpm: float | None = None
    # Why the recorded steps were replaced by an estimate (an impossible step length), for the run page.
    step_note: str | None = None

    def __post_init__(self) -> None:
        if self.start_time.tzinfo is None:
            raise ValueError("ParsedRun.start_time must be timezone-aware")


# What a heart does: a recorded figure outside this is a sensor or export fault, and the run keeps none.
HEART_RATE_RANGE_BPM = (20.0, 250.0)


def heart_rate_bpm(value: object) -> float | None:
    """A source's heart-rate figure in beats per minute; None when absent, not a number or outside what a heart
    does (every source keeps heart rate through this one check)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    low, high = HEART_RATE_RANGE_BPM
    return float(value) if low <= value <= high else None


@dataclass(frozen=True, slots=True)
class SkippedSession:
    """A session in a file that is not a foot sport (a ride, a swim): recorded, never loaded."""

    sport: str
    sub_sport: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """What a source made of one file: the foot runs it held and the sessions it skipped."""

    runs: list[ParsedRun]
    skipped: list[SkippedSession] = field(default_factory=list)


class DecodeError(Exception):
    """A file that cannot be decoded (damaged, truncated, not the format it claims). The message is one line."""
