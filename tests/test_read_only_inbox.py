"""An inbox that may not be changed — a watch mounted read-only as USB storage, pointed at directly — is read
like any other: a good file is stored, and a damaged one is recorded as rejected and left where it is, with a
reason that says so, instead of failing its task on the move to the quarantine (and leaving a stray copy
there). An inbox that cannot be made (the watch not mounted yet) is waited for, not a crash at start."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import make_settings
from factories import ingest_planned
from fitgen import write_activity
from harness import processes, settings_env, stridecare, wait_for
from sqlalchemy import select

from ingest.watch import FolderScanner, FolderWatcher, make_inbox
from stridecare.db.models import ImportedFile, Run
from stridecare.runtime import Runtime

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A folder on a file system of its own, and a function that remounts it read-only (a real ``EROFS``)."""
    mount = tmp_path / "watch"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"a read-only folder needs mount(2) as root: {made.stderr.decode().strip()}")

    def seal() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)

    try:
        yield mount, seal
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_damaged_file_in_a_read_only_inbox_is_rejected_in_place(
    rt: Runtime, tmp_path: Path, read_only_folder: tuple[Path, Callable[[], None]]
) -> None:
    inbox, seal = read_only_folder
    good = write_activity(tmp_path / "good.fit", start=START, duration_s=1200).path
    (inbox / "A1.FIT").write_bytes(good.read_bytes())
    whole = write_activity(tmp_path / "whole.fit", start=START.replace(day=3), duration_s=1200).path.read_bytes()
    damaged = inbox / "A2.FIT"
    damaged.write_bytes(whole[: len(whole) // 2])
    old = time.time() - 600  # long still: not a file still being copied, so a failed read rejects it at once
    os.utime(damaged, (old, old))
    seal()

    stored = ingest_planned(rt.db, rt.settings, "me", inbox / "A1.FIT", rt.now(), root=inbox, quarantine_damaged=True)
    assert stored.status == "ingested"

    report = ingest_planned(rt.db, rt.settings, "me", damaged, rt.now(), root=inbox, quarantine_damaged=True)
    assert report.status == "rejected", report
    assert "left in place" in (report.reason or "") and "read-only file system" in (report.reason or ""), report
    assert damaged.read_bytes() == whole[: len(whole) // 2]  # untouched
    quarantine = rt.settings.effective_quarantine_dir
    assert not quarantine.exists() or not any(quarantine.iterdir()), "no copy and no reason file left behind"
    with rt.db.read() as s:
        rows = {Path(r.path).name: r.status for r in s.scalars(select(ImportedFile))}
        assert rows == {"A1.FIT": "ingested", "A2.FIT": "rejected"}
        assert len(list(s.scalars(select(Run)))) == 1
    # Scanned again (every rescan does): known by its content, not read or moved again.
    again = ingest_planned(rt.db, rt.settings, "me", damaged, rt.now(), root=inbox, quarantine_damaged=True)
    assert again.status != "ingested" and damaged.exists()


def test_an_inbox_that_cannot_be_made_is_watched_once_it_appears(
    rt: Runtime, tmp_path: Path, read_only_folder: tuple[Path, Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    """A watch's folder named as the inbox while the watch is not mounted, somewhere this user may not write:
    making it failed, and the exception ended ``stridecare run`` (and ``watch``) at start. Now a warning says so,
    and the folder is watched from the moment it appears."""
    mount, seal = read_only_folder
    seal()
    inbox = mount / "GARMIN" / "Activity"
    handed: list[Path] = []
    scanner = FolderScanner(rt.db, [("me", inbox)], 0.2)
    # Rescans an hour apart: only the watch set when the folder appears (and the rescan it runs) can find files.
    watcher = FolderWatcher(scanner, lambda c: handed.append(c.path), rescan_interval_s=3600.0, poll_s=0.1)
    caplog.set_level("INFO", logger="ingest.watch")
    assert not make_inbox(inbox)
    assert "cannot be made (read-only file system)" in caplog.text
    thread = watcher.start_thread()
    try:
        wait_for(lambda: watcher._observer is not None, timeout=10, what="the event observer")
        time.sleep(0.3)
        assert thread.is_alive() and not inbox.exists()
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True, capture_output=True)
        inbox.mkdir(parents=True)
        write_activity(inbox / "A1.FIT", start=START, duration_s=600)
        wait_for(lambda: inbox / "A1.FIT" in handed, timeout=10, what="the file in the folder that appeared")
    finally:
        watcher.stop()


def test_stridecare_run_starts_with_an_inbox_it_cannot_make(
    tmp_path: Path, read_only_folder: tuple[Path, Callable[[], None]]
) -> None:
    mount, seal = read_only_folder
    seal()
    inbox = mount / "GARMIN" / "Activity"
    settings = make_settings(tmp_path / "home", inboxes=[f"me={inbox}"])
    proc = stridecare("run", ["run", "--no-web"], settings_env(settings), tmp_path / "logs")
    with processes(proc):
        wait_for(lambda: "new athlete" in proc.output(), timeout=60, what="the worker up")
        assert f"inbox {inbox} is not there and cannot be made (read-only file system)" in proc.output()
        assert proc.popen.poll() is None, proc.output()
        proc.popen.send_signal(signal.SIGINT)
        assert proc.popen.wait(timeout=60) == 0, proc.output()
    assert "Traceback" not in proc.output()
