"""Which runs a pair of shoes can carry: its window of use. Pure: dates and instants in, a yes or a reason out.

A pair takes runs from its in-use-from day (the athlete's local day; the day it was added unless said
otherwise) until it is retired. A run whose source names the pair (Strava's gear) is counted on it whatever its
date: the source knows which shoes were worn, and a backfill brings years of runs to a pair added today; only
its retirement bounds it. The default pair, and a pair chosen by hand for one run, keep to the whole window, so
that the default pair never takes the whole imported history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class PairWindow:
    """The window of use of one pair. ``retired_at`` None on a retired pair: it takes no run at all (pairs
    retired before the instant was recorded)."""

    in_use_from: date | None = None
    retired: bool = False
    retired_at: datetime | None = None

    def refusal(self, start: datetime, day: date, *, named_by_source: bool = False) -> str | None:
        """Why the pair cannot carry a run that started at ``start`` on local ``day``; None when it can."""
        if start.tzinfo is None:
            raise ValueError("PairWindow needs a timezone-aware start")
        if self.retired and (self.retired_at is None or start >= self.retired_at):
            when = f" on {self.retired_at.date().isoformat()}" if self.retired_at is not None else ""
            return f"the pair was retired{when}"
        if not named_by_source and self.in_use_from is not None and day < self.in_use_from:
            return f"the run is before the pair's in-use-from day ({self.in_use_from.isoformat()})"
        return None

    def takes(self, start: datetime, day: date, *, named_by_source: bool = False) -> bool:
        """True when the pair can carry the run (see :meth:`refusal`)."""
        return self.refusal(start, day, named_by_source=named_by_source) is None
