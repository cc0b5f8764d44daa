"""Storing FIT files: idempotent by content, one run per foot session, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from factories import ingest_planned
from fitgen import Segment, write_activity, write_truncated
from sqlalchemy import func, select

from stridecare.db.models import ImportedFile, Run, RunSamples
from stridecare.db.samples import pack_samples, unpack_samples
from stridecare.domain.run import Samples
from stridecare.runtime import Runtime

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
NOW = START + timedelta(days=1)


def count(rt: Runtime, model: type) -> int:
    with rt.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_same_content_renamed_or_in_two_folders_is_one_run(any_tx_rt: Runtime, tmp_path: Path) -> None:
    first = tmp_path / "a" / "run.fit"
    first.parent.mkdir()
    info = write_activity(first, start=START, duration_s=1200, speed_mps=3.2, cadence_rpm=84)
    renamed = tmp_path / "b" / "2026-03-02-copy.FIT"
    renamed.parent.mkdir()
    shutil.copy(first, renamed)

    r1 = ingest_planned(any_tx_rt.db, any_tx_rt.settings, "me", first, NOW)
    r2 = ingest_planned(any_tx_rt.db, any_tx_rt.settings, "me", renamed, NOW)
    r3 = ingest_planned(any_tx_rt.db, any_tx_rt.settings, "me", first, NOW)

    assert r1.status == "ingested"
    assert [r2.status, r3.status] == ["duplicate", "duplicate"]
    assert r2.runs[0]["id"] == r1.runs[0]["id"]
    assert count(any_tx_rt, Run) == 1
    assert count(any_tx_rt, ImportedFile) == 1
    run = r1.runs[0]
    assert run["steps"] == round(info.steps)
    assert abs(run["distance_m"] - info.distance_m) / info.distance_m < 0.005
    assert run["start_time"] == "2026-03-02T06:30:00Z"
    assert run["cadence_source"] == "stream"


def test_multisport_file_gives_one_run_per_foot_session_and_names_the_skipped_sport(
    any_tx_rt: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "tri.fit"
    write_activity(
        path,
        start=START,
        multisport=[
            Segment("running", duration_s=600, speed_mps=3.3, cadence_rpm=86),
            Segment("cycling", duration_s=900, speed_mps=8.0, cadence_rpm=90),
            Segment("running", duration_s=900, speed_mps=3.0, cadence_rpm=84),
        ],
    )
    report = ingest_planned(any_tx_rt.db, any_tx_rt.settings, "me", path, NOW)
    assert report.status == "ingested"
    assert [r["sport"] for r in report.runs] == ["running", "running"]
    assert "cycling" in (report.reason or "")
    assert count(any_tx_rt, Run) == 2


def test_a_ride_alone_is_skipped_with_its_sport_named(any_tx_rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "ride.fit"
    write_activity(path, start=START, sport="cycling", duration_s=900, speed_mps=8.0, cadence_rpm=90)
    report = ingest_planned(any_tx_rt.db, any_tx_rt.settings, "me", path, NOW)
    assert report.status == "skipped"
    assert "cycling" in (report.reason or "")
    assert count(any_tx_rt, Run) == 0


def test_damaged_file_is_rejected_with_one_line_and_the_next_file_still_ingests(
    any_tx_rt: Runtime, tmp_path: Path
) -> None:
    good = tmp_path / "good.fit"
    write_activity(good, start=START, duration_s=900)
    bad = write_truncated(good, tmp_path / "bad.fit")
    r_bad = ingest_planned(any_tx_rt.db, any_tx_rt.settings, "me", bad, NOW)
    r_good = ingest_planned(any_tx_rt.db, any_tx_rt.settings, "me", good, NOW)
    assert r_bad.status == "rejected"
    assert r_bad.reason and "\n" not in r_bad.reason and "Traceback" not in r_bad.reason
    assert r_good.status == "ingested"


def test_samples_are_stored_compactly_and_round_trip(any_tx_rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "long.fit"
    write_activity(path, start=START, duration_s=3600, speed_mps=3.0, cadence_rpm=85)
    ingest_planned(any_tx_rt.db, any_tx_rt.settings, "me", path, NOW)
    with any_tx_rt.db.transaction() as s:
        row = s.scalars(select(RunSamples)).one()
        samples = unpack_samples(row.data)
    assert row.count == len(samples) >= 3600
    # float32 columns, compressed: well under the 8 bytes × 6 columns of a naive encoding
    assert len(row.data) < row.count * 6 * 4
    assert samples.timer_running[-1] is True
    assert abs((samples.distance_m[-1] or 0) - 10800) < 15


def test_sample_packing_keeps_missing_values() -> None:
    s = Samples(
        t=[0.0, 1.0, 2.5],
        distance_m=[0.0, None, 7.5],
        speed_mps=[None, 3.0, 3.0],
        cadence_spm=[170.0, 171.5, None],
        altitude_m=[None, None, None],
        timer_running=[True, False, True],
    )
    back = unpack_samples(pack_samples(s))
    assert back == s
