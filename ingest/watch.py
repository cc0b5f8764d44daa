"""Watching inbox folders: filesystem events plus a periodic rescan, and a completeness check before any file
is read.

A file is handed on once it held still for a moment (``quiet_s``, 0.2 s) and its source can tell from the
content that it is whole (``known_complete``; FIT: the segment sizes tile the file and every file CRC
matches), or otherwise once its size and modification time have not changed for ``settle_seconds`` — a file
still being copied from a watch is never read half. The content check runs at most once per size and mtime
seen, and a file it does not vouch for simply waits to settle. Events make pick-up quick (an event wakes the
loop at once); the rescan catches what events missed (network shares, a watcher restarted after a crash). An
inbox folder removed and made again (a sync tool replacing it, a cleaned-up folder) is watched again within a
second, and rescanned at once: events stop at a removed folder, and only the rescan would find its files.
Files already read, with the same size and modification time, are skipped without hashing, which keeps the
rescan of a large archive cheap.

Where the platform reports when a writer closes a file (inotify's ``IN_CLOSE_WRITE``, watchdog's
``FileClosedEvent`` on Linux), that close is the signal: a file written to since its last close is never handed
on, however long its writer pauses, and a close hands it on after ``quiet_s``. A file handed on while it was
young (changed less than ``hold_still_s`` ago) is looked at again once it has held still that long: if its
reading failed and left no record (the ingest step reports ``pending`` for a young file), it is offered once
more, and only that attempt may quarantine it. A quarantined file that was written to after it was moved is
taken back to where it came from. FIFOs, sockets and devices are refused (logged once) and never opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from watchdog.events import (
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileModifiedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ingest.decode import known_complete, supported_suffixes
from ingest.files import REASON_SUFFIX, iter_files, kind_of, take_back
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, SeenFile
from stridecare.logging import event

log = logging.getLogger(__name__)
console = logging.getLogger("stridecare.console")
# A Strava bulk export dropped into an inbox is imported whole (``ingest.strava_export``).
EXPORT_SUFFIX = ".zip"
# What sync tools and browsers write while a file is on its way (Syncthing, rsync, Firefox, Chrome).
_TEMPORARY = (".tmp", ".part", ".partial", ".crdownload", ".download", "~")


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
    # The content check's verdict for this size and mtime; None until asked. Kept here so that a large file that
    # is not (yet) vouched for is not re-read at every poll while it settles.
    complete: bool | None = None
    closed: bool = False  # its writer closed this version (IN_CLOSE_WRITE): complete whatever the content says


class FolderScanner:
    """Finds settled, not-yet-seen files in a set of ``(athlete, folder)`` inboxes. Not thread-safe by itself;
    ``FolderWatcher`` serialises access.

    ``is_complete`` is the content check that may hand a file on before it settles (default: each source's
    own, ``known_complete``); it is asked at most once per size and modification time of a file.
    """

    def __init__(
        self,
        db: Database,
        inboxes: list[tuple[str, Path]],
        settle_seconds: float,
        *,
        hold_still_s: float = 30.0,
        quarantine_dir: Path | None = None,
        is_complete: Callable[[Path], bool] = known_complete,
    ) -> None:
        self.db = db
        self.inboxes = inboxes
        self.settle_seconds = settle_seconds
        self.hold_still_s = hold_still_s
        self.quarantine_dir = quarantine_dir
        self._is_complete = is_complete
        # Set by the watcher when its events include closes (inotify): only then does an open writer hold a file.
        self.close_events = False
        # Files written to since their last close, with when that was first seen. A writer that never closes (or
        # a close event lost to an overflowing queue) holds a file at most max_open_wait_s, then settle rules.
        self._writing: dict[Path, float] = {}
        self.max_open_wait_s = 600.0
        # Files handed on while young: (size, mtime_ns, when to look again).
        self._recheck: dict[Path, tuple[int, int, float]] = {}
        self._refused: set[Path] = set()  # non-regular files already logged
        self._ignored: set[Path] = set()  # files that are no activity, already said
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
        self._suffixes = (*supported_suffixes(), EXPORT_SUFFIX)

    def _owner(self, path: Path) -> tuple[str, Path] | None:
        for athlete, root in self.inboxes:
            if path == root or root in path.parents:
                return athlete, root
        return None

    def _wanted(self, path: Path) -> bool:
        return path.name.lower().endswith(self._suffixes)

    def _ignore(self, path: Path, athlete: str) -> None:
        """Say once that a file in an inbox is not read: a person who dropped it there learns why nothing
        happens. A sync tool's or browser's temporary file (hidden, ``.tmp``, ``.part`` …) is passed over quietly:
        it becomes an activity file under its real name."""
        name = path.name.lower()
        if path in self._ignored or name.startswith((".", "~")) or name.endswith(_TEMPORARY) or path.is_dir():
            return
        self._ignored.add(path)
        event(
            console,
            "file",
            f"{athlete}: {path.name} ignored: not an activity file (FIT, GPX or TCX, gzipped or not, or a Strava "
            "export .zip)",
            athlete=athlete,
            path=str(path),
            status="ignored",
            reason="not an activity file",
        )

    def note(self, path: Path, kind: str = "change") -> None:
        """An event said ``path`` changed: (re)start its settle timer. ``kind`` is ``"write"`` (content
        written), ``"close"`` (its writer closed it after writing) or ``"change"`` (anything else)."""
        owner = self._owner(path)
        if owner is None:
            return
        if not self._wanted(path):
            self._ignore(path, owner[0])
            return
        now = time.monotonic()
        if kind == "write" and self.close_events:
            self._writing.setdefault(path, now)
        elif kind == "close":
            self._writing.pop(path, None)
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
            cur.closed = prev.closed
        if cur is not None and kind == "close":
            cur.closed = True

    def _observe(self, path: Path, now: float) -> None:
        try:
            st = path.stat()
        except OSError:
            self._pending.pop(path, None)
            self._writing.pop(path, None)
            return
        what = kind_of(st.st_mode)
        if what is not None:
            # Never opened (a FIFO would block the open, a device may do anything): refused, said once.
            self._pending.pop(path, None)
            if path not in self._refused:
                self._refused.add(path)
                log.warning("refused: %s is %s, not a regular file; it is not read", path, what)
            return
        prev = self._pending.get(path)
        if prev is None or (prev.size, prev.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._pending[path] = _Pending(st.st_size, st.st_mtime_ns, now)

    def rescan(self) -> int:
        """Walk every inbox and queue files that are new or changed since they were last read."""
        # Per athlete: two athletes' inboxes may hold the same path, and each athlete imports it.
        seen: dict[tuple[str, str], tuple[int, int]] = {}
        with self.db.transaction() as session:
            rows = session.execute(
                select(Athlete.name, SeenFile.path, SeenFile.size, SeenFile.mtime_ns).join(
                    Athlete, Athlete.id == SeenFile.athlete_id
                )
            )
            for row in rows:
                seen[(row.name, row.path)] = (row.size, row.mtime_ns)
        now = time.monotonic()
        # Hand-off records go only when they expire (an expired one no longer counts anywhere), not as soon as
        # the file shows up as read: until then they make note() ignore a late event for that version (the
        # writer's close after a file was already vouched for and read), which would otherwise be handed on
        # again at once. Pruning here also drops records of files moved away after their hand-off.
        self._handed = {p: h for p, h in self._handed.items() if now - h[2] < self.handoff_ttl_s}
        queued = 0
        self._take_back()
        for athlete, root in self.inboxes:
            if not root.is_dir():
                continue
            for path in iter_files(root):
                if not self._wanted(path):
                    self._ignore(path, athlete)
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                key = (st.st_size, st.st_mtime_ns)
                if seen.get((athlete, str(path.resolve()))) == key:
                    continue
                handed = self._handed.get(path)
                if handed is not None and handed[:2] == key and now - handed[2] < self.handoff_ttl_s:
                    continue
                self._observe(path, now)
                queued += 1
        return queued

    def _take_back(self) -> None:
        """Quarantined files written to after their move (a writer that was not done) go back to the inbox."""
        qdir = self.quarantine_dir
        if qdir is None or not qdir.is_dir():
            return
        roots = [root for _athlete, root in self.inboxes]
        for reason in qdir.glob("*" + REASON_SUFFIX):
            quarantined = reason.with_name(reason.name[: -len(REASON_SUFFIX)])
            try:
                back = take_back(quarantined, roots)
            except OSError:
                log.warning("could not take %s back from quarantine", quarantined.name, exc_info=True)
                continue
            if back is not None:
                log.info("%s changed after it was quarantined: taken back to %s", quarantined.name, back)

    def _recorded(self, path: Path, size: int, mtime_ns: int) -> bool:
        """True if some ingest recorded this version of ``path`` as read."""
        with self.db.transaction() as session:
            rows = session.execute(
                select(SeenFile.size, SeenFile.mtime_ns).where(SeenFile.path == str(path.resolve()))
            ).all()
        return any((row.size, row.mtime_ns) == (size, mtime_ns) for row in rows)

    def _due_rechecks(self, now: float) -> list[Path]:
        """Young files handed on earlier that have now held still: offered again unless their reading left a
        record (then it succeeded, or failed for good and quarantined them)."""
        out: list[Path] = []
        for path, (size, mtime_ns, due) in list(self._recheck.items()):
            if now < due:
                continue
            del self._recheck[path]
            if path in self._pending:
                continue  # changed meanwhile: the new version has its own turn
            try:
                st = path.stat()
            except OSError:
                continue  # quarantined or moved away
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                self._observe(path, now)
                continue
            if not self._recorded(path, size, mtime_ns):
                out.append(path)
        return out

    def _vouched(self, path: Path, pending: _Pending) -> bool:
        """The content check for the version ``pending`` describes, asked at most once per version."""
        if pending.complete is None:
            verdict = self._is_complete(path)
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
            since = self._writing.get(path)
            if since is not None and now - since < self.max_open_wait_s:
                continue  # its writer has not closed it since writing: not done, however still it looks
            # Settled files need no content check; only the ones still inside the settle time are read.
            if now - pending.stable_since < self.settle_seconds:
                if now - pending.stable_since < self.quiet_s:
                    continue
                if pending.closed:
                    pass  # its writer is done
                elif pending.complete is None:
                    if checks and time.monotonic() >= check_until:
                        continue  # over this round's budget: checked in a later round, or it settles meanwhile
                    checks += 1
                if not pending.closed and not self._vouched(path, pending):
                    continue
            owner = self._owner(path)
            del self._pending[path]
            self._writing.pop(path, None)
            if owner is None:
                continue
            self._hand(path, pending.size, pending.mtime_ns, now)
            out.append(Candidate(owner[0], path, owner[1]))
        for path in self._due_rechecks(now):
            owner = self._owner(path)
            if owner is not None:
                st = path.stat()
                self._hand(path, st.st_size, st.st_mtime_ns, now)
                out.append(Candidate(owner[0], path, owner[1]))
        return out

    def _hand(self, path: Path, size: int, mtime_ns: int, now: float) -> None:
        self._handed[path] = (size, mtime_ns, now)
        age = time.time() - mtime_ns / 1e9
        if age < self.hold_still_s:
            # Its writer may not be done: look again once it has held still (plus a margin for the clock).
            self._recheck[path] = (size, mtime_ns, now + self.hold_still_s - age + 0.5)

    def next_due_s(self, default: float) -> float:
        """Seconds until the earliest waiting file may be handed on (quiet or settle time), at most ``default``."""
        now = time.monotonic()
        due = default
        for pending in self._pending.values():
            quiet_left = pending.stable_since + self.quiet_s - now
            settle_left = pending.stable_since + self.settle_seconds - now
            left = quiet_left if quiet_left > 0 and pending.complete is not False else settle_left
            due = min(due, max(left, 0.01))
        for _size, _mtime_ns, when in self._recheck.values():
            due = min(due, max(when - now, 0.01))
        return due

    def forget(self, path: Path) -> None:
        """Offer ``path`` again at the next rescan (its hand-off failed)."""
        self._handed.pop(path, None)

    def has_pending(self) -> bool:
        """True while some file is waiting to settle."""
        return bool(self._pending)

    def refused(self) -> set[Path]:
        """Non-regular files found in the inboxes (and refused)."""
        return set(self._refused)


class FolderWatcher:
    """Runs a FolderScanner with watchdog events and a periodic rescan, handing ready files to ``submit``.

    With ``submit_group``, the files found ready together are handed on in groups of at most ``group_size``
    files of one athlete's folder instead (``submit`` still takes a file that is alone): a burst of files then
    crosses a queue in a few messages instead of one per file.
    """

    def __init__(
        self,
        scanner: FolderScanner,
        submit: Callable[[Candidate], None],
        rescan_interval_s: float,
        poll_s: float = 0.5,
        *,
        submit_group: Callable[[list[Candidate]], None] | None = None,
        group_size: int = 16,
    ) -> None:
        self.scanner = scanner
        scanner.handoff_ttl_s = max(3 * rescan_interval_s, 5.0)
        self.submit = submit
        self.submit_group = submit_group
        self.group_size = max(1, group_size)
        self.rescan_interval_s = rescan_interval_s
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set by every watchdog event and by stop(): the loop sleeps on it instead of a bare poll, so a file
        # that is complete when its event arrives is handed on within milliseconds rather than up to poll_s.
        self._wake = threading.Event()
        self._observer: object | None = None
        self._handler: FileSystemEventHandler | None = None
        # Each inbox's watch and the identity (device, inode) of the folder it was set on; None: not there.
        self._watches: dict[Path, tuple[object | None, tuple[int, int] | None]] = {}
        self._next_look = 0.0
        self._lost: set[Path] = set()  # inboxes whose watch reported the folder itself removed or moved

    def _start_events(self) -> None:
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory and event.event_type in ("deleted", "moved"):
                    # An inbox itself removed or moved away: its watch ends here. A folder made again in its
                    # place may get the same inode, so this event, not only the identity, says to watch again.
                    gone = Path(os.fsdecode(event.src_path))
                    if gone in watcher._watches:
                        with watcher._lock:
                            watcher._lost.add(gone)
                        watcher._next_look = 0.0
                        watcher._wake.set()
                if event.is_directory or isinstance(event, FileOpenedEvent | FileClosedNoWriteEvent):
                    return  # opening or reading changes nothing (and our own reads cause these)
                if isinstance(event, FileClosedEvent):
                    kind = "close"
                elif isinstance(event, FileModifiedEvent):  # IN_MODIFY; a file moved in is only "created"
                    kind = "write"
                else:
                    kind = "change"
                for attr in ("src_path", "dest_path"):
                    raw = getattr(event, attr, None)
                    if raw:
                        with watcher._lock:
                            watcher.scanner.note(Path(os.fsdecode(raw)), kind if attr == "src_path" else "change")
                # After note(), so that the woken loop sees the change (it clears the flag before scanning).
                watcher._wake.set()

        observer = Observer()
        self._handler = Handler()
        for _athlete, root in self.scanner.inboxes:
            if not make_inbox(root, say=False):
                self._watches[root] = (None, None)  # watched once it appears (``_rewatch``)
                continue
            self._watches[root] = (observer.schedule(self._handler, str(root), recursive=True), _identity(root))
        observer.daemon = True
        observer.start()
        # inotify reports closes after writing; other observers (polling, FSEvents) do not, and there an open
        # writer cannot be told from a paused one: settle time alone decides.
        self.scanner.close_events = "inotify" in type(observer).__module__
        self._observer = observer

    def _rewatch(self) -> bool:
        """Watch again every inbox folder that was removed and made again since its watch was set (events stop
        at a removed folder). True when one was: its files are for a rescan now."""
        observer: Any = self._observer
        if observer is None or self._handler is None:
            return False
        renewed = False
        with self._lock:
            lost, self._lost = self._lost, set()
        for root, (watch, seen) in list(self._watches.items()):
            now = _identity(root)
            if now == seen and root not in lost:
                continue
            if watch is not None:
                with contextlib.suppress(KeyError, OSError):  # its emitter may have ended with the folder
                    observer.unschedule(watch)
            if now is None:
                if seen is not None:  # said once, not at every look while it stays away
                    log.warning("inbox %s is gone; its files are read once it is back", root)
                self._watches[root] = (None, None)
                continue
            try:
                self._watches[root] = (observer.schedule(self._handler, str(root), recursive=True), now)
            except OSError:
                log.exception("could not watch %s again; its files are found by the rescan", root)
                self._watches[root] = (None, now)
            else:
                log.info("inbox %s is there (again); watching it", root)
            renewed = True
        return renewed

    def run(self) -> None:
        """Watch until ``stop()``; submission errors are logged and the file is retried at the next rescan."""
        self._start_events()
        next_rescan = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= self._next_look:
                self._next_look = now + _LOOK_S
                if self._rewatch():
                    next_rescan = now
            with self._lock:
                if now >= next_rescan:
                    try:
                        self.scanner.rescan()
                    except Exception:
                        log.exception("rescan failed; trying again in %.0f s", self.rescan_interval_s)
                    next_rescan = now + self.rescan_interval_s
                try:
                    ready = self.scanner.ready()
                except Exception:
                    # The database may be restarting (a recheck asks it whether a file was read): the watcher
                    # carries on, and the next rescan offers again whatever was not read.
                    log.exception("checking files failed; trying again in %.0f s", self.rescan_interval_s)
                    ready = []
            for group in self._groups(ready):
                try:
                    # Without submit_group every group is a single file (``_groups``).
                    if self.submit_group is not None and len(group) > 1:
                        self.submit_group(group)
                    else:
                        self.submit(group[0])
                except Exception:
                    log.exception("could not hand %s on; it will be retried", ", ".join(c.path.name for c in group))
                    with self._lock:
                        for candidate in group:
                            self.scanner.forget(candidate.path)
            # Clear right after waking and before the next scan: an event arriving during the scan sets the
            # flag again and is picked up by the next round instead of being lost.
            with self._lock:
                wait_s = self.scanner.next_due_s(self.poll_s)
            self._wake.wait(wait_s)
            self._wake.clear()
        if self._observer is not None:
            self._observer.stop()  # type: ignore[attr-defined]

    def _groups(self, ready: list[Candidate]) -> list[list[Candidate]]:
        if self.submit_group is None:
            return [[c] for c in ready]
        by_folder: dict[tuple[str, Path], list[Candidate]] = {}
        for candidate in ready:
            by_folder.setdefault((candidate.athlete, candidate.root), []).append(candidate)
        return [
            files[i : i + self.group_size]
            for files in by_folder.values()
            for i in range(0, len(files), self.group_size)
        ]

    def start_thread(self) -> threading.Thread:
        """Run the watcher in a daemon thread."""
        thread = threading.Thread(target=self.run, name="stridecare-watcher", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask the watch loop to end."""
        self._stop.set()
        self._wake.set()


def make_inbox(root: Path, *, say: bool = True) -> bool:
    """Make the inbox folder (and its parents) when it is not there. False when it cannot be made — a watch's
    folder while the watch is not mounted, under a folder this user may not write; a read-only file system:
    the watcher then watches it from the moment it appears, and (``say``) a warning tells so."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if say:
            why = (error.strerror or str(error)).lower()
            log.warning("inbox %s is not there and cannot be made (%s); its files are read once it is there", root, why)
        return False
    return True


# How often the watcher checks that each inbox is still the folder its watch was set on (one stat per inbox).
_LOOK_S = 1.0


def _identity(root: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder ``root``, None when it is not there (or not a folder)."""
    try:
        st = root.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
