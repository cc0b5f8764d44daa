"""The folder watcher: complete files only, once each, quarantine for damage, links and size refused."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fitgen import write_activity, write_bad_crc
from harness import wait_for
from sqlalchemy import select

from ingest.decode import known_complete
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

    scanner = FolderScanner(
        rt.db,
        [("me", inbox)],
        settle,
        hold_still_s=rt.settings.hold_still_seconds,
        quarantine_dir=rt.settings.effective_quarantine_dir,
    )
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
                if i < chunks - 1:  # once the last chunk is in, the file is complete and may be read at once
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
    # A damaged file is quarantined once it has held still this long (before that its writer may not be done).
    rt.settings = rt.settings.model_copy(update={"hold_still_seconds": 1.0})
    reports: list[object] = []
    qdir = rt.settings.effective_quarantine_dir
    seen_without_reason: list[str] = []

    def quarantined() -> bool:
        # Whoever sees the quarantined file must find its reason too: the reason is written before the move.
        if (qdir / "broken.fit").exists() and not (qdir / "broken.fit.reason.txt").exists():
            seen_without_reason.append("broken.fit")
        return (qdir / "broken.fit").exists()

    watcher = _watch(rt, inbox, reports)
    try:
        wait_for(lambda: quarantined() and runs(rt), timeout=20, interval=0.01, what="quarantine and run")
    finally:
        watcher.stop()
    assert seen_without_reason == []
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


def test_watcher_thread_survives_the_database_going_away_while_a_young_file_waits_for_its_recheck(
    rt: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file handed on while young is looked at again once it has held still, and that asks the database
    whether it was read: with the database gone (restarting), the watcher must carry on, not exit."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    handed: list[Path] = []
    scanner = FolderScanner(rt.db, [("me", inbox)], 0.2, hold_still_s=2.0)
    watcher = FolderWatcher(scanner, lambda c: handed.append(c.path), rescan_interval_s=0.3, poll_s=0.1)
    thread = watcher.start_thread()
    try:
        write_activity(inbox / "young.fit", start=START, duration_s=600)
        wait_for(lambda: handed, timeout=10, what="the young file handed on")
        # The database goes away before the recheck is due: new connections find an empty file, no tables.
        database = Path(rt.db.engine.url.database or "")
        for path in database.parent.glob(database.name + "*"):
            path.unlink()
        rt.db.dispose()
        wait_for(lambda: "checking files failed" in caplog.text, timeout=10, what="the recheck meeting the outage")
        time.sleep(0.5)  # rounds after the failure: the thread must still be running them
        assert thread.is_alive()
    finally:
        watcher.stop()


# -- known-complete fast path ----------------------------------------------------------------------------------


class _Handoffs:
    """Records each hand-off with its time and the file's size at that moment, then ingests it."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.lock = threading.Lock()
        self.seen: list[tuple[float, Path, int]] = []

    def __call__(self, c: Candidate) -> None:
        with self.lock:
            self.seen.append((time.monotonic(), c.path, c.path.stat().st_size))
        ingest_path(self.rt.db, self.rt.settings, c.athlete, c.path, self.rt.now(), root=c.root)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def _fast_watcher(rt: Runtime, tmp_path: Path) -> tuple[Path, _Handoffs, FolderWatcher, threading.Thread]:
    """An inbox, what is handed on from it, and a running watcher over it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    handoffs = _Handoffs(rt)
    # settle 30 s, rescans every 60 s and a 10 s poll: anything handed on within a few seconds came through
    # the content check, woken by the file's event.
    scanner = FolderScanner(rt.db, [("me", inbox)], settle_seconds=30.0)
    watcher = FolderWatcher(scanner, handoffs, rescan_interval_s=60.0, poll_s=10.0)
    thread = watcher.start_thread()
    wait_for(lambda: watcher._observer is not None, timeout=10, what="the event observer")
    time.sleep(0.3)  # let the first rescan pass, so that only an event can wake the loop early
    return inbox, handoffs, watcher, thread


def test_a_complete_fit_file_is_handed_on_at_once_without_waiting_to_settle(rt: Runtime, tmp_path: Path) -> None:
    staged = tmp_path / "staged.fit"
    write_activity(staged, start=START, duration_s=1800)
    inbox, handoffs, watcher, thread = _fast_watcher(rt, tmp_path)
    try:
        landed = time.monotonic()
        os.replace(staged, inbox / "run.fit")
        wait_for(handoffs.count, timeout=8, what="the hand-off")
        latency = handoffs.seen[0][0] - landed
        time.sleep(0.5)  # late events for the same version must not hand it on again
    finally:
        watcher.stop()
    thread.join(timeout=5)
    assert not thread.is_alive(), "stop() must wake the loop, not wait out the poll"
    assert latency < 5.0, f"took {latency:.2f} s: the loop was not woken by the event"
    assert handoffs.count() == 1
    assert len(runs(rt)) == 1


# A slow writer's steps: (offset to write at, or None to append; the bytes).
Step = tuple[int | None, bytes]


def _chunks(data: bytes, cuts: list[int]) -> list[Step]:
    return [(None, data[lo:hi]) for lo, hi in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _like_the_sdk(data: bytes) -> list[Step]:
    """An encoder streaming to disk: a header saying "0 bytes of data" first (a valid header, on its own a
    whole empty file but for the CRC), the records, then the real header rewritten in place, then the CRC."""
    placeholder = data[:4] + b"\0\0\0\0" + data[8:12]
    body = data[12:-2]
    step = len(body) // 4 + 1
    records: list[Step] = [(None, body[i : i + step]) for i in range(0, len(body), step)]
    return [(None, placeholder), *records, (0, data[:12]), (None, data[-2:])]


def _write_slowly(target: Path, steps: list[Step], handoffs: _Handoffs) -> None:
    with target.open("wb") as fh:
        for n, (offset, chunk) in enumerate(steps):
            if offset is None:
                fh.seek(0, os.SEEK_END)
            else:
                fh.seek(offset)
            fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
            time.sleep(0.3)
            if n < len(steps) - 1:
                assert handoffs.count() == 0, f"handed on after step {n + 1} of {len(steps)}"


@pytest.mark.parametrize("writer", ["chunks", "sdk"])
def test_a_file_written_slowly_is_handed_on_once_when_complete_despite_a_long_settle(
    rt: Runtime, tmp_path: Path, writer: str
) -> None:
    src = tmp_path / "src.fit"
    write_activity(src, start=START, duration_s=1800)
    data = src.read_bytes()
    inbox, handoffs, watcher, thread = _fast_watcher(rt, tmp_path)
    target = inbox / "run.fit"
    try:
        if writer == "chunks":
            # Cuts inside the header, right after it (a valid header, data missing), inside the data, just
            # before the CRC and between its two bytes.
            cuts = [5, 12, 13, len(data) // 3, len(data) // 2, len(data) - 2, len(data) - 1]
            _write_slowly(target, _chunks(data, cuts), handoffs)
        else:
            _write_slowly(target, _like_the_sdk(data), handoffs)
        done = time.monotonic()
        wait_for(handoffs.count, timeout=8, what="the hand-off")
        time.sleep(1.0)  # the close event and the rest of the 30 s settle must not hand it on again
    finally:
        watcher.stop()
    thread.join(timeout=5)
    assert handoffs.count() == 1
    handed_at, path, size = handoffs.seen[0]
    assert path == target and size == len(data)
    assert handed_at - done < 5.0, "handed on by the settle timer, not by the content check"
    assert len(runs(rt)) == 1


def test_a_chained_file_copied_segment_by_segment_is_handed_on_whole(rt: Runtime, tmp_path: Path) -> None:
    # At the instant the first segment is written the file is a complete FIT file of its own; handing that
    # prefix on would store its run, and then the whole file's runs as well. The quiet time prevents it.
    first, second = tmp_path / "a.fit", tmp_path / "b.fit"
    write_activity(first, start=START, duration_s=1200)
    write_activity(second, start=datetime(2026, 3, 3, 7, 0, tzinfo=UTC), duration_s=900)
    segments = [first.read_bytes(), second.read_bytes()]
    inbox, handoffs, watcher, thread = _fast_watcher(rt, tmp_path)
    target = inbox / "day.fit"
    try:
        with target.open("wb") as fh:
            for segment in segments:
                fh.write(segment)
                fh.flush()
                os.fsync(fh.fileno())
                time.sleep(0.05)  # a copy's pause between writes, shorter than the quiet time
        wait_for(handoffs.count, timeout=8, what="the hand-off")
        time.sleep(0.6)
    finally:
        watcher.stop()
    thread.join(timeout=5)
    assert [size for _at, _path, size in handoffs.seen] == [sum(map(len, segments))]
    assert len(runs(rt)) == 2


def test_the_content_check_runs_once_per_version_and_unknown_files_still_settle(rt: Runtime, tmp_path: Path) -> None:
    calls: list[tuple[Path, int]] = []

    def counting(path: Path) -> bool:
        calls.append((path, path.stat().st_size))
        return known_complete(path)

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = tmp_path / "src.fit"
    write_activity(src, start=START, duration_s=600)
    data = src.read_bytes()
    partial = inbox / "partial.fit"
    partial.write_bytes(data[: len(data) // 2])
    gpx = inbox / "run.gpx"
    gpx.write_text("<gpx></gpx>")
    scanner = FolderScanner(rt.db, [("me", inbox)], settle_seconds=1.5, is_complete=counting)
    scanner.quiet_s = 0.0  # the quiet time has its own test (chained file)
    scanner.rescan()
    for _ in range(5):
        assert scanner.ready() == []
    scanner.note(partial)  # an event for the same version restarts the timer but keeps the verdict
    assert scanner.ready() == []
    assert sorted(p.name for p, _ in calls) == ["partial.fit", "run.gpx"]
    with partial.open("ab") as fh:
        fh.write(data[len(data) // 2 :])
    scanner.note(partial)
    assert [c.path for c in scanner.ready()] == [partial]  # complete now: no settle wait
    assert len(calls) == 3
    # No content check for GPX: it is handed on once it has settled (1.5 s).
    assert [c.path for c in wait_for(scanner.ready, timeout=10, interval=0.1, what="the GPX settled")] == [gpx]
    assert len(calls) == 3


def test_a_late_event_after_a_vouched_file_was_read_does_not_hand_it_on_again(rt: Runtime, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "run.fit"
    write_activity(path, start=START, duration_s=600)
    scanner = FolderScanner(rt.db, [("me", inbox)], settle_seconds=30.0)
    scanner.quiet_s = 0.0
    scanner.note(path)
    handed = scanner.ready()
    assert [c.path for c in handed] == [path]
    ingest_path(rt.db, rt.settings, "me", path, rt.now(), root=inbox)
    assert scanner.rescan() == 0  # read now: the rescan skips it
    scanner.note(path)  # the writer's close event, arriving after all that
    assert scanner.ready() == []
    assert not scanner.has_pending()


def test_content_checks_are_spread_over_rounds_when_a_backlog_arrives(rt: Runtime, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = tmp_path / "src.fit"
    write_activity(src, start=START, duration_s=600)
    for n in range(3):
        (inbox / f"r{n}.fit").write_bytes(src.read_bytes())
    scanner = FolderScanner(rt.db, [("me", inbox)], settle_seconds=30.0)
    scanner.check_budget_s = 0.0  # one content check per round
    scanner.quiet_s = 0.0
    assert scanner.rescan() == 3
    rounds = [[c.path.name for c in scanner.ready()] for _ in range(4)]
    assert [len(r) for r in rounds] == [1, 1, 1, 0]
    assert sorted(name for r in rounds for name in r) == ["r0.fit", "r1.fit", "r2.fit"]


def test_an_inbox_removed_and_made_again_is_watched_again_without_waiting_for_a_rescan(
    rt: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Events stop at a removed folder: a file dropped into the inbox made again in its place was found only by
    the next rescan (a minute by default). The watcher notices the new folder within a second, watches it and
    rescans it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    handed: list[Path] = []
    scanner = FolderScanner(rt.db, [("me", inbox)], 0.2)
    # Rescans an hour apart: whatever is handed on in this test came through the renewed watch.
    watcher = FolderWatcher(scanner, lambda c: handed.append(c.path), rescan_interval_s=3600.0, poll_s=0.1)
    watcher.start_thread()
    try:
        wait_for(lambda: watcher._observer is not None, timeout=10, what="the event observer")
        write_activity(inbox / "before.fit", start=START, duration_s=600)
        wait_for(lambda: handed, timeout=10, what="a file in the first folder")
        caplog.set_level("INFO", logger="ingest.watch")
        (inbox / "before.fit").unlink()
        inbox.rmdir()
        wait_for(lambda: "is gone" in caplog.text, timeout=10, what="the removed inbox noticed")
        inbox.mkdir()
        wait_for(lambda: "is there (again)" in caplog.text, timeout=10, what="the new inbox watched")
        # Written after the new watch was set: only an event (or the rescan the renewal runs) can find it.
        write_activity(inbox / "after.fit", start=datetime(2026, 3, 3, 6, 30, tzinfo=UTC), duration_s=600)
        wait_for(lambda: inbox / "after.fit" in handed, timeout=10, what="the file in the folder made again")
        # Removed and made again between two looks: a new folder all the same.
        (inbox / "after.fit").unlink()
        inbox.rmdir()
        inbox.mkdir()
        write_activity(inbox / "third.fit", start=datetime(2026, 3, 4, 6, 30, tzinfo=UTC), duration_s=600)
        wait_for(lambda: inbox / "third.fit" in handed, timeout=10, what="the file after a quick swap")
    finally:
        watcher.stop()
