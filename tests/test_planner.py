"""Load is recomputed incrementally: a run that arrives late for an earlier date, or is deleted, leaves the same
figures as if history had always been that way."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from fitgen import write_activity
from sqlalchemy import delete, select

from ingest.service import ingest_path
from recommender.planner import run_removed
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


def snapshot(rt: Runtime) -> tuple[list[tuple[str, float, bool, list[str]]], list[tuple[str, float, float, float]]]:
    with rt.db.transaction() as s:
        runs = [
            (r.start_time.isoformat(), round(r.load.load, 6), r.load.long_run, sorted(r.load.flags))
            for r in s.scalars(select(Run).order_by(Run.start_time))
            if r.load
        ]
        days = [
            (d.day.isoformat(), round(d.load, 6), round(d.acute, 6), round(d.chronic, 6))
            for d in s.scalars(select(DailyLoad).order_by(DailyLoad.day))
        ]
    return runs, days


def test_late_arrivals_give_the_same_figures_as_arrival_in_order(tmp_path: Path) -> None:
    paths = write_history(tmp_path / "files")
    in_order = Runtime.open(make_settings(tmp_path / "a"))
    for p in paths:
        ingest_path(in_order.db, in_order.settings, "me", p, NOW)
    shuffled = Runtime.open(make_settings(tmp_path / "b"))
    order = paths[:]
    random.Random(3).shuffle(order)
    assert order != paths
    for p in order:
        ingest_path(shuffled.db, shuffled.settings, "me", p, NOW)
    a, b = snapshot(in_order), snapshot(shuffled)
    assert len(a[0]) == 16 and a[1][0][0] == "2026-02-02"
    assert a == b


def test_deleting_a_run_recomputes_from_its_day(tmp_path: Path) -> None:
    paths = write_history(tmp_path / "files")
    full = Runtime.open(make_settings(tmp_path / "a"))
    for p in paths:
        ingest_path(full.db, full.settings, "me", p, NOW)
    without = Runtime.open(make_settings(tmp_path / "b"))
    for p in paths[:5] + paths[6:]:
        ingest_path(without.db, without.settings, "me", p, NOW)
    with full.db.transaction() as s:
        victim = s.scalars(select(Run).order_by(Run.start_time).offset(5).limit(1)).one()
        athlete = s.get(Athlete, victim.athlete_id)
        assert athlete is not None
        start = victim.start_time
        s.execute(delete(Run).where(Run.id == victim.id))
        run_removed(s, full.settings, athlete, start)
    full_days = snapshot(full)[1]
    assert full_days == snapshot(without)[1]
    assert len(full_days) == 31


@pytest.mark.parametrize("mass", [55.0, 90.0])
def test_body_mass_changes_no_load(tmp_path: Path, mass: float) -> None:
    path = tmp_path / "run.fit"
    write_activity(path, start=START, duration_s=3000, speed_mps=3.333, cadence_rpm=85)
    light = Runtime.open(make_settings(tmp_path / "a"))
    heavy = Runtime.open(make_settings(tmp_path / "b"))
    with heavy.db.transaction() as s:
        s.add(Athlete(name="me", timezone="UTC", body_mass_kg=mass))
    loads = []
    for rt in (light, heavy):
        report = ingest_path(rt.db, rt.settings, "me", path, NOW)
        loads.append(report.runs[0]["load"])
    assert loads[0] == loads[1] == pytest.approx(9124, rel=0.005)  # the design's worked example
    with heavy.db.transaction() as s:
        facts = s.scalars(select(Run)).one().load.facts  # type: ignore[union-attr]
    assert facts["peak_force_n"] == pytest.approx(2.545 * mass * 9.81, rel=0.005)


def test_deleting_the_first_run_starts_the_series_at_the_next_one(tmp_path: Path) -> None:
    paths = write_history(tmp_path / "files")
    full = Runtime.open(make_settings(tmp_path / "a"))
    for p in paths[:6]:
        ingest_path(full.db, full.settings, "me", p, NOW)
    without = Runtime.open(make_settings(tmp_path / "b"))
    for p in paths[1:6]:
        ingest_path(without.db, without.settings, "me", p, NOW)
    with full.db.transaction() as s:
        victim = s.scalars(select(Run).order_by(Run.start_time).limit(1)).one()
        athlete = s.get(Athlete, victim.athlete_id)
        assert athlete is not None
        start = victim.start_time
        s.execute(delete(Run).where(Run.id == victim.id))
        run_removed(s, full.settings, athlete, start)
    assert snapshot(full) == snapshot(without)
    assert snapshot(full)[1][0][0] == "2026-02-04"  # the second run's day; the first day's row is gone
