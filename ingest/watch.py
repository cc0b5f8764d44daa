"""Watching inbox folders: filesystem events plus a periodic rescan, and a completeness check before any file
is read.

A file is handed on once it held still for a moment (``quiet_s``, 0.2 s) and its source can tell from the
content that it is whole (``known_complete``; FIT: the segment sizes tile the file and every file CRC
matches), or otherwise once its size and modification time have not changed for ``settle_seconds`` — a file
still being copied from a watch is never read half. The content check runs at most once per size and mtime
seen, and a file it does not vouch for simply waits to settle. Events make pick-up quick (an event wakes the
loop at once); the rescan catches what events missed (network shares, a watcher restarted after a crash).
Files already read, with the same size and modification time, are skipped without hashing, which keeps the
rescan of a large archive cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ingest.decode import known_complete, supported_suffixes
from ingest.files import iter_files
from stridecare.db.engine import Database
from stridecare.db.models import SeenFile

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file ready to be ingested for an athlete."""

    athlete: str
    path: Path
    root: Path


@dataclass(slots=True)
class _Pending:
    size: int
    mtime_ns: int
    stable_since: float
    # known_complete's verdict for this size and mtime; None until asked. Kept here so that a large file that
    # is not (yet) vouched for is not re-read at every poll while it settles.
    complete: bool | None = None


class FolderScanner:
    """Finds settled, not-yet-seen files in a set of ``(athlete, folder)`` inboxes. Not thread-safe by itself;
    ``FolderWatcher`` serialises access."""

    def __init__(self, db: Database, inboxes: list[tuple[str, Path]], settle_seconds: float) -> None:
        self.db = db
        self.inboxes = inboxes
        self.settle_seconds = settle_seconds
        self._pending: dict[Path, _Pending] = {}
        # Files handed on but not yet recorded as read; forgotten after a while so that a file whose task was
        # lost (a worker killed before it committed) is offered again. A second offer is harmless: ingest is
        # idempotent by content hash.
        self._handed: dict[Path, tuple[int, int, float]] = {}
        self.handoff_ttl_s = 60.0
        # Time one ready() call may spend on content checks (at least one check is always made). A rescan that
        # finds a backlog of new files must not hold the first hand-off, and the lock, until every one of them
        # has been CRC'd: the rest are checked in later rounds, or simply settle meanwhile.
        self.check_budget_s = 0.1
        # A file must hold still this long before even the content check may vouch for it: a chained FIT file
        # copied segment by segment is, at the instant one segment ends, a complete file of its own, and reading
        # it then would store that prefix as a run and the whole file as another. Copies do not pause this long
        # between writes; a rename into the folder costs only this delay.
        self.quiet_s = min(0.2, settle_seconds)
        self._suffixes = supported_suffixes()

    def _owner(self, path: Path) -> tuple[str, Path] | None:
        for athlete, root in self.inboxes:
            if path == root or root in path.parents:
                return athlete, root
        return None

    def _wanted(self, path: Path) -> bool:
        return path.name.lower().endswith(self._suffixes)

    def note(self, path: Path) -> None:
        """An event said ``path`` changed: (re)start its settle timer."""
        if not self._wanted(path) or self._owner(path) is None:
            return
        now = time.monotonic()
        handed = self._handed.get(path)
        if handed is not None and now - handed[2] < self.handoff_ttl_s:
            try:
                st = path.stat()
            except OSError:
                return
            if (st.st_size, st.st_mtime_ns) == handed[:2]:
                return  # a late event for a version already handed on (close, attribute change)
        prev = self._pending.pop(path, None)
        self._observe(path, now)
        cur = self._pending.get(path)
        if prev is not None and cur is not None and (cur.size, cur.mtime_ns) == (prev.size, prev.mtime_ns):
            cur.complete = prev.complete  # the timer restarts, but the content verdict for this version holds

    def _observe(self, path: Path, now: float) -> None:
        try:
            st = path.stat()
        except OSError:
            self._pending.pop(path, None)
            return
        prev = self._pending.get(path)
        if prev is None or (prev.size, prev.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._pending[path] = _Pending(st.st_size, st.st_mtime_ns, now)

    def rescan(self) -> int:
        """Walk every inbox and queue files that are new or changed since they were last read."""
        seen: dict[str, tuple[int, int]] = {}
        with self.db.transaction() as session:
            for row in session.execute(select(SeenFile.path, SeenFile.size, SeenFile.mtime_ns)):
                seen[row.path] = (row.size, row.mtime_ns)
        now = time.monotonic()
        # Hand-off records go only when they expire (an expired one no longer counts anywhere), not as soon as
        # the file shows up as read: until then they make note() ignore a late event for that version (the
        # writer's close after a file was already vouched for and read), which would otherwise be handed on
        # again at once. Pruning here also drops records of files moved away after their hand-off.
        self._handed = {p: h for p, h in self._handed.items() if now - h[2] < self.handoff_ttl_s}
        queued = 0
        for _athlete, root in self.inboxes:
            if not root.is_dir():
                continue
            for path in iter_files(root):
                if not self._wanted(path):
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                key = (st.st_size, st.st_mtime_ns)
                if seen.get(str(path.resolve())) == key:
                    continue
                handed = self._handed.get(path)
                if handed is not None and handed[:2] == key and now - handed[2] < self.handoff_ttl_s:
                    continue
                self._observe(path, now)
                queued += 1
        return queued

    def _vouched(self, path: Path, pending: _Pending) -> bool:
        """``known_complete`` for the version ``pending`` describes, asked at most once per version."""
        if pending.complete is None:
            verdict = known_complete(path)
            try:
                st = path.stat()
            except OSError:
                return False
            if (st.st_size, st.st_mtime_ns) != (pending.size, pending.mtime_ns):
                # The file changed between _observe's stat and the check: the verdict is about neither
                # version. Leave it unasked; the next _observe starts a fresh _Pending for the new version.
                return False
            pending.complete = verdict
        return pending.complete

    def ready(self) -> list[Candidate]:
        """Files known complete by content, or whose size and mtime held still for the settle time; each is
        handed out once per version."""
        now = time.monotonic()
        check_until = now + self.check_budget_s
        checks = 0
        out: list[Candidate] = []
        for path in list(self._pending):
            self._observe(path, now)
            pending = self._pending.get(path)
            if pending is None:
                continue
            # Settled files need no content check; only the ones still inside the settle time are read.
            if now - pending.stable_since < self.settle_seconds:
                if now - pending.stable_since < self.quiet_s:
                    continue
                if pending.complete is None:
                    if checks and time.monotonic() >= check_until:
                        continue  # over this round's budget: checked in a later round, or it settles meanwhile
                    checks += 1
                if not self._vouched(path, pending):
                    continue
            owner = self._owner(path)
            del self._pending[path]
            if owner is None:
                continue
            self._handed[path] = (pending.size, pending.mtime_ns, now)
            out.append(Candidate(owner[0], path, owner[1]))
        return out

    def next_due_s(self, default: float) -> float:
        """Seconds until the earliest waiting file may be handed on (quiet or settle time), at most ``default``."""
        now = time.monotonic()
        due = default
        for pending in self._pending.values():
            quiet_left = pending.stable_since + self.quiet_s - now
            settle_left = pending.stable_since + self.settle_seconds - now
            left = quiet_left if quiet_left > 0 and pending.complete is not False else settle_left
            due = min(due, max(left, 0.01))
        return due

    def forget(self, path: Path) -> None:
        """Offer ``path`` again at the next rescan (its hand-off failed)."""
        self._handed.pop(path, None)

    def has_pending(self) -> bool:
        """True while some file is waiting to settle."""
        return bool(self._pending)


class FolderWatcher:
    """Runs a FolderScanner with watchdog events and a periodic rescan, handing ready files to ``submit``."""

    def __init__(
        self,
        scanner: FolderScanner,
        submit: Callable[[Candidate], None],
        rescan_interval_s: float,
        poll_s: float = 0.5,
    ) -> None:
        self.scanner = scanner
        scanner.handoff_ttl_s = max(3 * rescan_interval_s, 5.0)
        self.submit = submit
        self.rescan_interval_s = rescan_interval_s
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set by every watchdog event and by stop(): the loop sleeps on it instead of a bare poll, so a file
        # that is complete when its event arrives is handed on within milliseconds rather than up to poll_s.
        self._wake = threading.Event()
        self._observer: object | None = None

    def _start_events(self) -> None:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency; rescans still work without it
            log.warning("watchdog unavailable: relying on periodic rescans")
            return
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory:
                    return
                for attr in ("src_path", "dest_path"):
                    raw = getattr(event, attr, None)
                    if raw:
                        with watcher._lock:
                            watcher.scanner.note(Path(str(raw)))
                # After note(), so that the woken loop sees the change (it clears the flag before scanning).
                watcher._wake.set()

        observer = Observer()
        for _athlete, root in self.scanner.inboxes:
            root.mkdir(parents=True, exist_ok=True)
            observer.schedule(Handler(), str(root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def run(self) -> None:
        """Watch until ``stop()``; submission errors are logged and the file is retried at the next rescan."""
        self._start_events()
        next_rescan = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                if now >= next_rescan:
                    try:
                        self.scanner.rescan()
                    except Exception:
                        log.exception("rescan failed; trying again in %.0f s", self.rescan_interval_s)
                    next_rescan = now + self.rescan_interval_s
                ready = self.scanner.ready()
            for candidate in ready:
                try:
                    self.submit(candidate)
                except Exception:
                    log.exception("could not hand %s on; it will be retried", candidate.path.name)
                    with self._lock:
                        self.scanner.forget(candidate.path)
            # Clear right after waking and before the next scan: an event arriving during the scan sets the
            # flag again and is picked up by the next round instead of being lost.
            with self._lock:
                wait_s = self.scanner.next_due_s(self.poll_s)
            self._wake.wait(wait_s)
            self._wake.clear()
        if self._observer is not None:
            self._observer.stop()  # type: ignore[attr-defined]

    def start_thread(self) -> threading.Thread:
        """Run the watcher in a daemon thread."""
        thread = threading.Thread(target=self.run, name="stridecare-watcher", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask the watch loop to end."""
        self._stop.set()
        self._wake.set()
