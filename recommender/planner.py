"""After runs change: load per run, the daily series, flags, long runs, and the post-run prompt with its outbox.

Called inside the ingest transaction, so a run, its load, its prompt and the prompt's deliveries are written
together or not at all. The decisions themselves are the pure functions of ``stridecare.domain`` and
``recommender.rules``; this module reads their inputs from SQL and writes their results back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from delivery.outbox import create_deliveries
from recommender import rules
from recommender.routines import TOE_ISOLATION
from recommender.shoes import shoe_reminders
from stridecare.db.models import Athlete, DailyLoad, Prompt, Run, RunLoad
from stridecare.db.samples import unpack_samples
from stridecare.domain.flags import SPIKE_FLAGS, Flag, evaluate_flags
from stridecare.domain.history import (
    DailyLoadRow,
    EwmaState,
    RunSummary,
    daily_totals,
    local_day,
    recompute_from,
    rolling_sum,
)
from stridecare.domain.load import (
    LoadConstants,
    RunLoadResult,
    baseline_cadence_spm,
    load_constants_from_settings,
    run_load,
)
from stridecare.domain.long_run import classify_long_run
from stridecare.domain.run import CadenceSource, ParsedRun, Samples
from stridecare.settings import Settings

HISTORY_DAYS = 90


def constants(settings: Settings) -> LoadConstants:
    """The load model's constants from the settings."""
    return load_constants_from_settings(settings.load)


def parsed_from_row(run: Run) -> ParsedRun:
    """A stored run back in the domain's shape, samples included."""
    samples = unpack_samples(run.samples.data) if run.samples is not None else Samples.empty()
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
        samples=samples,
        name=run.name,
    )


def _primary_runs(session: Session, athlete_id: int, since: datetime | None = None) -> list[Run]:
    query = select(Run).where(Run.athlete_id == athlete_id, Run.duplicate_of_id.is_(None))
    if since is not None:
        query = query.where(Run.start_time >= since)
    return list(session.scalars(query.order_by(Run.start_time)))


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


def compute_run_load(session: Session, settings: Settings, athlete: Athlete, run: Run) -> RunLoadResult:
    """The model's figures for ``run`` with the athlete's cadence baseline at similar speed (90 days)."""
    since = run.start_time - timedelta(days=settings.load.cadence_baseline_days)
    history: list[tuple[float, float]] = []
    for other in _primary_runs(session, athlete.id, since):
        if other.id == run.id or other.start_time >= run.start_time or other.timer_s <= 0:
            continue
        if other.avg_cadence_spm and other.cadence_source != CadenceSource.ESTIMATED:
            history.append((other.distance_m / other.timer_s, other.avg_cadence_spm))
    speed = run.distance_m / run.timer_s if run.timer_s > 0 else 0.0
    base = baseline_cadence_spm(history, speed)
    return run_load(
        parsed_from_row(run),
        cadence_base_spm=base,
        sex=athlete.sex,
        mass_kg=athlete.body_mass_kg,
        constants=constants(settings),
    )


def refresh_daily(session: Session, settings: Settings, athlete: Athlete, from_day: date) -> list[DailyLoad]:
    """Recompute the athlete's daily rows from ``from_day`` on (a late, changed or deleted run)."""
    tz = athlete.timezone
    first = session.scalar(
        select(DailyLoad.day).where(DailyLoad.athlete_id == athlete.id).order_by(DailyLoad.day).limit(1)
    )
    previous_row = session.scalar(
        select(DailyLoad)
        .where(DailyLoad.athlete_id == athlete.id, DailyLoad.day < from_day)
        .order_by(DailyLoad.day.desc())
        .limit(1)
    )
    start = from_day
    previous: EwmaState | None = None
    first_day: date | None = None
    if previous_row is not None and first is not None:
        # Rows are contiguous from the first day, so the row before ``from_day`` is the seed.
        start = previous_row.day + timedelta(days=1)
        previous = EwmaState(previous_row.day, previous_row.acute, previous_row.chronic)
        first_day = first
    lo, _ = _day_bounds(start, tz)
    runs = [_summary(r) for r in _primary_runs(session, athlete.id, lo - timedelta(days=1))]
    runs = [r for r in runs if local_day(r.start_time, tz) >= start]
    session.execute(delete(DailyLoad).where(DailyLoad.athlete_id == athlete.id, DailyLoad.day >= start))
    if not runs:
        return []
    through = max(local_day(r.start_time, tz) for r in runs)
    totals = daily_totals(runs, tz, start=start, through=through)
    rows = recompute_from(
        totals,
        start=start,
        through=through,
        previous=previous,
        first_day=first_day,
        constants=constants(settings),
    )
    stored = [
        DailyLoad(
            athlete_id=athlete.id,
            day=row.day,
            load=row.load,
            acute=row.acute,
            chronic=row.chronic,
            distance_m=row.distance_m,
            steps=row.steps,
            stimulus=row.stimulus_sum,
        )
        for row in rows
    ]
    session.add_all(stored)
    session.flush()
    return stored


def _day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    from stridecare.domain.history import utc_bounds_of_local_day

    return utc_bounds_of_local_day(day, tz)


def daily_rows(session: Session, athlete_id: int, through: date | None = None) -> list[DailyLoad]:
    """The stored daily series, oldest first."""
    query = select(DailyLoad).where(DailyLoad.athlete_id == athlete_id)
    if through is not None:
        query = query.where(DailyLoad.day <= through)
    return list(session.scalars(query.order_by(DailyLoad.day)))


def _as_rows(rows: Sequence[DailyLoad], first: date | None) -> list[DailyLoadRow]:
    out: list[DailyLoadRow] = []
    for r in rows:
        days = (r.day - first).days + 1 if first else 1
        out.append(
            DailyLoadRow(r.day, r.load, r.distance_m, 0.0, r.steps, r.stimulus, 0, r.acute, r.chronic, None, days)
        )
    return out


def runs_changed(session: Session, settings: Settings, athlete: Athlete, runs: Sequence[Run], now: datetime) -> None:
    """New or changed runs: load, daily series from the earliest affected day, flags, long run, prompts."""
    primaries = [r for r in runs if r.duplicate_of_id is None]
    if not primaries:
        return
    _recompute(session, settings, athlete, primaries, min(r.start_time for r in primaries))
    for run in sorted(primaries, key=lambda r: r.start_time):
        end = rules.run_end(run.start_time, run.elapsed_s)
        if rules.is_fresh(end, now, settings.fresh_window_hours):
            post_run_prompt(session, settings, athlete, run, now)
    shoe_reminders(session, settings, athlete, now)  # a pair past its remind-at distance: once


def run_removed(session: Session, settings: Settings, athlete: Athlete, start_time: datetime) -> None:
    """A run was deleted: recompute the runs that compared against it and the daily series from its day."""
    _recompute(session, settings, athlete, [], start_time)


def _recompute(session: Session, settings: Settings, athlete: Athlete, changed: Sequence[Run], since: datetime) -> None:
    """Load, daily series, flags and long-run rules for ``changed`` and every later run within the look-back
    window: a run that arrives late for an earlier date, or is deleted, changes what later runs compare against
    (their cadence baseline, flags and long-run rules)."""
    ids = {r.id for r in changed}
    horizon = max([since, *(r.start_time for r in changed)]) + timedelta(days=settings.load.cadence_baseline_days)
    later = [r for r in _primary_runs(session, athlete.id, since) if r.id not in ids and r.start_time <= horizon]
    affected = sorted([*changed, *later], key=lambda r: r.start_time)
    for run in affected:
        _store_load(session, run, compute_run_load(session, settings, athlete, run))
    session.flush()
    refresh_daily(session, settings, athlete, local_day(since, athlete.timezone))
    for run in affected:
        _classify(session, settings, athlete, run)
    session.flush()


def _store_load(session: Session, run: Run, result: RunLoadResult) -> None:
    facts: dict[str, Any] = {
        "psi": result.psi,
        "mean_force_bw": result.mean_force_bw,
        "peak_force_n": result.peak_force_n,
        "cadence_base_spm": result.cadence_base_spm,
        "grade_available": result.grade_available,
        "method": result.method,
        "mass_kg": result.mass_kg,
    }
    if run.load is None:
        run.load = RunLoad(
            load=result.load,
            stimulus_sum=result.stimulus_sum,
            downhill_impact=result.downhill_impact,
            peak_force_bw=result.peak_force_bw,
            facts=facts,
            flags=[],
            model_version=result.model_version,
        )
    else:
        load = run.load
        load.load, load.stimulus_sum = result.load, result.stimulus_sum
        load.downhill_impact, load.peak_force_bw = result.downhill_impact, result.peak_force_bw
        load.facts = {**load.facts, **facts}
        load.model_version = result.model_version


def _previous(session: Session, athlete: Athlete, run: Run, days: int) -> list[Run]:
    since = run.start_time - timedelta(days=days)
    return [r for r in _primary_runs(session, athlete.id, since) if r.start_time < run.start_time and r.id != run.id]


def _classify(session: Session, settings: Settings, athlete: Athlete, run: Run) -> None:
    consts = constants(settings)
    prev_runs = _previous(session, athlete, run, 7 * settings.load.long_run_percentile_weeks + 31)
    previous = [_summary(r) for r in prev_runs]
    this = _summary(run)
    day = local_day(run.start_time, athlete.timezone)
    stored = daily_rows(session, athlete.id, through=day)
    first = stored[0].day if stored else None
    rows = _as_rows(stored, first)
    last7 = [r.load for r in rows if (day - r.day).days < 7]
    today = rows[-1] if rows and rows[-1].day == day else None
    acwr_value = None
    if today is not None and today.chronic > 0 and today.history_days >= settings.load.acwr_min_history_days:
        acwr_value = today.acute / today.chronic
    flags = evaluate_flags(this, previous, last_7_daily_loads=last7, acwr_value=acwr_value, constants=consts)
    long_run = classify_long_run(run.timer_s, run.distance_m, run.start_time, previous, constants=consts)
    assert run.load is not None
    run.load.flags = [f.name for f in flags]
    run.load.long_run = long_run.is_long
    run.load.facts = {
        **run.load.facts,
        "flag_reasons": {f.name: f.reason for f in flags},
        "flag_levels": {f.name: f.level for f in flags},
        "long_run_rule": long_run.rule,
        "long_run_reason": long_run.reason,
        "acwr": acwr_value,
    }


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


def post_run_prompt(session: Session, settings: Settings, athlete: Athlete, run: Run, now: datetime) -> Prompt | None:
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
    stored = daily_rows(session, athlete.id, through=day)
    first = stored[0].day if stored else None
    rows = _as_rows(stored, first)
    spike_days = [
        local_day(r.start_time, tz) for r in previous if r.load is not None and SPIKE_FLAGS.intersection(r.load.flags)
    ]
    iso_days = [
        p.local_day
        for p in session.scalars(
            select(Prompt).where(Prompt.athlete_id == athlete.id, Prompt.local_day >= day - timedelta(days=8))
        )
        if TOE_ISOLATION in p.routines
    ]
    history = rules.HistoryFacts(
        recent_downhill_impacts=downhills,
        recent_speeds_mps=speeds,
        load_7d=rolling_sum(rows, day, 7),
        load_28d=rolling_sum(rows, day, 28),
        history_days=(day - first).days + 1 if first else 0,
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
    from stridecare.domain.long_run import LongRunDecision

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
