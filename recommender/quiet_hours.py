"""Quiet hours in the athlete's wall time, exact across daylight-saving changes.

The rule: an instant is quiet when the athlete's clock on the wall reads a time in ``[start, end)`` (a window
may cross midnight; ``start == end`` is no window). A prompt due at a quiet instant is sent at the first later
instant that is not quiet. That is all; the cases it settles are the ones a "convert the end time of the right
day" shortcut gets wrong:

* on a fall-back night the repeated hour is read twice, so a window ending inside it is quiet twice (Berlin
  01:30–02:30: quiet 01:30–02:30 CEST, free 02:30–03:00 CEST, quiet again 02:00–02:30 CET);
* a window whose end falls in a spring-forward gap ends at the jump (Berlin 01:00–02:30 ends at 03:00 CEST);
* a jump can also leap over a window's start or land in a free stretch (Lord Howe shifts by 30 minutes,
  Casablanca and Havana change at midnight or in the small hours).

The quiet state only changes when the wall clock passes ``start`` or ``end`` or when the offset changes, so the
first free instant after ``due`` is the earliest of: the instants whose wall time is ``end`` (zero, one or two
per local day) and the offset changes, that is not quiet. ``tests/test_quiet_hours.py`` checks this against a
minute-by-minute walk over zones with unusual rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

# A window is shorter than a day, but a spring-forward gap can swallow its only free stretch on one day (a
# 02:00–01:00 window where 01:00–02:00 is skipped): the next one then comes on the day after.
_HORIZON = timedelta(days=3)
_SCAN = timedelta(hours=1)  # offsets change at most once an hour anywhere (in practice twice a year)


def in_window(wall: time, start: time, end: time) -> bool:
    """Whether wall time ``wall`` falls in ``[start, end)``, a window that may cross midnight."""
    if start == end:
        return False
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end


def is_quiet(instant: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    """Whether the aware ``instant`` falls in the quiet hours ``[start, end)`` of ``zone``'s wall clock."""
    return in_window(instant.astimezone(zone).time().replace(tzinfo=None, fold=0), start, end)


def first_free_instant(due: datetime, zone: ZoneInfo, start: time, end: time) -> datetime:
    """The first instant at or after the aware ``due`` (in UTC) that is not in the quiet hours: ``due`` itself
    when it is not quiet. Never earlier than ``due``; a prompt is only ever deferred, never dropped."""
    if due.tzinfo is None:
        raise ValueError("due must be timezone-aware")
    due = due.astimezone(UTC)
    if not is_quiet(due, zone, start, end):
        return due
    horizon = due + _HORIZON
    candidates = sorted({*_wall_instants(due, horizon, zone, end), *_offset_changes(due, horizon, zone)})
    for candidate in candidates:
        if due < candidate <= horizon and not is_quiet(candidate, zone, start, end):
            return candidate
    return due  # unreachable for a window shorter than a day; a prompt is sent rather than held for ever


def _wall_instants(since: datetime, until: datetime, zone: ZoneInfo, wall: time) -> Iterator[datetime]:
    """Every UTC instant in about ``[since, until]`` at which ``zone``'s clock reads ``wall``: none on a day
    that skips it, two on a day that repeats it."""
    day = since.astimezone(zone).date() - timedelta(days=1)
    last = until.astimezone(zone).date() + timedelta(days=1)
    while day <= last:
        naive = datetime.combine(day, wall)
        for fold in (0, 1):
            instant = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            if instant.astimezone(zone).replace(tzinfo=None) == naive:  # else it lies in a gap
                yield instant
        day += timedelta(days=1)


def _offset_changes(since: datetime, until: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    """The UTC instants (to the second) in ``(since, until]`` at which ``zone``'s offset from UTC changes."""
    low = since.replace(microsecond=0)
    low_offset = low.astimezone(zone).utcoffset()
    while low < until:
        high = min(low + _SCAN, until + timedelta(seconds=1))
        high_offset = high.astimezone(zone).utcoffset()
        if high_offset != low_offset:
            # Bisect to the first second with the new offset.
            a, b = int(low.timestamp()), int(high.timestamp())
            while b - a > 1:
                mid = (a + b) // 2
                if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == low_offset:
                    a = mid
                else:
                    b = mid
            yield datetime.fromtimestamp(b, UTC)
        low, low_offset = high, high_offset
