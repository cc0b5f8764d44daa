"""Load over time (docs/foot-load-model.md, section 4): daily load, acute/chronic EWMA, ACWR, weekly volume.

Days are local calendar days in the athlete's time zone; a run belongs to the day it starts on.

EWMA seeding. ``EWMA_t = λ·load_t + (1−λ)·EWMA_{t−1}`` with ``λ = 2/(N+1)`` needs a value before day one:

* ``Seeding.FIRST_DAY`` (product default) starts both averages at the first day's load, so a constant load
  gives an ACWR of exactly 1.0 from day one.
* ``Seeding.ZERO`` starts both at 0; with a constant load the ratio converges (within 0.02 by day 60, within
  0.001 by day 120) but runs high for weeks, because the chronic average fills ~4× slower than the acute one.

Why FIRST_DAY: ACWR is shown from day 28. Zero seeding still leaves the chronic average ~13 % short there
(0.931^28), which inflates every new athlete's ratio and fires "ACWR high" notes that reflect the seeding, not
the running. Seeding with the first day (a run day, since history starts at the first run) errs the other way
by a fraction of one day's load, the quieter mistake for a figure that is information only. Once the history
is a few months long (a Strava backfill usually is) the two modes agree.

Incremental recompute. The DB layer keeps one row per day from the first run day to today. When something
changes on local day D (a late upload for an earlier date, a deleted or edited run): load the stored row of
day D−1 as an :class:`EwmaState`, rebuild :class:`DayTotals` for days ≥ D from the runs (use
:func:`utc_bounds_of_local_day` to query them), and call :func:`recompute_from`; replace the rows from D on
with what it returns. When D is on or before the first day of history (or the first run was deleted) pass
``previous=None`` and the new first day: the seed itself changed, so everything is recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from stridecare.domain.load import DEFAULT_CONSTANTS, LoadConstants


class Seeding(StrEnum):
    """Value of both averages before the first day (see the module docstring)."""

    FIRST_DAY = "first_day"
    ZERO = "zero"


DEFAULT_SEEDING = Seeding.FIRST_DAY


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What the history needs of one stored run. ``start_time`` is timezone-aware (UTC in the database)."""

    start_time: datetime
    load: float = 0.0
    distance_m: float = 0.0
    timer_s: float = 0.0
    steps: float = 0.0
    stimulus_sum: float = 0.0
    downhill_impact: float | None = None

    def __post_init__(self) -> None:
        if self.start_time.tzinfo is None:
            raise ValueError("RunSummary.start_time must be timezone-aware")


@dataclass(frozen=True, slots=True)
class DayTotals:
    """Sums of the runs that start on one local day."""

    day: date
    load: float = 0.0
    distance_m: float = 0.0
    timer_s: float = 0.0
    steps: float = 0.0
    stimulus_sum: float = 0.0
    runs: int = 0


@dataclass(frozen=True, slots=True)
class EwmaState:
    """The averages at the end of ``day``, as stored in that day's row: the seed for the following day."""

    day: date
    acute: float
    chronic: float


@dataclass(frozen=True, slots=True)
class DailyLoadRow:
    """One day of the load series: the day's totals and the averages including that day.

    ``history_days`` counts days from the first day of history, that day being 1. ``acwr`` is None until
    ``history_days`` reaches the minimum (28) or while the chronic average is 0.
    """

    day: date
    load: float
    distance_m: float
    timer_s: float
    steps: float
    stimulus_sum: float
    runs: int
    acute: float
    chronic: float
    acwr: float | None
    history_days: int

    @property
    def state(self) -> EwmaState:
        """This row's averages as the seed for the next day."""
        return EwmaState(self.day, self.acute, self.chronic)


@dataclass(frozen=True, slots=True)
class WeekVolume:
    """Totals for one ISO week (Monday to Sunday, local days)."""

    iso_year: int
    iso_week: int
    week_start: date
    distance_m: float
    timer_s: float
    steps: float
    load: float
    runs: int


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def local_day(instant: datetime, tz: str | ZoneInfo) -> date:
    """The calendar day in ``tz`` on which the aware ``instant`` falls."""
    if instant.tzinfo is None:
        raise ValueError("local_day needs a timezone-aware datetime")
    return instant.astimezone(_zone(tz)).date()


def utc_bounds_of_local_day(day: date, tz: str | ZoneInfo) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC of local ``day``; 23 or 25 hours long on DST change days."""
    zone = _zone(tz)
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, end


def ewma_lambda(days: int) -> float:
    """Decay ``λ = 2/(N+1)``: 0.25 for 7 days, 0.0690 for 28 (Williams et al. 2017)."""
    if days < 1:
        raise ValueError("EWMA span must be at least one day")
    return 2.0 / (days + 1)


def acwr(acute: float, chronic: float, history_days: int, *, min_history_days: int = 28) -> float | None:
    """Acute:chronic ratio, or None before ``min_history_days`` of history or while chronic is 0."""
    if history_days < min_history_days or chronic <= 0:
        return None
    return acute / chronic


def daily_totals(
    runs: Iterable[RunSummary], tz: str | ZoneInfo, *, start: date | None = None, through: date | None = None
) -> list[DayTotals]:
    """Per-day sums of ``runs`` by local start day, one entry per day from ``start`` to ``through`` inclusive.

    Days without runs are present with zeros (the averages decay on rest days). ``start`` defaults to the
    first run's day, ``through`` to the last run's day; runs outside the range are ignored.
    """
    zone = _zone(tz)
    sums: dict[date, list[float]] = {}
    for run in runs:
        d = local_day(run.start_time, zone)
        acc = sums.setdefault(d, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        acc[0] += run.load
        acc[1] += run.distance_m
        acc[2] += run.timer_s
        acc[3] += run.steps
        acc[4] += run.stimulus_sum
        acc[5] += 1
    if not sums and (start is None or through is None):
        return []
    first = start if start is not None else min(sums)
    last = through if through is not None else max(sums)
    out: list[DayTotals] = []
    d = first
    while d <= last:
        day_sums = sums.get(d)
        if day_sums is None:
            out.append(DayTotals(d))
        else:
            load, dist, secs, steps, stim, count = day_sums
            out.append(DayTotals(d, load, dist, secs, steps, stim, int(count)))
        d += timedelta(days=1)
    return out


def recompute_from(
    totals: Sequence[DayTotals],
    *,
    start: date,
    through: date,
    previous: EwmaState | None,
    first_day: date | None = None,
    seeding: Seeding = DEFAULT_SEEDING,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> list[DailyLoadRow]:
    """Daily rows from ``start`` to ``through`` inclusive, continuing the averages from ``previous``.

    ``totals`` holds the days with runs in that range (others are rest days; order does not matter).
    ``previous`` is the state at the end of ``start − 1 day``; None means ``start`` is the first day of
    history and the averages are seeded per ``seeding``. ``first_day`` (the first day of history, needed
    for the 28-day ACWR gate) defaults to ``start`` when ``previous`` is None and is required otherwise.
    """
    if previous is not None and previous.day != start - timedelta(days=1):
        raise ValueError(f"previous state is for {previous.day}, expected the day before {start}")
    if first_day is None:
        if previous is not None:
            raise ValueError("first_day is required when continuing from a previous state")
        first_day = start
    by_day = {t.day: t for t in totals}
    la = ewma_lambda(constants.acute_days)
    lc = ewma_lambda(constants.chronic_days)

    rows: list[DailyLoadRow] = []
    acute = previous.acute if previous is not None else 0.0
    chronic = previous.chronic if previous is not None else 0.0
    d = start
    while d <= through:
        t = by_day.get(d, DayTotals(d))
        if previous is None and d == start and seeding is Seeding.FIRST_DAY:
            acute = chronic = t.load
        else:
            acute = la * t.load + (1 - la) * acute
            chronic = lc * t.load + (1 - lc) * chronic
        history_days = (d - first_day).days + 1
        rows.append(
            DailyLoadRow(
                day=d,
                load=t.load,
                distance_m=t.distance_m,
                timer_s=t.timer_s,
                steps=t.steps,
                stimulus_sum=t.stimulus_sum,
                runs=t.runs,
                acute=acute,
                chronic=chronic,
                acwr=acwr(acute, chronic, history_days, min_history_days=constants.acwr_min_history_days),
                history_days=history_days,
            )
        )
        d += timedelta(days=1)
    return rows


def daily_series(
    runs: Iterable[RunSummary],
    tz: str | ZoneInfo,
    *,
    through: date | None = None,
    seeding: Seeding = DEFAULT_SEEDING,
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> list[DailyLoadRow]:
    """The whole series from the first run's local day to ``through`` (default: the last run's day)."""
    totals = daily_totals(runs, tz)
    if not totals:
        return []
    end = through if through is not None else totals[-1].day
    return recompute_from(totals, start=totals[0].day, through=end, previous=None, seeding=seeding, constants=constants)


def weekly_volume(days: Iterable[DayTotals]) -> list[WeekVolume]:
    """Distance, time, steps and load per ISO week of the given local days, oldest week first."""
    weeks: dict[tuple[int, int], list[float]] = {}
    for t in days:
        iso = t.day.isocalendar()
        acc = weeks.setdefault((iso.year, iso.week), [0.0, 0.0, 0.0, 0.0, 0.0])
        acc[0] += t.distance_m
        acc[1] += t.timer_s
        acc[2] += t.steps
        acc[3] += t.load
        acc[4] += t.runs
    return [
        WeekVolume(y, w, date.fromisocalendar(y, w, 1), a[0], a[1], a[2], a[3], int(a[4]))
        for (y, w), a in sorted(weeks.items())
    ]


def rolling_sum(rows: Sequence[DailyLoadRow], end: date, days: int) -> float:
    """Sum of ``load`` over the ``days`` local days ending at ``end`` inclusive."""
    first = end - timedelta(days=days - 1)
    return sum(r.load for r in rows if first <= r.day <= end)
