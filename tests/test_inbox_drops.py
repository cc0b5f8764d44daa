"""What a person drops into an inbox besides activity files: a Strava export is imported whole, anything else is
named once as ignored, a sync tool's temporary file passes quietly. A real ``stridecare run`` prints it."""

from __future__ import annotations

import logging
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import E2EClock, make_settings, set_weekly_schedule
from fitgen import write_activity
from harness import processes, settings_env, stridecare, wait_for
from sqlalchemy import select

from recommender.planner import replan
from stridecare.db.models import Run, SeenFile
from stridecare.runtime import Runtime

pytestmark = pytest.mark.slow


def export_zip(path: Path, staging: Path, now: datetime) -> None:
    """A Strava bulk export with two runs (FIT files) and a ride row."""
    staging.mkdir(parents=True, exist_ok=True)
    for n, days in ((1, 3), (2, 5)):
        write_activity(staging / f"{n}.fit", start=now - timedelta(days=days), duration_s=1800)
    header = "Activity ID,Activity Date,Activity Name,Activity Type,Elapsed Time,Distance,Filename\n"
    rows = [
        '11,"Nov 1, 2026, 7:00:00 AM",Run,Run,1800,5.4,activities/1.fit\n',
        '12,"Nov 3, 2026, 7:00:00 AM",Run,Run,1800,5.4,activities/2.fit\n',
        '13,"Nov 4, 2026, 7:00:00 AM",Ride,Ride,3600,30,\n',
    ]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("activities.csv", header + "".join(rows))
        for n in (1, 2):
            z.write(staging / f"{n}.fit", f"activities/{n}.fit")


def test_an_export_zip_is_imported_and_other_files_are_named_as_ignored(tmp_path: Path, e2e_clock: E2EClock) -> None:
    settings = make_settings(tmp_path, **e2e_clock.overrides(tmp_path))
    set_weekly_schedule(settings, "me")
    inbox = settings.inbox_map()[0][1]
    inbox.mkdir(parents=True)
    proc = stridecare("run", ["run", "--no-web"], settings_env(settings), tmp_path / "logs")
    with processes(proc):
        wait_for(lambda: "inbox for me" in proc.output(), timeout=60, what="the banner")
        staging = tmp_path / "staging"
        export_zip(staging / "export_4711.zip", staging, e2e_clock.now())
        (staging / "export_4711.zip").rename(inbox / "export_4711.zip")
        (inbox / "notes.txt").write_text("shoes: new pair on Monday\n")
        (inbox / "run.fit.part").write_bytes(b"\x0e\x10")  # a sync tool still copying run.fit
        out = wait_for(
            lambda: (o := proc.output()) and "export_4711.zip ingested" in o and "notes.txt" in o and o,
            timeout=120,
            what="the export's and the note's lines",
        )
        rt = Runtime.open(settings)
        try:

            def planned() -> bool:
                with rt.db.read() as s:
                    runs = list(s.scalars(select(Run)))
                    return len(runs) == 2 and all(r.load is not None for r in runs)

            wait_for(planned, timeout=60, what="the export's two runs stored and planned")
            with rt.db.read() as s:
                seen = s.scalars(select(SeenFile.path)).all()
            assert any(p.endswith("export_4711.zip") for p in seen)  # not offered again by a rescan
        finally:
            rt.close()
    assert re.search(r"me: export_4711\.zip ingested: Strava export: 2 ingested, 1 skipped", out), out
    assert "me: notes.txt ignored: not an activity file" in out, out
    assert out.count("notes.txt") == 1  # said once, not at every rescan
    assert "run.fit.part" not in out


def test_the_same_file_handed_on_again_gets_no_second_line_but_a_later_drop_does(
    rt: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import update

    from ingest.service import ingest_path
    from stridecare.db.models import ImportedFile
    from workers.tasks import _reported

    path = tmp_path / "run.fit"
    write_activity(path, start=datetime(2026, 11, 30, 7, tzinfo=UTC), duration_s=1200)
    first = ingest_path(rt.db, rt.settings, "me", path, rt.now())
    assert first.status == "ingested" and first.replan_owed
    with caplog.at_level(logging.INFO, logger="stridecare.console"):
        # A second hand-off of the same path while the first awaits its replan: no line, the replan is owed.
        assert _reported(rt, "me", ingest_path(rt.db, rt.settings, "me", path, rt.now())) == first.athlete_id
        assert not [r for r in caplog.records if "duplicate" in r.getMessage()]
        replan(rt.db, rt.settings, first.athlete_id, rt.now())  # type: ignore[arg-type]
        with rt.db.transaction() as s:  # dropped again long after: a person's duplicate, named
            s.execute(update(ImportedFile).values(created_at=datetime.now(UTC) - timedelta(hours=1)))
        _reported(rt, "me", ingest_path(rt.db, rt.settings, "me", path, rt.now()))
    lines = [r.getMessage() for r in caplog.records]
    assert any("run.fit is a duplicate of run" in line for line in lines), lines
