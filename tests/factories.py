"""Runs for tests, stored straight into the database with their samples: no FIT file is encoded or decoded.

``parsed_run`` builds a steady run (constant speed and cadence, timer running) as a source would hand it over;
``store_runs`` stores runs through the one writer (``ingest.runs.store_parsed``: insert, session identity and
the replan mark) and then the planner's replan, either one run at a time (as live arrivals) or as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ingest.runs import store_parsed
from ingest.service import ingest_path
from ingest.store import FileReport
from ingest.strava.backfill import BackfillProgress
from ingest.strava.events import EventOutcome, drain, process_event
from ingest.strava.sync import backfill_account
from recommender.planner import ChunkDone, replan
from stridecare.db.athletes import ensure_athlete
from stridecare.db.engine import Database
from stridecare.domain.run import CadenceSource, ParsedRun, Samples
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.cli.ingest_cmds import planned


def steady_samples(
    duration_s: float, speed_mps: float, cadence_spm: float | None, *, interval_s: float = 10.0
) -> Samples:
    """One sample every ``interval_s`` seconds of a run at constant speed and cadence (None: no cadence)."""
    count = int(duration_s // interval_s) + 1
    t = [i * interval_s for i in range(count)]
    return Samples(
        t=t,
        distance_m=[x * speed_mps for x in t],
        speed_mps=[speed_mps] * count,
        cadence_spm=[cadence_spm] * count,
        altitude_m=[None] * count,
        timer_running=[True] * count,
    )


def parsed_run(
    start: datetime,
    *,
    minutes: float = 45.0,
    speed_mps: float = 3.0,
    cadence_spm: float | None = 170.0,
    key: str | None = None,
    source: str = "factory",
    sport: str = "running",
    with_samples: bool = True,
    interval_s: float = 10.0,
) -> ParsedRun:
    """A steady run starting at the aware ``start``; without cadence it is marked as estimated."""
    timer_s = minutes * 60
    steps = (cadence_spm or 0.0) * timer_s / 60
    samples = steady_samples(timer_s, speed_mps, cadence_spm, interval_s=interval_s) if with_samples else None
    if cadence_spm is None:
        cadence_source = CadenceSource.ESTIMATED
    else:
        cadence_source = CadenceSource.STREAM if with_samples else CadenceSource.SESSION
    return ParsedRun(
        source=source,
        source_key=key or f"{source}-{start.isoformat()}",
        sport=sport,
        sub_sport=None,
        start_time=start,
        utc_offset_s=None,
        elapsed_s=timer_s,
        timer_s=timer_s,
        distance_m=speed_mps * timer_s,
        ascent_m=None,
        descent_m=None,
        steps=steps,
        avg_cadence_spm=cadence_spm,
        cadence_source=cadence_source,
        samples=samples if samples is not None else Samples.empty(),
    )


def store_runs(
    db: Database,
    settings: Settings,
    athlete: str,
    runs: Sequence[ParsedRun],
    now: datetime,
    *,
    batch: bool = False,
    chunk_runs: int | None = None,
    on_chunk: Callable[[ChunkDone], None] | None = None,
) -> list[int]:
    """Insert ``runs`` for the athlete with handle ``athlete`` in the given order; returns their ids.

    ``batch=False``: each run stored in its own transaction and planned, as runs arrive live. ``batch=True``:
    every run in one transaction, then one :func:`recommender.planner.replan` in chunks of ``chunk_runs`` runs
    (the planner's default when None). ``on_chunk`` hears what each planning transaction did
    (``planner.ChunkDone``), in both modes.
    """
    ids: list[int] = []
    groups = [[parsed] for parsed in runs] if not batch else [list(runs)]
    for group in groups:
        with db.transaction() as session:
            owner = ensure_athlete(session, athlete, settings, lock=True)
            stored = store_parsed(session, owner, group)
            ids.extend(r.id for r in stored.runs)
            athlete_id = owner.id
        if chunk_runs is None:
            replan(db, settings, athlete_id, now, on_chunk=on_chunk)
        else:
            replan(db, settings, athlete_id, now, chunk_runs=chunk_runs, on_chunk=on_chunk)
    return ids


def history(first: datetime, count: int, *, seed: int = 11) -> list[ParsedRun]:
    """``count`` varied runs from ``first`` on: most days one run, some rest days, some double days, a weekly
    long run, a few without cadence; deterministic for ``seed``."""
    import random

    rng = random.Random(seed)
    out: list[ParsedRun] = []
    day = 0
    while len(out) < count:
        day += rng.choice([1, 1, 1, 2, 2, 3])
        start = first + timedelta(days=day, hours=rng.choice([6, 7, 12, 18]), minutes=rng.randrange(60))
        long = day % 7 == 6
        minutes = rng.choice([95, 110]) if long else rng.choice([30, 40, 45, 50, 60])
        speed = rng.choice([2.7, 2.9, 3.0, 3.2, 3.4])
        cadence = None if rng.random() < 0.08 else rng.choice([160.0, 166.0, 170.0, 176.0])
        out.append(parsed_run(start, minutes=minutes, speed_mps=speed, cadence_spm=cadence, interval_s=15))
        if len(out) < count and rng.random() < 0.1:
            later = start + timedelta(hours=5)
            out.append(parsed_run(later, minutes=25, speed_mps=2.8, cadence_spm=cadence, interval_s=15))
    return out


def ingest_planned(
    db: Database, settings: Settings, athlete: str, path: Path, now: datetime, **kwargs: Any
) -> FileReport:
    """``ingest.service.ingest_path`` followed, as every entry point ends, by the replan it owes (the command
    line's ``planned``); the report's runs carry their planned figures."""
    return planned(db, settings, ingest_path(db, settings, athlete, path, now, **kwargs), now)


def process_and_plan(rt: Runtime, event_id: int) -> EventOutcome:
    """``ingest.strava.events.process_event`` and then, as the event task does, the replan it owes."""
    outcome = process_event(rt, event_id)
    if outcome.replan_athlete is not None:
        replan(rt.db, rt.settings, outcome.replan_athlete, rt.now())
    return outcome


def drain_and_plan(rt: Runtime) -> list[str]:
    """``ingest.strava.events.drain`` with each event's replan, as the ``stridecare.strava_drain`` task runs it;
    the statuses of the events it processed, in order."""
    statuses: list[str] = []

    def after(_event_id: int, outcome: EventOutcome) -> None:
        statuses.append(outcome.status)
        if outcome.replan_athlete is not None:
            replan(rt.db, rt.settings, outcome.replan_athlete, rt.now())

    drain(rt, after)
    return statuses


def backfill_planned(rt: Runtime, account_id: int, **kwargs: Any) -> BackfillProgress | None:
    """``ingest.strava.sync.backfill_account`` with the planner as its replan, as the backfill task runs it."""
    return backfill_account(
        rt, account_id, replan=lambda athlete_id: replan(rt.db, rt.settings, athlete_id, rt.now()), **kwargs
    )
