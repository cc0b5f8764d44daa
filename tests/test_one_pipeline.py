"""One pipeline: one writer of runs, every entry point storing the same rows, and ``recompute`` from the kept
sources equal to a fresh import."""

from __future__ import annotations

import re
import shutil
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from factories import ingest_planned
from fake_strava import make_activity
from fitgen import write_activity
from sqlalchemy import select
from test_more_sources import gpx_xml, track_points
from typer.testing import CliRunner

from ingest.service import ingest_path
from ingest.strava.convert import convert_activity
from ingest.strava.sync import store_runs
from recommender.planner import replan
from stridecare.db.athletes import ensure_athlete
from stridecare.db.models import DailyLoad, ImportedFile, Run, SourceRecord
from stridecare.domain.run import ParsedRun
from stridecare.runtime import Runtime
from stridecare.settings import LoadModelSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("stridecare", "stridecare_app", "ingest", "workers", "recommender", "delivery")
START = datetime(2026, 10, 5, 7, 0, tzinfo=UTC)
NOW = START + timedelta(days=30)

# What writes a run: constructing one, a bulk statement on the table, or setting a column that only the writer
# decides (the samples, the session link).
_WRITES = re.compile(
    r"(?<!class )\bRun\(|(?<!class )\bRunSamples\(|\b(?:update|delete|insert)\(Run\)"
    r"|\.duplicate_of_id\s*=[^=]|\brun\.samples\s*=[^=]"
)
# The one writer; and forgetting an athlete, which deletes every table's rows of theirs (runs among them).
_ALLOWED = {"ingest/runs.py": "the one writer", "recommender/data_rights.py": "forget: every row of an athlete"}


def run_writers(root: Path) -> dict[str, list[int]]:
    """Product modules (outside the allowed ones) with lines that write runs, by relative path."""
    found: dict[str, list[int]] = {}
    for package in PRODUCT:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in _ALLOWED or "/migrations/" in rel:
                continue
            lines = [n for n, line in enumerate(path.read_text().splitlines(), 1) if _WRITES.search(line.split("#")[0])]
            if lines:
                found[rel] = lines
    return found


def test_only_the_one_writer_writes_runs() -> None:
    assert run_writers(ROOT) == {}


def test_a_second_writer_of_runs_is_found(tmp_path: Path) -> None:
    for package in PRODUCT:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    rogue = tmp_path / "recommender" / "rogue.py"
    rogue.write_text("from stridecare.db.models import Run\n\n\ndef f(s, a):\n    s.add(Run(athlete_id=a))\n")
    (tmp_path / "ingest" / "strava" / "sync.py").write_text(
        (tmp_path / "ingest" / "strava" / "sync.py").read_text() + "\n\ndef g(run, p):\n    run.samples = p\n"
    )
    found = run_writers(tmp_path)
    assert set(found) == {"recommender/rogue.py", "ingest/strava/sync.py"}


def test_ingest_does_not_import_the_recommender() -> None:
    """Storing never imports planning (``lint-imports`` enforces it too): every way in ends with its caller's
    replan."""
    importers = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "ingest").rglob("*.py")
        if re.search(r"^\s*(from recommender|import recommender)", path.read_text(), re.M)
    }
    assert importers == set()
    assert "ingest never imports the recommender" in (ROOT / "pyproject.toml").read_text()


# -- every entry point stores the same rows -------------------------------------------------------------------

_COLUMNS = (
    "source", "source_key", "name", "sport", "sub_sport", "start_time", "utc_offset_s", "elapsed_s", "timer_s",
    "distance_m", "ascent_m", "descent_m", "steps", "avg_cadence_spm", "cadence_source", "device",
    "device_total_strides", "avg_heart_rate_bpm", "max_heart_rate_bpm", "shoe_id",
)  # fmt: skip


def rows(rt: Runtime) -> list[tuple[Any, ...]]:
    """Every stored run's columns and figures, with the import log's source and status, ids left out."""
    with rt.db.read() as s:
        out = []
        for r in s.scalars(select(Run).order_by(Run.start_time, Run.source_key)):
            imported = s.get(ImportedFile, r.file_id) if r.file_id else None
            out.append(
                (
                    *(getattr(r, c) for c in _COLUMNS),
                    r.samples.data if r.samples else None,
                    r.duplicate_of_id is None,
                    round(r.load.load, 6) if r.load else None,
                    r.load.flags if r.load else None,
                    (imported.source, imported.status, imported.content_hash) if imported else None,
                )
            )
        days = [(d.day, d.load, d.acute, d.chronic) for d in s.scalars(select(DailyLoad).order_by(DailyLoad.day))]
        return [*out, tuple(days)]


def cli(rt: Runtime, *args: str, **env_extra: str) -> str:
    from stridecare_app.cli.main import app

    env = {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
        **env_extra,
    }
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def session_files(folder: Path) -> list[Path]:
    """One FIT run (cadence), one FIT run without cadence, and a GPX walk, on three days."""
    folder.mkdir(parents=True, exist_ok=True)
    write_activity(folder / "a.fit", start=START, duration_s=2400, speed_mps=3.1, cadence_rpm=84)
    write_activity(folder / "b.fit", start=START + timedelta(days=2), duration_s=1800, speed_mps=3.3, cadence_rpm=None)
    points = track_points(start=START + timedelta(days=4), duration_s=1500, speed_mps=1.4)
    (folder / "c.gpx").write_text(gpx_xml([("walking", points, None)]))
    return sorted(folder.iterdir())


def open_rt(home: Path, **overrides: object) -> Runtime:
    return Runtime.open(make_settings(home, **overrides))


def test_the_same_files_stored_through_every_entry_point_give_identical_rows(tmp_path: Path) -> None:
    files = session_files(tmp_path / "files")
    results: dict[str, list[tuple[Any, ...]]] = {}

    worker = open_rt(tmp_path / "worker")  # the inbox task's path: ingest_path, then the replan it owes
    for path in files:
        assert ingest_planned(worker.db, worker.settings, "me", path, NOW).status == "ingested"
    results["worker"] = rows(worker)

    ingest = open_rt(tmp_path / "ingest")
    cli(ingest, "ingest", *map(str, files), "--athlete", "me")
    results["stridecare ingest"] = rows(ingest)

    imported = open_rt(tmp_path / "import")
    cli(imported, "import", str(tmp_path / "files"), "--athlete", "me", "--workers", "2")
    results["stridecare import"] = rows(imported)

    exported = open_rt(tmp_path / "export")
    archive = tmp_path / "export_1.zip"
    with zipfile.ZipFile(archive, "w") as z:
        header = "Activity ID,Activity Date,Activity Name,Activity Type,Elapsed Time,Distance,Filename\n"
        lines = [
            f'{i},"Oct 5, 2026, 7:00:00 AM",x,{"Walk" if p.suffix == ".gpx" else "Run"},1,1,activities/{p.name}\n'
            for i, p in enumerate(files, 1)
        ]
        z.writestr("activities.csv", header + "".join(lines))
        for p in files:
            z.write(p, f"activities/{p.name}")
    cli(exported, "import", str(archive), "--athlete", "me")
    results["export zip"] = rows(exported)

    reference = results.pop("worker")
    assert len(reference) == 4 and all(r[-5] for r in reference[:-1])  # three primaries and the daily series
    for way, got in results.items():
        assert got == reference, way


def test_a_strava_activity_stored_by_an_event_and_by_the_backfill_gives_identical_rows(tmp_path: Path) -> None:
    from ingest.strava.sync import store_parsed

    activity = make_activity(42, START, distance=8000.0, moving_time=2700, average_cadence=84.0)
    parsed = convert_activity(activity, Settings().load.constants)
    assert isinstance(parsed, ParsedRun)
    record = {"42": {"activity": activity, "streams": None}}
    event, backfill = open_rt(tmp_path / "event"), open_rt(tmp_path / "backfill")
    with event.db.transaction() as s:  # an event stores in its own transaction, then replans
        athlete = ensure_athlete(s, "me", event.settings, lock=True)
        store_parsed(s, athlete, [parsed], records=record)
        aid = athlete.id
    replan(event.db, event.settings, aid, NOW)
    with backfill.db.transaction() as s:
        bid = ensure_athlete(s, "me", backfill.settings).id
    store_runs(backfill.db, bid, [parsed], records=record)
    replan(backfill.db, backfill.settings, bid, NOW)
    assert rows(event) == rows(backfill)
    assert rows(event)[0][-3] is not None  # planned: it has its load


# -- recompute ---------------------------------------------------------------------------------------------------


def test_recompute_after_a_model_change_equals_a_fresh_import(tmp_path: Path) -> None:
    files = session_files(tmp_path / "files")
    faster = LoadModelSettings(default_cadence_intercept_spm=172)
    activity = make_activity(7, START + timedelta(days=6), distance=6000.0, moving_time=1800, average_cadence=None)

    def load(rt: Runtime, **env: str) -> None:
        cli(rt, "import", str(tmp_path / "files"), "--athlete", "me", "--workers", "1", **env)
        parsed = convert_activity(activity, rt.settings.load.constants)
        assert isinstance(parsed, ParsedRun)
        with rt.db.transaction() as s:
            aid = ensure_athlete(s, "me", rt.settings).id
        store_runs(rt.db, aid, [parsed], records={"7": {"activity": activity}})
        replan(rt.db, rt.settings, aid, NOW)

    old = open_rt(tmp_path / "old")
    load(old)
    before = rows(old)
    # The inbox is emptied: recompute reads the originals kept in the data home, and Strava's kept record.
    for path in files:
        path.unlink()
    upgraded = Runtime(make_settings(tmp_path / "old", load=faster), old.db)
    out = cli(upgraded, "recompute", "--athlete", "me", STRIDECARE_LOAD_DEFAULT_CADENCE_INTERCEPT_SPM="172")
    assert "4 sources read" in out
    session_files(tmp_path / "files")
    fresh = open_rt(tmp_path / "fresh", load=faster)
    load(fresh, STRIDECARE_LOAD_DEFAULT_CADENCE_INTERCEPT_SPM="172")
    after, expected = rows(upgraded), rows(fresh)
    assert after == expected
    assert after != before  # the runs without cadence counted more steps
    with old.db.read() as s:
        assert s.scalar(select(SourceRecord.source_key)) == "7"
        assert all(f.original for f in s.scalars(select(ImportedFile)))


# -- checked and hashed once ------------------------------------------------------------------------------------


def test_the_decoder_takes_the_digest_the_check_made_and_hashes_only_a_changed_file(tmp_path: Path) -> None:
    from ingest.sandbox import decode_for

    path = write_activity(tmp_path / "run.fit", start=START, duration_s=600, speed_mps=3.0).path
    settings = make_settings(tmp_path)
    st = path.stat()
    told = "f" * 64
    assert decode_for(settings, path, None, known=(st.st_size, st.st_mtime_ns, told)).content_hash == told
    # The file changed since it was hashed (another time): the child hashes what it reads.
    real = decode_for(settings, path, None, known=(st.st_size, st.st_mtime_ns - 1, told)).content_hash
    assert real is not None and real != told and len(real) == 64


def test_ingesting_a_file_hashes_it_once_in_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    path = write_activity(tmp_path / "run.fit", start=START, duration_s=600, speed_mps=3.0).path
    rt = open_rt(tmp_path)
    made = []
    real_sha256 = hashlib.sha256

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return real_sha256(*args, **kwargs)

    monkeypatch.setattr(hashlib, "sha256", counting)
    assert ingest_path(rt.db, rt.settings, "me", path, NOW).status == "ingested"
    assert len(made) == 1
    made.clear()
    assert ingest_path(rt.db, rt.settings, "me", path, NOW).status == "duplicate"
    assert len(made) == 1


def test_forget_deletes_the_kept_originals_and_records_no_one_else_names(tmp_path: Path) -> None:
    rt = open_rt(tmp_path / "rt")
    files = session_files(tmp_path / "files")
    for athlete in ("anna", "ben"):
        assert ingest_planned(rt.db, rt.settings, athlete, files[0], NOW).status == "ingested"  # both have a.fit
    ingest_planned(rt.db, rt.settings, "anna", files[1], NOW)
    activity = make_activity(9, START, distance=5000.0)
    with rt.db.transaction() as s:
        anna = ensure_athlete(s, "anna", rt.settings)
        store_parsed_strava(s, anna, activity)
    with rt.db.read() as s:
        kept = {f.original for f in s.scalars(select(ImportedFile)) if f.original}
    assert len(kept) == 2 and all((rt.settings.data_home / k).is_file() for k in kept)
    cli(rt, "forget", "anna", "--yes")
    left = {k for k in kept if (rt.settings.data_home / k).exists()}
    with rt.db.read() as s:
        assert s.scalars(select(SourceRecord)).all() == []
        bens = {f.original for f in s.scalars(select(ImportedFile))}
    assert left == bens and len(left) == 1  # ben's copy of a.fit stays; anna's b.fit is gone


def store_parsed_strava(session: Any, athlete: Any, activity: dict[str, Any]) -> None:
    from ingest.strava.sync import store_parsed

    parsed = convert_activity(activity, Settings().load.constants)
    assert isinstance(parsed, ParsedRun)
    store_parsed(session, athlete, [parsed], records={parsed.source_key: {"activity": activity, "streams": None}})
