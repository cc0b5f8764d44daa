"""Planning: load per run, the daily series, flags, long runs, and the post-run prompt with its outbox rows.

Storing runs (``ingest.runs``) only writes the athlete's stale mark (``stridecare.db.marks``, in the same
transaction as the runs). :func:`replan`, the one entry point, then recomputes from the mark, oldest run
first, in transactions of at most :data:`CHUNK_RUNS` runs, moving the mark as it goes; a prompt and its
deliveries are written in the same transaction as the load that decided them. The decisions themselves are the
pure functions of ``stridecare.domain`` and ``recommender.rules``; this module reads their inputs from SQL and
writes their results back. Each run's figures are
those known when it ended (only earlier runs, its own day so far), every query is bounded on both sides by
the window its rule needs, and a run whose inputs did not change keeps its load, so the result is the same
whatever the order or batching of the arrivals.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.orm import Session, selectinload

from delivery.outbox import create_deliveries
from recommender import feel, rules
from recommender.routines import TOE_ISOLATION
from recommender.shoes import shoe_reminders
from stridecare.db.athletes import lock_athlete
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, DailyLoad, Prompt, Run, RunLoad, RunSamples, utcnow
from stridecare.db.samples import unpack_columns
from stridecare.domain.flags import SPIKE_FLAGS, Flag, evaluate_flags
from stridecare.domain.history import (
    DailyLoadRow,
    DayTotals,
    EwmaState,
    RunSummary,
    acwr,
    daily_totals,
    local_day,
    recompute_from,
    utc_bounds_of_local_day,
)
from stridecare.domain.load import (
    MODEL_VERSION,
    LoadConstants,
    RunLoadResult,
    baseline_cadence_spm,
)
from stridecare.domain.load_arrays import run_load
from stridecare.domain.long_run import LongRunDecision, classify_long_run
from stridecare.domain.run import CadenceSource, ParsedRun
from stridecare.settings import Settings

HISTORY_DAYS = 90
# Runs per write transaction of :func:`replan`: a batch never holds the athlete's (or SQLite's) write lock
# for long, and a crash loses at most one chunk of work, which the next replan redoes.
CHUNK_RUNS = 200
# The daily series is written as plain rows (Core executemany), the same rows the ORM would insert.
_DAILY_TABLE = cast(Table, DailyLoad.__table__)


@dataclass(frozen=True, slots=True)
class ChunkDone:
    """What one planning transaction did: the primary runs it looked at, the ones whose load it computed
    (their inputs had changed) and, of those, the ones that had no load before: runs stored since the last
    pass, whose files' console lines can now show their figures."""

    runs: int
    computed: tuple[int, ...]
    first_loads: tuple[int, ...]


def constants(settings: Settings) -> LoadConstants:
    """The load model's constants from the settings (built once per settings object)."""
    return settings.load.constants


def _parsed_from_row(run: Run) -> ParsedRun:
    """A stored run's record back in the domain's shape, without its samples (the load model reads those as
    columns straight from the stored blob: ``unpack_columns``)."""
    return ParsedRun(
        source=run.source,
        source_key=run.source_key,
        sport=run.sport,
        sub_sport=run.sub_sport,
        start_time=run.start_time,
        utc_offset_s=run.utc_offset_s,
        elapsed_s=run.elapsed_s,
        timer_s=run.timer_s,
        distance_m=run.distance_m,
        ascent_m=run.ascent_m,
        descent_m=run.descent_m,
        steps=run.steps,
        avg_cadence_spm=run.avg_cadence_spm,
        cadence_source=CadenceSource(run.cadence_source),
        device=run.device,
        name=run.name,
    )


def _primary_runs(
    session: Session, athlete_id: int, since: datetime | None = None, until: datetime | None = None
) -> list[Run]:
    """Primary runs with ``since <= start_time < until`` (either bound open when None), oldest first."""
    query = select(Run).where(Run.athlete_id == athlete_id, Run.duplicate_of_id.is_(None))
    if since is not None:
        query = query.where(Run.start_time >= since)
    if until is not None:
        query = query.where(Run.start_time < until)
    return list(session.scalars(query.options(selectinload(Run.load)).order_by(Run.start_time, Run.id)))


def _summary(run: Run) -> RunSummary:
    load = run.load
    return RunSummary(
        start_time=run.start_time,
        load=load.load if load else 0.0,
        distance_m=run.distance_m,
        timer_s=run.timer_s,
        steps=run.steps,
        stimulus_sum=load.stimulus_sum if load else 0.0,
        downhill_impact=(load.downhill_impact if load and load.facts.get("grade_available") else None),
    )


def _cadence_history(run: Run, earlier: Sequence[Run]) -> list[tuple[float, float]]:
    """(speed, cadence) of the earlier runs with measured cadence: the cadence baseline's input."""
    history: list[tuple[float, float]] = []
    for other in earlier:
        if other.id == run.id or other.start_time >= run.start_time or other.timer_s <= 0:
            continue
        if other.avg_cadence_spm and other.cadence_source != CadenceSource.ESTIMATED:
            history.append((other.distance_m / other.timer_s, other.avg_cadence_spm))
    return history


def _packed_samples(session: Session, run_ids: Sequence[int]) -> dict[int, bytes]:
    """The stored sample blobs of ``run_ids``, in one query (not one lazy load per run)."""
    if not run_ids:
        return {}
    rows = session.execute(select(RunSamples.run_id, RunSamples.data).where(RunSamples.run_id.in_(run_ids)))
    return {run_id: data for run_id, data in rows}


def _load_result(
    settings: Settings, athlete: Athlete, run: Run, history: Sequence[tuple[float, float]], packed: bytes | None
) -> RunLoadResult:
    speed = run.distance_m / run.timer_s if run.timer_s > 0 else 0.0
    return run_load(
        _parsed_from_row(run),
        cadence_base_spm=baseline_cadence_spm(history, speed),
        cadence_history=history,
        sex=athlete.sex,
        mass_kg=athlete.body_mass_kg,
        constants=constants(settings),
        # No blob: a summary-only run, whose load comes from its summary.
        columns=unpack_columns(packed) if packed is not None else None,
    )


def _inputs_key(
    run: Run, athlete: Athlete, history: Sequence[tuple[float, float]], base: float | None, model: str
) -> str:
    """A digest of everything a run's load depends on besides its own record: a changed record's key is cleared
    when it is marked (``stridecare.db.marks.mark_changed``), so it is recomputed whatever its key.

    A run whose key is unchanged keeps its stored load: recomputing it from its samples would give the same
    figures, and skipping that keeps a late or batched arrival from re-reading every later run's samples.
    """
    # The athlete's own cadence line only enters a run without measured cadence.
    line = history if run.cadence_source == CadenceSource.ESTIMATED else ()
    raw = repr((MODEL_VERSION, model, base, tuple(line), athlete.sex, athlete.body_mass_kg))
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    return utc_bounds_of_local_day(day, tz)


def _first_run_start(session: Session, athlete_id: int) -> datetime | None:
    first: datetime | None = session.scalar(
        select(func.min(Run.start_time)).where(Run.athlete_id == athlete_id, Run.duplicate_of_id.is_(None))
    )
    if first is not None and first.tzinfo is None:  # SQLite aggregates bypass the column type
        first = first.replace(tzinfo=UTC)
    return first


def _rebuild_daily(
    session: Session,
    settings: Settings,
    athlete: Athlete,
    from_day: date,
    runs: Sequence[Run],
    first_run: datetime | None,
    *,
    final: bool,
    through: date | None = None,
) -> int:
    """Replace the daily rows from ``from_day`` with the series of ``runs`` (the primaries from that day on);
    returns how many rows were written.

    ``final``: these runs reach the end of the history, so rows after the last one go too; otherwise rows are
    rebuilt through ``through`` (the chunk's last day) and later rows are left for the next chunk.
    """
    tz = athlete.timezone
    if first_run is None:
        session.execute(delete(DailyLoad).where(DailyLoad.athlete_id == athlete.id))
        return 0
    first_day = local_day(first_run, tz)
    start = max(from_day, first_day)
    previous: EwmaState | None = None
    if start > first_day:
        seed = session.scalar(
            select(DailyLoad)
            .where(DailyLoad.athlete_id == athlete.id, DailyLoad.day < start)
            .order_by(DailyLoad.day.desc())
            .limit(1)
        )
        if seed is not None and seed.day < start - timedelta(days=1):
            # Rows end with the last run's day: the rest days up to ``start`` are rebuilt (zeros) from the seed.
            start = seed.day + timedelta(days=1)
        if seed is None:
            # Rows are contiguous from the first day; a gap means a stale series: rebuild it whole.
            runs = _primary_runs(session, athlete.id)
            start, final = first_day, True
        else:
            previous = EwmaState(seed.day, seed.acute, seed.chronic)
    summaries = [_summary(r) for r in runs]
    summaries = [r for r in summaries if local_day(r.start_time, tz) >= start]
    wipe = delete(DailyLoad).where(DailyLoad.athlete_id == athlete.id)
    if previous is not None:
        wipe = wipe.where(DailyLoad.day >= start)  # else rows before a deleted first run go too
    if not final:
        assert through is not None
        wipe = wipe.where(DailyLoad.day <= through)
    session.execute(wipe)
    if final:
        if not summaries:
            return 0
        through = max(local_day(r.start_time, tz) for r in summaries)
    assert through is not None
    if through < start:
        return 0
    totals = daily_totals(summaries, tz, start=start, through=through)
    rows = recompute_from(
        totals,
        start=start,
        through=through,
        previous=previous,
        first_day=first_day if previous is not None else None,
        constants=constants(settings),
    )
    # Inserted as plain rows in one executemany: nothing in the transaction needs them as ORM objects (the
    # flags read the series back with ``daily_rows``), and a series of years is thousands of rows.
    stored = [
        {
            "athlete_id": athlete.id,
            "day": row.day,
            "load": row.load,
            "acute": row.acute,
            "chronic": row.chronic,
            "distance_m": row.distance_m,
            "steps": row.steps,
            "stimulus": row.stimulus_sum,
        }
        for row in rows
    ]
    if stored:
        session.connection().execute(insert(_DAILY_TABLE), stored)
    return len(stored)


def daily_rows(
    session: Session, athlete_id: int, through: date | None = None, since: date | None = None
) -> list[DailyLoad]:
    """The stored daily series (``since`` to ``through`` inclusive when given), oldest first."""
    query = select(DailyLoad).where(DailyLoad.athlete_id == athlete_id)
    if through is not None:
        query = query.where(DailyLoad.day <= through)
    if since is not None:
        query = query.where(DailyLoad.day >= since)
    return list(session.scalars(query.order_by(DailyLoad.day)))


def _as_rows(rows: Sequence[DailyLoad], first: date | None) -> list[DailyLoadRow]:
    out: list[DailyLoadRow] = []
    for r in rows:
        days = (r.day - first).days + 1 if first else 1
        out.append(
            DailyLoadRow(r.day, r.load, r.distance_m, 0.0, r.steps, r.stimulus, 0, r.acute, r.chronic, None, days)
        )
    return out


# -- the one entry point -----------------------------------------------------------------------------------


def replan(
    db: Database,
    settings: Settings,
    athlete_id: int,
    now: datetime,
    *,
    chunk_runs: int = CHUNK_RUNS,
    on_chunk: Callable[[ChunkDone], None] | None = None,
) -> int:
    """Bring the athlete's figures up to date from their stale mark, oldest run first, in transactions of at
    most ``chunk_runs`` runs (each moves the mark forward, so a crash resumes where it stopped). Runs stored
    without load get their post-run prompt when fresh, as if they had arrived one by one in time order.

    The mark is read again, under the athlete's lock, before every chunk: runs stored meanwhile (and moving
    the mark back) are planned by this same call, which returns only once it has seen the mark clear.
    ``on_chunk`` hears of each chunk once it is committed (progress, console lines). Returns how many runs
    were looked at."""
    total = 0
    while True:
        with db.transaction() as session:
            lock_athlete(session, athlete_id)
            athlete = session.get(Athlete, athlete_id)
            if athlete is None or athlete.replan_from is None:
                return total
            done = _replan_chunk(session, settings, athlete, now, changed=set(), limit=chunk_runs)
            if athlete.replan_from is None:
                shoe_reminders(session, settings, athlete, now)
        total += done.runs
        if on_chunk is not None:
            on_chunk(done)


def _lookback(settings: Settings) -> timedelta:
    """How far before a run its rules look: cadence baseline, long-run percentile, spike and ramp windows."""
    load = settings.load
    days = max(
        load.cadence_baseline_days,
        7 * load.long_run_percentile_weeks,
        load.spike_window_days,
        2 * load.ramp_window_days,
    )
    return timedelta(days=days + 2)  # local days: a day of slack each side for the time zone


def _replan_chunk(
    session: Session, settings: Settings, athlete: Athlete, now: datetime, *, changed: set[int], limit: int | None
) -> ChunkDone:
    """Recompute from ``athlete.replan_from`` through at most ``limit`` runs (whole local days; None: to the
    end), then move the mark past them (None when the end was reached)."""
    assert athlete.replan_from is not None
    tz = athlete.timezone
    from_day = local_day(athlete.replan_from, tz)
    lo = _day_bounds(from_day, tz)[0]
    chunk, boundary = _chunk_runs(session, athlete, lo, limit)
    earlier = _primary_runs(session, athlete.id, lo - _lookback(settings), lo)
    first_run = _first_run_start(session, athlete.id)

    # 1. Loads, oldest first: a run's load depends on the runs before it (cadence baseline), never after.
    context = [*earlier, *chunk]
    starts = [r.start_time for r in context]
    baseline_span = timedelta(days=settings.load.cadence_baseline_days)
    model = repr(constants(settings))  # changed model constants recompute every load
    new_ids: set[int] = set()
    computed: list[int] = []
    todo: list[tuple[Run, list[tuple[float, float]], str]] = []
    for i, run in enumerate(context[len(earlier) :], start=len(earlier)):
        window = context[bisect_left(starts, run.start_time - baseline_span) : i]
        history = _cadence_history(run, window)
        speed = run.distance_m / run.timer_s if run.timer_s > 0 else 0.0
        key = _inputs_key(run, athlete, history, baseline_cadence_spm(history, speed), model)
        if run.load is None:
            new_ids.add(run.id)
        elif run.id not in changed and run.load.facts.get("inputs_key") == key:
            continue
        todo.append((run, history, key))
    # The samples of the runs whose load is computed, read together; each load still depends only on its run
    # and the earlier runs' records, never on another load, so computing after the loop changes nothing.
    packed = _packed_samples(session, [run.id for run, _, _ in todo])
    for run, history, key in todo:
        _store_load(session, run, _load_result(settings, athlete, run, history, packed.get(run.id)), key)
        computed.append(run.id)
    session.flush()

    # 2. The daily series of the chunk's days.
    through = None if boundary is None else local_day(boundary, tz) - timedelta(days=1)
    _rebuild_daily(session, settings, athlete, from_day, chunk, first_run, final=boundary is None, through=through)

    # 3. Flags and long-run marks, each from what was known when the run ended: earlier runs only.
    first_day = local_day(first_run, tz) if first_run is not None else from_day
    sums_from = from_day - timedelta(days=28)  # the 28-day sum of the chunk's first day
    days = _day_figures(session, athlete.id, since=sums_from, through=through)
    summaries = [_summary(r) for r in context]
    lookback = _lookback(settings)
    for i, run in enumerate(context[len(earlier) :], start=len(earlier)):
        previous = summaries[bisect_left(starts, run.start_time - lookback) : i]
        view = _day_view(settings, days, previous, summaries[i], tz, first_day)
        _classify(settings, athlete, run, summaries[i], previous, view)
    session.flush()

    # 4. Post-run prompts for fresh runs that are new (or changed), in time order.
    for run in chunk:
        if run.id not in changed and run.id not in new_ids:
            continue
        end = rules.run_end(run.start_time, run.elapsed_s)
        if rules.is_fresh(end, now, settings.fresh_window_hours):
            _post_run_prompt(session, settings, athlete, run, now)
    athlete.replan_from = boundary
    athlete.replan_progress_at = None if boundary is None else utcnow()  # alive, for marks.mark_stale
    session.flush()
    return ChunkDone(len(chunk), tuple(computed), tuple(r.id for r in chunk if r.id in new_ids))


def _chunk_runs(
    session: Session, athlete: Athlete, lo: datetime, limit: int | None
) -> tuple[list[Run], datetime | None]:
    """The primary runs from ``lo`` on, cut at a local-day boundary after at most ``limit`` runs (more only
    when one day holds more); the boundary (start of the first day left out) or None at the end."""
    query = (
        select(Run)
        .where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None), Run.start_time >= lo)
        .options(selectinload(Run.load))
        .order_by(Run.start_time, Run.id)
    )
    if limit is None:
        return list(session.scalars(query)), None
    runs = list(session.scalars(query.limit(limit + 1)))
    if len(runs) <= limit:
        return runs, None
    tz = athlete.timezone
    cut_day = local_day(runs[limit].start_time, tz)
    if cut_day == local_day(lo, tz):
        # One local day holds more than ``limit`` runs: take the whole day.
        boundary = _day_bounds(cut_day + timedelta(days=1), tz)[0]
        return _primary_runs(session, athlete.id, lo, boundary), boundary
    boundary = _day_bounds(cut_day, tz)[0]
    return [r for r in runs if r.start_time < boundary], boundary


@dataclass(frozen=True, slots=True)
class _DayView:
    """The daily series as of one run: the days before its own, plus its day so far (earlier runs and it)."""

    last_7: list[float]
    acwr: float | None
    history_days: int
    load_7d: float
    load_28d: float
    load_28d_before: float  # the 28 days before its day: what a week is compared with, never the run itself


class _DayFigures(NamedTuple):
    """The figures of a stored daily row the flags read (a plain row, not an ORM object: a history of years is
    thousands of days)."""

    day: date
    load: float
    acute: float
    chronic: float


def _day_figures(session: Session, athlete_id: int, *, since: date, through: date | None) -> dict[date, _DayFigures]:
    """The stored daily rows from ``since`` (to ``through`` when given), by day."""
    # On the table (Core), not the mapped class: the same values, without the ORM's row handling, which cost
    # three times as much over a history of thousands of days.
    table = _DAILY_TABLE.c
    query = select(table.day, table.load, table.acute, table.chronic).where(
        table.athlete_id == athlete_id, table.day >= since
    )
    if through is not None:
        query = query.where(table.day <= through)
    return {row[0]: _DayFigures(*row) for row in session.execute(query)}


def _day_view(
    settings: Settings,
    days: dict[date, _DayFigures],
    previous: Sequence[RunSummary],
    this: RunSummary,
    tz: str,
    first_day: date,
) -> _DayView:
    day = local_day(this.start_time, tz)
    lo = _day_bounds(day, tz)[0]
    today = this.load + sum(r.load for r in previous if r.start_time >= lo)
    seed = days.get(day - timedelta(days=1))
    state = EwmaState(seed.day, seed.acute, seed.chronic) if seed is not None and day > first_day else None
    row = recompute_from(
        [DayTotals(day, load=today)],
        start=day,
        through=day,
        previous=state,
        first_day=first_day if state is not None else None,
        constants=constants(settings),
    )[0]
    if state is None:
        history_days = (day - first_day).days + 1 if day >= first_day else 1
        acwr_value = acwr(row.acute, row.chronic, history_days, min_history_days=settings.load.acwr_min_history_days)
    else:
        acwr_value = row.acwr
    before = [days[d].load if (d := day - timedelta(days=k)) in days else 0.0 for k in range(27, 0, -1)]
    return _DayView(
        last_7=[*before[-6:], today],
        acwr=acwr_value,
        history_days=(day - first_day).days,
        load_7d=sum(before[-6:]) + today,
        load_28d=sum(before) + today,
        load_28d_before=sum(before) + (days[d].load if (d := day - timedelta(days=28)) in days else 0.0),
    )


def _store_load(session: Session, run: Run, result: RunLoadResult, inputs_key: str | None = None) -> None:
    facts: dict[str, Any] = {
        "psi": result.psi,
        "mean_force_bw": result.mean_force_bw,
        "peak_force_n": result.peak_force_n,
        "cadence_base_spm": result.cadence_base_spm,
        "grade_available": result.grade_available,
        "method": result.method,
        "mass_kg": result.mass_kg,
        "inputs_key": inputs_key,
    }
    if run.load is None:
        run.load = RunLoad(
            load=result.load,
            stimulus_sum=result.stimulus_sum,
            downhill_impact=result.downhill_impact,
            peak_force_bw=result.peak_force_bw,
            walking_steps=result.walking_steps,
            running_steps=result.running_steps,
            facts=facts,
            flags=[],
            model_version=result.model_version,
        )
    else:
        load = run.load
        load.load, load.stimulus_sum = result.load, result.stimulus_sum
        load.downhill_impact, load.peak_force_bw = result.downhill_impact, result.peak_force_bw
        load.walking_steps, load.running_steps = result.walking_steps, result.running_steps
        load.facts = {**load.facts, **facts}
        load.model_version = result.model_version


def _previous(session: Session, athlete: Athlete, run: Run, days: int) -> list[Run]:
    """The primary runs of the ``days`` before ``run`` (bounded both sides)."""
    since = run.start_time - timedelta(days=days)
    return [r for r in _primary_runs(session, athlete.id, since, run.start_time) if r.id != run.id]


def _classify(
    settings: Settings,
    athlete: Athlete,
    run: Run,
    this: RunSummary,
    previous: Sequence[RunSummary],
    view: _DayView,
) -> None:
    consts = constants(settings)
    tz = athlete.timezone
    flags = evaluate_flags(
        this,
        previous,
        last_7_daily_loads=view.last_7,
        acwr_value=view.acwr,
        history_days=view.history_days,
        tz=tz,
        constants=consts,
    )
    long_run = classify_long_run(run.timer_s, run.distance_m, run.start_time, previous, tz=tz, constants=consts)
    assert run.load is not None
    names = [f.name for f in flags]
    facts = {
        **run.load.facts,
        "flag_reasons": {f.name: f.reason for f in flags},
        "flag_levels": {f.name: f.level for f in flags},
        "long_run_rule": long_run.rule,
        "long_run_reason": long_run.reason,
        "acwr": view.acwr,
        "history_days": view.history_days,
        "load_7d": view.load_7d,
        "load_28d": view.load_28d,
        "load_28d_before": view.load_28d_before,
    }
    # Assign only what changed: a replan over a long history leaves unchanged rows unwritten.
    if run.load.flags != names:
        run.load.flags = names
    if run.load.long_run != long_run.is_long:
        run.load.long_run = long_run.is_long
    if run.load.facts != facts:
        run.load.facts = facts


def _flags_of(load: RunLoad) -> list[Flag]:
    reasons: dict[str, str] = load.facts.get("flag_reasons", {})
    levels: dict[str, str] = load.facts.get("flag_levels", {})
    return [Flag(name, levels.get(name, "caution"), reasons.get(name, name)) for name in load.flags]  # type: ignore[arg-type]


def given_on(session: Session, athlete_id: int, day: date) -> set[str]:
    """Routines already prompted on the athlete's local ``day``."""
    given: set[str] = set()
    for routines in session.scalars(
        select(Prompt.routines).where(Prompt.athlete_id == athlete_id, Prompt.local_day == day)
    ):
        given.update(routines)
    return given


def _post_run_prompt(session: Session, settings: Settings, athlete: Athlete, run: Run, now: datetime) -> Prompt | None:
    """Write the post-run prompt and its outbox rows for ``run`` (once: unique per run)."""
    key = f"run:{run.id}"
    # The same run seen from two sources is one run: a prompt already made for a copy that this run replaced
    # as the primary record counts as this run's prompt.
    copies = [run.id, *session.scalars(select(Run.id).where(Run.duplicate_of_id == run.id))]
    existing = session.scalar(
        select(Prompt).where(Prompt.athlete_id == athlete.id, Prompt.kind == "post_run", Prompt.run_id.in_(copies))
    )
    if existing is None:
        existing = session.scalar(
            select(Prompt).where(Prompt.athlete_id == athlete.id, Prompt.kind == "post_run", Prompt.dedupe_key == key)
        )
    if existing is not None:
        return existing
    assert run.load is not None
    tz = athlete.timezone
    end = rules.run_end(run.start_time, run.elapsed_s)
    day = end.astimezone(ZoneInfo(tz)).date()
    previous = _previous(session, athlete, run, HISTORY_DAYS)
    downhills = [
        r.load.downhill_impact
        for r in previous
        if r.load is not None and r.load.facts.get("grade_available") and r.timer_s > 0
    ]
    speeds = [r.distance_m / r.timer_s for r in previous if r.timer_s > 0]
    spike_days = [
        local_day(r.start_time, tz) for r in previous if r.load is not None and SPIKE_FLAGS.intersection(r.load.flags)
    ]
    iso_days = [
        p.local_day
        for p in session.scalars(
            select(Prompt).where(
                Prompt.athlete_id == athlete.id,
                Prompt.local_day >= day - timedelta(days=8),
                Prompt.local_day <= day,
            )
        )
        if TOE_ISOLATION in p.routines
    ]
    # The rolling sums as of this run (its day so far), stored by the classification.
    known = run.load.facts
    history = rules.HistoryFacts(
        recent_downhill_impacts=downhills,
        recent_speeds_mps=speeds,
        load_7d=float(known.get("load_7d", 0.0)),
        load_28d=float(known.get("load_28d", 0.0)),
        load_28d_before=None if known.get("load_28d_before") is None else float(known["load_28d_before"]),
        history_days=int(known.get("history_days", 0)),
        last_spike_day=max(spike_days) if spike_days else None,
        toe_isolation_days=iso_days,
    )
    facts = rules.RunFacts(
        start_time=run.start_time,
        end_time=end,
        timer_s=run.timer_s,
        distance_m=run.distance_m,
        load=run.load.load,
        long_run=_long_decision(run.load),
        downhill_impact=run.load.downhill_impact if run.load.facts.get("grade_available") else None,
        flags=_flags_of(run.load),
        sport=run.sport,
        sub_sport=run.sub_sport,
    )
    decision = rules.post_run_decision(
        facts,
        history,
        tz=tz,
        given_today=given_on(session, athlete.id, day),
        balance_level_now=athlete.balance_level,
    )
    # How the feet felt lately may make it gentler (the rules and their reasons are recommender.feel's).
    decision = feel.gentler(session, athlete, day, decision)
    if not decision.routines:
        return None
    prompt = Prompt(
        athlete_id=athlete.id,
        kind="post_run",
        dedupe_key=key,
        run_id=run.id,
        local_day=day,
        routines=decision.routines,
        reasons=decision.reasons,
        rule=decision.rule[:200],
        facts=_jsonable(
            {
                **decision.facts,
                "flags": [{"name": f.name, "level": f.level, "reason": f.reason} for f in decision.flags],
                "emphasis": decision.emphasis,
                "balance_level": decision.balance_level,
                "run": _run_facts(run),
            }
        ),
        created_at=now,
        due_at=rules.defer_for_quiet_hours(now, tz, athlete.quiet_start, athlete.quiet_end),
    )
    session.add(prompt)
    session.flush()
    create_deliveries(session, settings, athlete, prompt)
    return prompt


def _long_decision(load: RunLoad) -> Any:
    return LongRunDecision(
        is_long=load.long_run,
        rule=str(load.facts.get("long_run_rule", "")),
        reason=str(load.facts.get("long_run_reason", "")),
    )


def _run_facts(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "start_time": run.start_time.isoformat(),
        "sport": run.sport,
        "distance_km": round(run.distance_m / 1000, 2),
        "timer_s": round(run.timer_s),
        "steps": round(run.steps),
        "load": round(run.load.load) if run.load else None,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)
