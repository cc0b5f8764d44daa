"""What the dashboard shows, as plain data: the daily load series with acute and chronic averages, flagged runs,
weekly distance and steps, recent runs with their prompts, and routine adherence.

Kept apart from the web layer so that it is tested against a database without a browser, and so that the
weekly digest can reuse the same figures.

A page costs what its range holds, not what the history holds: every read is a plain-row query bounded by the
range (through the (athlete, start) and (athlete, day) indexes), counts and sums are SQL aggregates, the shared
figures read their 28 days (:func:`recommender.status.figures_as_of`), and no run's load row is fetched on its
own (``tests/test_page_growth.py`` counts the statements and rows at N and 4N days of history).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, cast, func, select
from sqlalchemy.orm import Session, joinedload, raiseload

from recommender.figures import UNITS
from recommender.planner import constants
from recommender.run_detail import flag_explanation, flag_summary, flag_title
from recommender.shoes import shoe_usage
from recommender.silence import why_no_prompt
from recommender.status import figures_as_of
from stridecare.db.models import Athlete, Completion, DailyLoad, Prompt, Run, RunLoad
from stridecare.domain.history import EwmaState, local_day, recompute_from, utc_bounds_of_local_day
from stridecare.settings import Settings

ADHERENCE_DAYS = 28
RECENT_RUNS = 10
# Prompts that ask for a routine; digests and shoe reminders ask for none and are not adherence.
ROUTINE_KINDS = ("post_run", "weekly_balance")


def daily_series(
    session: Session, settings: Settings, athlete: Athlete, first: date, last: date
) -> list[dict[str, Any]]:
    """One entry per local day from ``first`` to ``last`` inclusive: load, acute, chronic, distance, steps.

    Days before the athlete's history are zeros; days after the last stored row (rest days up to today) carry
    the averages decayed the same way ``stridecare status`` decays them.
    """
    # Plain rows of the range only (never ORM objects, never the days before it): the page costs the same
    # whatever the length of the history.
    rows: dict[date, tuple[float, float, float, float, float]] = {
        day: (load, acute, chronic, distance, steps)
        for day, load, acute, chronic, distance, steps in session.execute(
            select(
                DailyLoad.day, DailyLoad.load, DailyLoad.acute, DailyLoad.chronic, DailyLoad.distance_m, DailyLoad.steps
            ).where(DailyLoad.athlete_id == athlete.id, DailyLoad.day >= first, DailyLoad.day <= last)
        )
    }
    stored_last = session.execute(
        select(DailyLoad.day, DailyLoad.acute, DailyLoad.chronic)
        .where(DailyLoad.athlete_id == athlete.id)
        .order_by(DailyLoad.day.desc())
        .limit(1)
    ).first()
    decayed: dict[date, tuple[float, float]] = {}
    if stored_last is not None and stored_last.day < last:
        first_day = session.scalar(
            select(DailyLoad.day).where(DailyLoad.athlete_id == athlete.id).order_by(DailyLoad.day).limit(1)
        )
        for row in recompute_from(
            [],
            start=stored_last.day + timedelta(days=1),
            through=last,
            previous=EwmaState(stored_last.day, stored_last.acute, stored_last.chronic),
            first_day=first_day,
            constants=constants(settings),
        ):
            decayed[row.day] = (row.acute, row.chronic)
    out: list[dict[str, Any]] = []
    day, one_day = first, timedelta(days=1)
    while day <= last:
        stored = rows.get(day)
        if stored is not None:
            load, acute, chronic, distance, steps = stored
        else:
            acute, chronic = decayed.get(day, (0.0, 0.0))
            load = distance = steps = 0.0
        out.append(
            {
                "day": day.isoformat(),
                "load": round(load, 1),
                "acute": round(acute, 1),
                "chronic": round(chronic, 1),
                "distance_m": round(distance, 1),
                "steps": round(steps),
            }
        )
        day += one_day
    return out


def _utc_window(athlete: Athlete, first: date, last: date) -> tuple[datetime, datetime]:
    """The UTC instants bounding local days ``first``..``last`` of the athlete."""
    return utc_bounds_of_local_day(first, athlete.timezone)[0], utc_bounds_of_local_day(last, athlete.timezone)[1]


def _primary_between(athlete: Athlete, first: date, last: date) -> list[ColumnElement[bool]]:
    """The conditions of the athlete's primary runs on local days ``first``..``last`` (the (athlete, start)
    index bounds the rows read)."""
    lo, hi = _utc_window(athlete, first, last)
    return [Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None), Run.start_time >= lo, Run.start_time < hi]


def _run_count(session: Session, athlete: Athlete, first: date, last: date) -> int:
    return int(session.scalar(select(func.count(Run.id)).where(*_primary_between(athlete, first, last))) or 0)


def week_totals(session: Session, athlete: Athlete, first: date, last: date) -> dict[str, Any]:
    """Distance, time, steps, load and run count of the primary runs on local days ``first``..``last``."""
    n, distance, timer, steps, load = session.execute(
        select(
            func.count(Run.id),
            func.sum(Run.distance_m),
            func.sum(Run.timer_s),
            func.sum(Run.steps),
            func.sum(RunLoad.load),  # a run not planned yet has no load row: it adds nothing
        )
        .outerjoin(RunLoad, RunLoad.run_id == Run.id)
        .where(*_primary_between(athlete, first, last))
    ).one()
    return {
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        # A sum over no rows is NULL: 0, as an empty week has always shown it.
        "runs": int(n),
        "distance_m": round(distance or 0, 1),
        "timer_s": round(timer or 0),
        "steps": round(steps or 0),
        "load": round(load or 0, 1),
    }


def weekly_table(session: Session, athlete: Athlete, first: date, last: date) -> list[dict[str, Any]]:
    """Per ISO week touching ``first``..``last``: distance, time, steps, load and runs, oldest first."""
    weeks: dict[date, dict[str, Any]] = {}
    monday = first - timedelta(days=first.weekday())
    while monday <= last:
        iso = monday.isocalendar()
        weeks[monday] = {
            "week": f"{iso.year}-W{iso.week:02d}",
            "week_start": monday.isoformat(),
            "runs": 0,
            "distance_m": 0.0,
            "timer_s": 0.0,
            "steps": 0.0,
            "load": 0.0,
        }
        monday += timedelta(days=7)
    for start, distance, timer, steps, load in session.execute(
        select(Run.start_time, Run.distance_m, Run.timer_s, Run.steps, RunLoad.load)
        .outerjoin(RunLoad, RunLoad.run_id == Run.id)
        .where(*_primary_between(athlete, min(weeks), last))
        .order_by(Run.start_time)
    ):
        day = local_day(start, athlete.timezone)
        week = weeks[day - timedelta(days=day.weekday())]
        week["runs"] += 1
        week["distance_m"] += distance
        week["timer_s"] += timer
        week["steps"] += steps
        week["load"] += load if load is not None else 0.0
    return [
        {
            **w,
            "distance_m": round(w["distance_m"], 1),
            "timer_s": round(w["timer_s"]),
            "steps": round(w["steps"]),
            "load": round(w["load"], 1),
        }
        for w in weeks.values()
    ]


def routine_prompts(session: Session, athlete: Athlete, first: date, last: date) -> list[Prompt]:
    """The athlete's prompts that asked for routines, made for local days ``first``..``last``."""
    return list(
        session.scalars(
            select(Prompt).where(
                Prompt.athlete_id == athlete.id,
                Prompt.kind.in_(ROUTINE_KINDS),
                Prompt.local_day >= first,
                Prompt.local_day <= last,
            )
        )
    )


def adherence(session: Session, athlete: Athlete, first: date, last: date) -> list[dict[str, Any]]:
    """Per routine: how often it was prompted on local days ``first``..``last`` and how often reported done."""
    routines_by_prompt = {
        prompt_id: set(routines)
        for prompt_id, routines in session.execute(
            select(Prompt.id, Prompt.routines).where(
                Prompt.athlete_id == athlete.id,
                Prompt.kind.in_(ROUTINE_KINDS),
                Prompt.local_day >= first,
                Prompt.local_day <= last,
            )
        )
    }
    prompted: dict[str, int] = defaultdict(int)
    for keys in routines_by_prompt.values():
        for key in keys:
            prompted[key] += 1
    done: dict[str, int] = defaultdict(int)
    if routines_by_prompt:
        for prompt_id, routine in session.execute(
            select(Completion.prompt_id, Completion.routine).where(Completion.prompt_id.in_(list(routines_by_prompt)))
        ):
            # A completion counts for a routine that prompt asked for (Completion is unique per prompt+routine).
            if routine in routines_by_prompt.get(prompt_id, set()):
                done[routine] += 1
    return [
        {
            "routine": key,
            "prompted": prompted[key],
            "done": done[key],
            "rate": round(done[key] / prompted[key], 3) if prompted[key] else None,
        }
        for key in sorted(prompted)
    ]


# A run's columns as the runs list and the flags read them: the run and its load row, plain values.
_RUN_ROW = (
    Run.id,
    Run.start_time,
    Run.name,
    Run.sport,
    Run.distance_m,
    Run.timer_s,
    Run.steps,
    RunLoad.run_id.label("load_id"),
    RunLoad.load,
    RunLoad.long_run,
    RunLoad.flags,
    RunLoad.facts,
)


def _no_prompt_reasons(session: Session, settings: Settings, ids: list[int]) -> dict[int, str]:
    """Why each of the runs ``ids`` (which have no prompt) got none: a few runs of the range, each with its load
    row loaded with it (no lazy load per run)."""
    if not ids:
        return {}
    runs = session.scalars(select(Run).options(joinedload(Run.load), raiseload("*")).where(Run.id.in_(ids)))
    return {run.id: why_no_prompt(session, settings, run) for run in runs}


def recent_runs(
    session: Session,
    athlete: Athlete,
    limit: int = RECENT_RUNS,
    first: date | None = None,
    last: date | None = None,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """The newest primary runs (on local days ``first``..``last`` when given) with their flags and the prompts
    made for them (routines, done or not); with ``settings``, why a run without a prompt got none."""
    query = (
        select(*_RUN_ROW)
        .outerjoin(RunLoad, RunLoad.run_id == Run.id)
        .where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None))
    )
    if first is not None:
        query = query.where(Run.start_time >= utc_bounds_of_local_day(first, athlete.timezone)[0])
    if last is not None:
        query = query.where(Run.start_time < utc_bounds_of_local_day(last, athlete.timezone)[1])
    runs = list(session.execute(query.order_by(Run.start_time.desc()).limit(limit)))
    prompts: dict[int | None, list[Any]] = defaultdict(list)
    if runs:
        for p in session.execute(
            select(Prompt.id, Prompt.run_id, Prompt.kind, Prompt.routines, Prompt.done_at, Prompt.created_at).where(
                Prompt.athlete_id == athlete.id, Prompt.run_id.in_([r.id for r in runs])
            )
        ):
            prompts[p.run_id].append(p)
    silent = (
        _no_prompt_reasons(session, settings, [r.id for r in runs if not prompts.get(r.id)])
        if settings is not None
        else {}
    )
    out: list[dict[str, Any]] = []
    for run in runs:
        loaded = run.load_id is not None
        facts = run.facts if loaded and isinstance(run.facts, dict) else {}
        out.append(
            {
                "id": run.id,
                "day": local_day(run.start_time, athlete.timezone).isoformat(),
                "start_time": run.start_time.isoformat(),
                "name": run.name,
                "sport": run.sport,
                "distance_m": round(run.distance_m, 1),
                "timer_s": round(run.timer_s),
                "steps": round(run.steps),
                "load": round(run.load, 1) if loaded else None,
                "long_run": bool(run.long_run) if loaded else False,
                "flags": list(run.flags) if loaded else [],
                "flag_reasons": dict(facts.get("flag_reasons", {})),
                "no_prompt_reason": silent.get(run.id),
                "prompts": [
                    {
                        "id": p.id,
                        "kind": p.kind,
                        "routines": list(p.routines),
                        "done": p.done_at is not None,
                        "done_at": p.done_at.isoformat() if p.done_at else None,
                    }
                    for p in sorted(prompts.get(run.id, []), key=lambda p: p.created_at)
                ],
            }
        )
    return out


def flagged_runs(session: Session, athlete: Athlete, first: date, last: date) -> list[dict[str, Any]]:
    """Primary runs on local days ``first``..``last`` that raised a flag, with each flag's reason."""
    out: list[dict[str, Any]] = []
    for run_id, start, flags, facts in session.execute(
        select(Run.id, Run.start_time, RunLoad.flags, RunLoad.facts)
        .join(RunLoad, RunLoad.run_id == Run.id)
        .where(
            *_primary_between(athlete, first, last),
            # Only flagged runs reach Python (the list is stored as JSON text; most runs raise none).
            cast(RunLoad.flags, String) != "[]",
        )
        .order_by(Run.start_time)
    ):
        if not flags:
            continue
        reasons: dict[str, str] = facts.get("flag_reasons", {}) if isinstance(facts, dict) else {}
        out.append(
            {
                "run_id": run_id,
                "day": local_day(start, athlete.timezone).isoformat(),
                "flags": [
                    {"name": f, "reason": reasons.get(f, f), "summary": flag_summary(reasons.get(f, f))} for f in flags
                ],
            }
        )
    return out


def flag_kinds(flagged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each kind of flag raised in ``flagged`` once, in the order of first appearance, with its explanation and
    how many runs raised it."""
    kinds: dict[str, dict[str, Any]] = {}
    for run in flagged:
        for f in run["flags"]:
            kind = kinds.setdefault(
                f["name"],
                {
                    "name": f["name"],
                    "title": flag_title(f["name"]),
                    "explanation": flag_explanation(f["name"]),
                    "runs": 0,
                },
            )
            kind["runs"] += 1
    return list(kinds.values())


# The ranges a reader can pick: key → (label, days; None for everything since the first run).
RANGES: dict[str, tuple[str, int | None]] = {
    "6w": ("6 weeks", 42),
    "6m": ("6 months", 183),
    "1y": ("a year", 365),
    "all": ("all", None),
}
DEFAULT_DAYS = 42
RANGE_RUNS = 60  # runs listed under the chart, newest first
# Beyond these many days a bar stands for a week, beyond the second for a month: a phone has ~360 px.
WEEK_BINS_AFTER, MONTH_BINS_AFTER = 62, 400


def first_run_day(session: Session, athlete: Athlete) -> date | None:
    """The local day of the athlete's first primary run, None before any."""
    first = session.scalar(
        select(Run.start_time)
        .where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None))
        .order_by(Run.start_time)
        .limit(1)
    )
    return local_day(first, athlete.timezone) if first is not None else None


def _last_run_day(session: Session, athlete: Athlete) -> date | None:
    last = session.scalar(
        select(Run.start_time)
        .where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None))
        .order_by(Run.start_time.desc())
        .limit(1)
    )
    return local_day(last, athlete.timezone) if last is not None else None


def default_range(session: Session, athlete: Athlete, today: date, last: date | None = None) -> str:
    """The shortest range that shows the newest run (on local day ``last``, looked up when not given): an
    imported archive opens on its runs, not on empty weeks."""
    last = last if last is not None else _last_run_day(session, athlete)
    if last is None:
        return "6w"
    for key, (_, days) in RANGES.items():
        if days is None or (today - last).days < days:
            return key
    return "all"


def range_first_day(session: Session, athlete: Athlete, today: date, key: str) -> date:
    """The first local day of range ``key`` ending ``today``; ``all`` starts at the first run (or 6 weeks back)."""
    if key not in RANGES:
        raise ValueError(f"unknown range {key!r}; one of {', '.join(RANGES)}")
    days = RANGES[key][1]
    if days is not None:
        return today - timedelta(days=days - 1)
    first = first_run_day(session, athlete)
    fallback = today - timedelta(days=DEFAULT_DAYS - 1)
    return min(first, fallback) if first is not None else fallback


def bin_unit(n_days: int) -> str:
    """``day``, ``week`` or ``month``: what one bar of a chart over ``n_days`` stands for."""
    if n_days > MONTH_BINS_AFTER:
        return "month"
    if n_days > WEEK_BINS_AFTER:
        return "week"
    return "day"


def binned(days: list[dict[str, Any]], unit: str) -> list[dict[str, Any]]:
    """The daily series grouped into bars of ``unit``.

    A bar's height is the mean daily load of its days (ref. steps/day), so that bars, acute and chronic share
    one axis whatever a bar stands for; ``load`` is the bin's total. Acute and chronic are their values on the
    bin's last day.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in days:
        day = date.fromisoformat(d["day"])
        if unit == "day":
            key = day
        elif unit == "week":
            key = day - timedelta(days=day.weekday())
        else:
            key = day.replace(day=1)
        groups.setdefault(key.isoformat(), []).append(d)
    out: list[dict[str, Any]] = []
    for start, members in groups.items():
        total = sum(m["load"] for m in members)
        out.append(
            {
                "start": start,
                "end": members[-1]["day"],
                "days": len(members),
                "load": round(total, 1),
                "per_day": round(total / len(members), 1),
                "acute": members[-1]["acute"],
                "chronic": members[-1]["chronic"],
                "distance_m": round(sum(m["distance_m"] for m in members), 1),
                "steps": round(sum(m["steps"] for m in members)),
            }
        )
    return out


def range_totals(days: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """Sums over a daily series: load (ref. steps), distance, steps, and how many runs."""
    return {
        "runs": runs,
        "load": round(sum(d["load"] for d in days), 1),
        "distance_m": round(sum(d["distance_m"] for d in days), 1),
        "steps": round(sum(d["steps"] for d in days)),
    }


def dashboard_data(
    session: Session,
    settings: Settings,
    athlete: Athlete,
    now: datetime,
    days: int | None = None,
    range_key: str | None = None,
) -> dict[str, Any]:
    """Everything the dashboard page shows for a range ending today (``now`` in the athlete's time zone).

    ``range_key`` is one of :data:`RANGES`; without it, ``days`` local days (a custom window), else the
    shortest range that shows the newest run. Plain JSON-able values only.
    """
    today = local_day(now, athlete.timezone)
    last_run = _last_run_day(session, athlete)
    if days is not None and range_key is None:
        if days < 1:
            raise ValueError("days must be at least 1")
        key = "custom"
        first = today - timedelta(days=days - 1)
    else:
        key = range_key or default_range(session, athlete, today, last_run)
        first = range_first_day(session, athlete, today, key)
    series = daily_series(session, settings, athlete, first, today)
    unit = bin_unit(len(series))
    # Weeks of a long range are the bars themselves; the table keeps to the last 12 to stay readable.
    week_from = max(first, today - timedelta(days=83))
    runs_total = _run_count(session, athlete, first, today)
    last_7 = sum(d["load"] for d in series[-7:])
    flags = flagged_runs(session, athlete, first, today)
    return {
        "athlete": athlete.name,
        "display_name": athlete.display_name or athlete.name,
        "today": today.isoformat(),
        "first_day": first.isoformat(),
        "range": key,
        "ranges": [{"key": k, "label": label} for k, (label, _) in RANGES.items()],
        "bin": unit,
        "days": series,
        "bins": binned(series, unit),
        "totals": range_totals(series, runs_total),
        "acute": series[-1]["acute"],
        "chronic": series[-1]["chronic"],
        "last_7_days": round(last_7, 1),
        # The shared figures of today under their shared names (recommender.figures), as every screen shows them.
        "figures": figures_as_of(session, settings, athlete, today).values(),
        "units": UNITS,
        "flags": flags,
        "flag_kinds": flag_kinds(flags),
        "weeks": weekly_table(session, athlete, week_from, today),
        "recent_runs": recent_runs(session, athlete, limit=RANGE_RUNS, first=first, last=today, settings=settings),
        "runs_in_range": runs_total,
        "adherence": adherence(session, athlete, today - timedelta(days=ADHERENCE_DAYS - 1), today),
        "adherence_days": ADHERENCE_DAYS,
        "shoes": [u.as_json() for u in shoe_usage(session, athlete)],
        "has_runs": last_run is not None,
    }
