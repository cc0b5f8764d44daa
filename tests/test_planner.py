"""Load is recomputed incrementally: a run that arrives late for an earlier date, or is deleted, leaves the same
figures as if history had always been that way.

Each test compares two athletes on one database: one gets the history as it happened, the other as tested.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from factories import ingest_planned
from fitgen import write_activity
from sqlalchemy import select

from ingest.runs import remove_runs
from recommender.planner import replan
from stridecare.db.athletes import get_athlete
from stridecare.db.models import Athlete, DailyLoad, Run
from stridecare.runtime import Runtime

START = datetime(2026, 2, 2, 6, 30, tzinfo=UTC)
NOW = START + timedelta(days=90)


def write_history(folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    rng = random.Random(7)
    for i in range(16):
        path = folder / f"r{i:02d}.fit"
        write_activity(
            path,
            start=START + timedelta(days=2 * i),
            duration_s=rng.choice([1800, 2400, 3600, 5600]),
            speed_mps=rng.choice([2.8, 3.0, 3.3]),
            cadence_rpm=rng.choice([80, 84, 88]),
            sample_interval_s=5,
        )
        paths.append(path)
    return paths


def snapshot(
    rt: Runtime, athlete: str
) -> tuple[list[tuple[str, float, bool, list[str]]], list[tuple[str, float, float, float]]]:
    with rt.db.transaction() as s:
        who = get_athlete(s, athlete).id
        runs = [
            (r.start_time.isoformat(), round(r.load.load, 6), r.load.long_run, sorted(r.load.flags))
            for r in s.scalars(select(Run).where(Run.athlete_id == who).order_by(Run.start_time))
            if r.load
        ]
        days = [
            (d.day.isoformat(), round(d.load, 6), round(d.acute, 6), round(d.chronic, 6))
            for d in s.scalars(select(DailyLoad).where(DailyLoad.athlete_id == who).order_by(DailyLoad.day))
        ]
    return runs, days


def ingest_all(rt: Runtime, athlete: str, paths: list[Path]) -> None:
    for p in paths:
        ingest_planned(rt.db, rt.settings, athlete, p, NOW)


def remove_run(rt: Runtime, athlete: str, index: int) -> None:
    """Delete the athlete's ``index``-th run by start time, as removing a run does."""
    with rt.db.transaction() as s:
        owner = get_athlete(s, athlete)
        victim = s.scalars(
            select(Run).where(Run.athlete_id == owner.id).order_by(Run.start_time).offset(index).limit(1)
        ).one()
        remove_runs(s, owner, [victim])
        owner_id = owner.id
    replan(rt.db, rt.settings, owner_id, NOW)


def test_late_arrivals_give_the_same_figures_as_arrival_in_order(tx_rt: Runtime, tmp_path: Path) -> None:
    paths = write_history(tmp_path / "files")
    ingest_all(tx_rt, "in-order", paths)
    order = paths[:]
    random.Random(3).shuffle(order)
    assert order != paths
    ingest_all(tx_rt, "shuffled", order)
    a, b = snapshot(tx_rt, "in-order"), snapshot(tx_rt, "shuffled")
    assert len(a[0]) == 16 and a[1][0][0] == "2026-02-02"
    assert a == b


def test_deleting_a_run_recomputes_from_its_day(tx_rt: Runtime, tmp_path: Path) -> None:
    paths = write_history(tmp_path / "files")
    ingest_all(tx_rt, "full", paths)
    ingest_all(tx_rt, "without", paths[:5] + paths[6:])
    remove_run(tx_rt, "full", 5)
    full_days = snapshot(tx_rt, "full")[1]
    assert full_days == snapshot(tx_rt, "without")[1]
    assert len(full_days) == 31


@pytest.mark.parametrize("mass", [55.0, 90.0])
def test_body_mass_changes_no_load(tx_rt: Runtime, tmp_path: Path, mass: float) -> None:
    path = tmp_path / "run.fit"
    write_activity(path, start=START, duration_s=3000, speed_mps=3.333, cadence_rpm=85)
    with tx_rt.db.transaction() as s:
        s.add(Athlete(name="heavy", timezone="UTC", body_mass_kg=mass))
    loads = []
    for athlete in ("light", "heavy"):
        report = ingest_planned(tx_rt.db, tx_rt.settings, athlete, path, NOW)
        loads.append(report.runs[0]["load"])
    assert loads[0] == loads[1] == pytest.approx(9124, rel=0.005)  # the design's worked example
    with tx_rt.db.transaction() as s:
        heavy = get_athlete(s, "heavy").id
        facts = s.scalars(select(Run).where(Run.athlete_id == heavy)).one().load.facts  # type: ignore[union-attr]
    assert facts["peak_force_n"] == pytest.approx(2.545 * mass * 9.81, rel=0.005)


def test_deleting_the_first_run_starts_the_series_at_the_next_one(tx_rt: Runtime, tmp_path: Path) -> None:
    paths = write_history(tmp_path / "files")
    ingest_all(tx_rt, "full", paths[:6])
    ingest_all(tx_rt, "without", paths[1:6])
    remove_run(tx_rt, "full", 0)
    assert snapshot(tx_rt, "full") == snapshot(tx_rt, "without")
    assert snapshot(tx_rt, "full")[1][0][0] == "2026-02-04"  # the second run's day; the first day's row is gone
