"""Nothing lost for good: a read that timed out is tried again later with more time, a copy of it under another
name is no "duplicate (rejected)", and ``stridecare retry`` reads rejected and quarantined files again."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import make_settings
from fitgen import write_activity
from sqlalchemy import select
from typer.testing import CliRunner

from ingest.retry import due_item, read_again
from ingest.service import ingest_path
from ingest.store import RETRY
from stridecare.clock import write_clock_file
from stridecare.db.models import ImportedFile, Run
from stridecare.runtime import Runtime
from workers.periodic import Enqueue, run_periodic

START = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
NOW = START + timedelta(hours=3)


def long_run(path: Path) -> Path:
    """Three hours at one record a second: far more than a 20 ms budget can read."""
    write_activity(path, start=START, duration_s=3 * 3600, speed_mps=3.0, cadence_rpm=84, sample_interval_s=1)
    return path


def open_rt(tmp_path: Path, **overrides: object) -> Runtime:
    clock = tmp_path / "clock"
    write_clock_file(clock, NOW)
    return Runtime.open(make_settings(tmp_path, clock_file=clock, **overrides))


def rows(rt: Runtime) -> list[ImportedFile]:
    with rt.db.read() as s:
        return list(s.scalars(select(ImportedFile).order_by(ImportedFile.id)))


def test_a_timed_out_read_is_retried_later_with_more_time_and_never_taken_for_damaged(tmp_path: Path) -> None:
    busy = open_rt(tmp_path, decode_timeout_s=0.001)  # a machine so busy that nothing finishes in time
    inbox = Path(busy.settings.inbox_map()[0][1])
    inbox.mkdir(parents=True)
    path = long_run(inbox / "ultra.fit")

    report = ingest_path(busy.db, busy.settings, "me", path, busy.now(), root=inbox, quarantine_damaged=True)
    assert report.status == RETRY and report.reason is not None and report.reason.startswith("timed out")
    assert "stridecare retry" in report.reason and "2× the time" in report.reason
    assert path.exists() and not busy.settings.effective_quarantine_dir.exists()  # not moved: not damaged
    (row,) = rows(busy)
    assert row.status == RETRY and row.attempts == 1 and row.retry_at == NOW + timedelta(minutes=10)

    # The same content under another name is read again (with twice the time), not "duplicate (rejected)".
    copy = inbox / "ultra-copy.fit"
    shutil.copyfile(path, copy)
    again = ingest_path(busy.db, busy.settings, "me", copy, busy.now(), root=inbox, quarantine_damaged=True)
    assert again.status == RETRY and "4× the time" in (again.reason or "")
    (row,) = rows(busy)
    assert row.attempts == 2 and row.retry_at == NOW + timedelta(minutes=20)

    # Not due yet: the tick hands nothing on. Once due, it hands the row on, and the machine is quiet again.
    handed: list[int] = []
    run_periodic(busy, Enqueue(delivery=lambda _i: None, retry_file=handed.append))
    assert handed == []
    write_clock_file(busy.settings.clock_file, NOW + timedelta(minutes=21))  # type: ignore[arg-type]
    run_periodic(busy, Enqueue(delivery=lambda _i: None, retry_file=handed.append))
    assert handed == [row.id]
    quiet = Runtime(make_settings(tmp_path, clock_file=busy.settings.clock_file), busy.db)
    item = due_item(quiet.db, handed[0])
    assert item is not None and item.athlete == "me"
    assert read_again(quiet.db, quiet.settings, item, quiet.now()).status == "ingested"
    (row,) = rows(quiet)
    assert row.status == "ingested" and row.retry_at is None
    with quiet.db.read() as s:
        assert len(list(s.scalars(select(Run)))) == 1
    assert due_item(quiet.db, row.id) is None  # a second delivery of the same retry does nothing


def test_reads_that_never_finish_end_rejected_after_a_bounded_number_of_tries(tmp_path: Path) -> None:
    busy = open_rt(tmp_path, decode_timeout_s=0.0001)  # even 16 times this is too short
    path = long_run(tmp_path / "ultra.fit")
    statuses = [ingest_path(busy.db, busy.settings, "me", path, busy.now()).status for _ in range(6)]
    assert statuses == [RETRY, RETRY, RETRY, RETRY, "rejected", "duplicate"]
    (row,) = rows(busy)
    assert row.status == "rejected" and "stridecare retry" in (row.reason or "")


def cli(rt: Runtime, *args: str) -> tuple[int, str]:
    from stridecare_app.cli.main import app

    env = {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
        "STRIDECARE_CLOCK_FILE": str(rt.settings.clock_file),
    }
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_stridecare_retry_reads_rejected_and_quarantined_files_again(tmp_path: Path) -> None:
    busy = open_rt(tmp_path, decode_timeout_s=0.001)
    inbox = Path(busy.settings.inbox_map()[0][1])
    inbox.mkdir(parents=True)
    slow = long_run(inbox / "ultra.fit")
    broken = inbox / "broken.fit"
    broken.write_bytes(long_run(tmp_path / "whole.fit").read_bytes()[:3000])  # cut short: damaged
    an_hour_ago = time.time() - 3600
    os.utime(broken, (an_hour_ago, an_hour_ago))  # its writer is long done: a verdict, not "still being written"
    ingest_path(busy.db, busy.settings, "me", slow, busy.now(), root=inbox, quarantine_damaged=True)
    quiet = Runtime(make_settings(tmp_path, clock_file=busy.settings.clock_file), busy.db)
    ingest_path(quiet.db, quiet.settings, "me", broken, quiet.now(), root=inbox, quarantine_damaged=True)
    qdir = busy.settings.effective_quarantine_dir
    assert (qdir / "broken.fit").exists() and not broken.exists()
    assert {r.status for r in rows(busy)} == {RETRY, "rejected"}

    # "After an upgrade": the broken file is whole again in the quarantine (its reader now manages it).
    shutil.copyfile(tmp_path / "whole.fit", qdir / "broken.fit")
    code, out = cli(quiet, "retry")
    assert code == 0, out
    assert "ingested" in out and out.count("ultra.fit") >= 1 and out.count("broken.fit") >= 1
    assert broken.exists() and not (qdir / "broken.fit").exists()  # back where it came from
    assert {r.status for r in rows(busy)} == {"ingested"}
    code, out = cli(quiet, "retry")
    assert code == 0 and "nothing to read again" in out
