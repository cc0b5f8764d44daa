"""Watching inbox folders: filesystem events plus a periodic rescan, and a settle check before any file is read.

A file is handed on only when its size and modification time have not changed for ``settle_seconds`` — a FIT
file still being copied from a watch is never read half. Events make pick-up quick; the rescan catches what
events missed (network shares, a watcher restarted after a crash). Files already read, with the same size and
modification time, are skipped without hashing, which keeps the rescan of a large archive cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from ingest.decode import supported_suffixes
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
        self._pending.pop(path, None)
        self._observe(path, now)

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
                    self._handed.pop(path, None)
                    continue
                handed = self._handed.get(path)
                if handed is not None and handed[:2] == key and now - handed[2] < self.handoff_ttl_s:
                    continue
                self._observe(path, now)
                queued += 1
        return queued

    def ready(self) -> list[Candidate]:
        """Files whose size and mtime held still for the settle time; each is handed out once per version."""
        now = time.monotonic()
        out: list[Candidate] = []
        for path in list(self._pending):
            self._observe(path, now)
            pending = self._pending.get(path)
            if pending is None or now - pending.stable_since < self.settle_seconds:
                continue
            owner = self._owner(path)
            del self._pending[path]
            if owner is None:
                continue
            self._handed[path] = (pending.size, pending.mtime_ns, now)
            out.append(Candidate(owner[0], path, owner[1]))
        return out

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
            self._stop.wait(self.poll_s)
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
