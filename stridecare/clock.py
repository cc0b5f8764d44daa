"""The notion of "now" that every stage shares: the system clock, or a simulation clock read from a file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from stridecare.settings import Settings


def now(settings: Settings) -> datetime:
    """The current time, timezone-aware UTC; from ``STRIDECARE_CLOCK_FILE`` when the operator set one."""
    if settings.clock_file is not None:
        return read_clock_file(settings.clock_file)
    return datetime.now(UTC)


def read_clock_file(path: Path) -> datetime:
    """Parse the simulation clock file; a missing or empty file means the system clock."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return datetime.now(UTC)
    if not text:
        return datetime.now(UTC)
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"clock file {path} must hold a timezone-aware timestamp, got {text!r}")
    return value.astimezone(UTC)


def write_clock_file(path: Path, value: datetime) -> None:
    """Set the simulation clock atomically (used by simulations and tests)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value.astimezone(UTC).isoformat())
    tmp.replace(path)
