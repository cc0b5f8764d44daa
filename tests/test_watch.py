"""The folder watcher: complete files only, once each, quarantine for damage, links and size refused."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from fitgen import write_activity, write_bad_crc
from harness import wait_for
from sqlalchemy import select

from ingest.service import ingest_path
from ingest.watch import Candidate, FolderScanner, FolderWatcher
from stridecare.db.models import ImportedFile, Run
from stridecare.runtime import Runtime

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)


def _watch(rt: Runtime, inbox: Path, reports: list[object], settle: float = 0.5) -> FolderWatcher:
    def submit(c: Candidate) -> None:
        reports.append(
            ingest_path(rt.db, rt.settings, c.athlete, c.path, rt.now(), root=c.root, quarantine_damaged=True)
        )

    scanner = FolderScanner(rt.db, [("me", inbox)], settle)
    watcher = FolderWatcher(scanner, submit, rescan_interval_s=0.5, poll_s=0.1)
    watcher.start_thread()
    return watcher


def runs(rt: Runtime) -> list[Run]:
    with rt.db.transaction() as s:
        return list(s.scalars(select(Run)))


def test_a_file_written_slowly_is_ingested_once_after_it_is_complete(rt: Runtime, tmp_path: Path) -> None:
    src = tmp_path / "src.fit"
    write_activity(src, start=START, duration_s=1800)
    data = src.read_bytes()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    reports: list[object] = []
    watcher = _watch(rt, inbox, reports, settle=1.0)
    try:
        target = inbox / "run.fit"
        chunks = 8
        step = len(data) // chunks + 1
        with target.open("wb") as fh:
            for i in range(chunks):  # about 4 s of copying, like a slow USB mount
                fh.write(data[i * step : (i + 1) * step])
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(0.5)
                assert runs(rt) == [], "a half-written file was read"
        wait_for(lambda: runs(rt), timeout=15, what="the run")
        time.sleep(1.5)  # further rescans must not ingest it again
    finally:
        watcher.stop()
    assert len(runs(rt)) == 1
    assert [getattr(r, "status", None) for r in reports] == ["ingested"]


def test_damaged_file_goes_to_quarantine_with_a_reason_and_the_rest_carries_on(rt: Runtime, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = tmp_path / "good.fit"
    write_activity(good, start=START, duration_s=600)
    write_bad_crc(good, inbox / "broken.fit")
    write_activity(inbox / "fine.fit", start=START.replace(day=3), duration_s=600)
    reports: list[object] = []
    watcher = _watch(rt, inbox, reports)
    try:
        qdir = rt.settings.effective_quarantine_dir
        wait_for(lambda: (qdir / "broken.fit").exists() and runs(rt), timeout=15, what="quarantine and run")
    finally:
        watcher.stop()
    reason = (qdir / "broken.fit.reason.txt").read_text()
    assert "broken.fit" in reason and ("CRC" in reason or "damaged" in reason)
    assert not (inbox / "broken.fit").exists()
    assert len(runs(rt)) == 1
    with rt.db.transaction() as s:
        statuses = sorted(f.status for f in s.scalars(select(ImportedFile)))
    assert statuses == ["ingested", "rejected"]


def test_links_outside_the_folder_and_oversized_files_are_refused(rt: Runtime, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    secret = tmp_path / "elsewhere" / "private.fit"
    secret.parent.mkdir()
    write_activity(secret, start=START, duration_s=600)
    (inbox / "link.fit").symlink_to(secret)
    big = inbox / "big.fit"
    big.write_bytes(b"\0" * 2_000_000)
    rt.settings = rt.settings.model_copy(update={"max_file_mb": 1.0})

    link = ingest_path(rt.db, rt.settings, "me", inbox / "link.fit", rt.now(), root=inbox, quarantine_damaged=True)
    oversized = ingest_path(rt.db, rt.settings, "me", big, rt.now(), root=inbox, quarantine_damaged=True)

    assert link.status == "rejected" and "outside" in (link.reason or "")
    assert oversized.status == "rejected" and "cap" in (oversized.reason or "")
    assert secret.exists() and big.exists()  # refused files are left alone, not moved or read
    assert runs(rt) == []


def test_rescan_catches_files_events_missed_and_skips_known_ones_without_reading(rt: Runtime, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for day in range(1, 4):
        write_activity(inbox / f"r{day}.fit", start=START.replace(day=day), duration_s=600)
    scanner = FolderScanner(rt.db, [("me", inbox)], settle_seconds=0.0)
    assert scanner.rescan() == 3
    for c in scanner.ready():
        ingest_path(rt.db, rt.settings, c.athlete, c.path, rt.now(), root=c.root)
    fresh = FolderScanner(rt.db, [("me", inbox)], settle_seconds=0.0)  # a restarted watcher
    assert fresh.rescan() == 0
    write_activity(inbox / "r9.fit", start=START.replace(day=9), duration_s=600)
    assert fresh.rescan() == 1


def test_watcher_thread_survives_a_failing_hand_off(rt: Runtime, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    attempts: list[Path] = []
    lock = threading.Lock()

    def flaky(c: Candidate) -> None:
        with lock:
            attempts.append(c.path)
            if len(attempts) == 1:
                raise ConnectionError("broker down")
        ingest_path(rt.db, rt.settings, c.athlete, c.path, rt.now(), root=c.root)

    write_activity(inbox / "a.fit", start=START, duration_s=600)
    watcher = FolderWatcher(FolderScanner(rt.db, [("me", inbox)], 0.2), flaky, rescan_interval_s=0.3, poll_s=0.1)
    watcher.start_thread()
    try:
        wait_for(lambda: runs(rt), timeout=10, what="the run after a failed hand-off")
    finally:
        watcher.stop()
    assert len(attempts) >= 2
