"""Seeded installations for the dashboard, home page, run page and browser tests: real FIT files through the
real ingest path into a real SQLite database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from channel_settings import channel_settings
from conftest import make_settings
from factories import ingest_planned
from fitgen import write_activity
from sqlalchemy import select

from recommender.feedback import record_done
from stridecare.clock import write_clock_file
from stridecare.db.models import Athlete, Prompt, Run, Shoe
from stridecare.domain.flags import SPIKE_FLAGS
from stridecare.runtime import Runtime

TZ = "Europe/Berlin"
NOW = datetime(2026, 3, 18, 11, 0, tzinfo=UTC)  # a Wednesday; the last run was on the Saturday before
ARCHIVE_START = datetime(2024, 5, 6, 6, 0, tzinfo=UTC)  # the "archive" athlete's runs: nearly two years old


@dataclass
class Seeded:
    rt: Runtime
    athlete_id: int
    token: str
    spike_run_id: int
    run_ids: list[int]
    archive_run_ids: list[int]


def _ingest(rt: Runtime, tmp_path: Path, name: str, i: int, start: datetime, duration: int, when: datetime) -> None:
    path = tmp_path / f"{name}-{i}.fit"
    write_activity(path, start=start, duration_s=duration, speed_mps=3.0, cadence_rpm=85, sample_interval_s=5)
    report = ingest_planned(rt.db, rt.settings, name, path, when)
    assert report.status == "ingested", report


def seed(tmp_path: Path, name: str = "anna", *, archive: bool = False, **settings: object) -> Seeded:
    """Eleven easy 30-minute runs every third day from 9 February, then a 75-minute run on 14 March (a spike),
    counted on a pair of shoes; with ``archive``, a second athlete whose five runs were imported long after."""
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, NOW)
    rt = Runtime.open(make_settings(tmp_path, clock_file=clock, **settings))
    with rt.db.transaction() as s:
        athlete = Athlete(
            name=name, display_name=name.capitalize(), timezone=TZ, channel_settings=channel_settings(console=False)
        )
        s.add(athlete)
        s.flush()
        shoe = Shoe(athlete_id=athlete.id, name="Trail Pegasus 41", remind_at_km=800)
        s.add(shoe)
        s.flush()
        athlete.default_shoe_id = shoe.id
    starts = [datetime(2026, 2, 9, 6, 30, tzinfo=UTC) + timedelta(days=3 * i) for i in range(12)]
    durations = [1800] * 11 + [4500]
    for i, (start, duration) in enumerate(zip(starts, durations, strict=True)):
        # Ingested an hour after each run ends, as a watch sync would: every run is fresh and gets its prompt.
        _ingest(rt, tmp_path, name, i, start, duration, start + timedelta(seconds=duration + 3600))
    archive_ids: list[int] = []
    if archive:
        with rt.db.transaction() as s:
            s.add(Athlete(name="archie", timezone=TZ, channel_settings=channel_settings(console=False)))
        for i in range(5):
            start = ARCHIVE_START + timedelta(days=2 * i)
            _ingest(rt, tmp_path, "archie", i, start, 2400, NOW - timedelta(hours=1))
    with rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete).where(Athlete.name == name)).one()
        runs = list(s.scalars(select(Run).where(Run.athlete_id == athlete.id).order_by(Run.start_time)))
        spike = runs[-1]
        assert spike.load is not None and SPIKE_FLAGS.intersection(spike.load.flags), spike.load.flags
        # The athlete ticked off the prompts of two runs.
        for run in runs[-4:-2]:
            prompt = s.scalars(select(Prompt).where(Prompt.run_id == run.id)).one()
            record_done(s, prompt.id, run.start_time + timedelta(hours=3))
        if archive:
            archie = s.scalars(select(Athlete).where(Athlete.name == "archie")).one()
            archive_ids = list(s.scalars(select(Run.id).where(Run.athlete_id == archie.id).order_by(Run.start_time)))
        return Seeded(rt, athlete.id, athlete.dashboard_token, spike.id, [r.id for r in runs], archive_ids)
