"""Ingesting one file end to end: checked and hashed once, known content skipped, decoded, stored. The plain
functions that the Celery task, the command line, the archive import and the connectors all call.

Decoding happens in a sandboxed child (``ingest.sandbox``), and is bracketed by a durable *decode attempt* row:
written before the child starts, deleted once the outcome is stored. A row still there on the next attempt
means the process reading the file died with it (a machine that ran out of memory, a kill). One such death is
forgiven; after the second the file is rejected and quarantined instead of being read again, so one file
cannot put a service into a crash loop.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import cast

from sqlalchemy import Select, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.decode import Decoded, registered_sources
from ingest.files import FileStat, RefusedFile, check_file, content_hash
from ingest.origin import INBOX, Origin
from ingest.sandbox import decode_for
from ingest.store import RETRY, FileReport, existing_report, remember_file, store_decoded
from stridecare.db.athletes import ensure_athlete
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, DecodeAttempt, ImportedFile
from stridecare.plugins import source_for
from stridecare.settings import Settings

# Who started an attempt: host, pid, and a token that is new in every process (a pid is reused after a restart,
# and in a container the service is always pid 1).
_TOKEN = uuid.uuid4().hex[:12]
INTERRUPTED = "interrupted: reading this file never finished, twice (the process reading it died each time)"
MAX_INTERRUPTED = 2

# The guard's statements, built once on the tables: the guard runs twice for every file read, and on SQLite
# building a statement (and its cache key) and the ORM's unit of work cost more than running the SQL.
_ATTEMPTS = cast(Table, DecodeAttempt.__table__)
_IMPORTED = cast(Table, ImportedFile.__table__)
_UNFINISHED = select(func.max(_IMPORTED.c.attempts)).where(
    _IMPORTED.c.content_hash == bindparam("digest"), _IMPORTED.c.status == RETRY
)
_ATTEMPT = select(_ATTEMPTS.c.owner, _ATTEMPTS.c.started_at, _ATTEMPTS.c.attempts).where(
    _ATTEMPTS.c.content_hash == bindparam("digest")
)
_START = insert(_ATTEMPTS)
_RESTART = (
    update(_ATTEMPTS)
    .where(_ATTEMPTS.c.content_hash == bindparam("digest"))
    .values(attempts=bindparam("n"), owner=bindparam("by"), started_at=bindparam("at"))
)
_END = delete(_ATTEMPTS).where(_ATTEMPTS.c.content_hash == bindparam("digest"))


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


def _alive(owner: str) -> bool | None:
    """Is the process that wrote ``owner`` still running? None when it cannot be told (another host)."""
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    if token == _TOKEN:
        return True  # this process (another thread is decoding the same content right now)
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # our pid, not our token: an earlier life of this service
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def begin_attempt(db: Database, digest: str, path: Path, now: datetime, stale_after_s: float) -> bool:
    """Record that decoding ``digest`` starts; False if earlier attempts died with their reader
    ``MAX_INTERRUPTED`` times: the file is then not read again.

    One death is forgiven (a worker killed or a machine restarted for reasons of its own must not cost a good
    file); a file that was being read at two deaths is the likely cause. An attempt by a process still alive (a
    concurrent worker) counts only once it is older than ``stale_after_s`` (longer than any decoding may take).
    """
    return _begin(db, digest, path, now, stale_after_s) is not None


def _begin(db: Database, digest: str, path: Path, now: datetime, stale_after_s: float) -> int | None:
    """:func:`begin_attempt`, and in the same transaction :func:`unfinished_reads`: None when the file is not to
    be read now, else how many times reading it did not finish."""
    try:
        # One transaction: the row is read, and written when there is none.
        with db.transaction() as session:
            unfinished = _unfinished(session, digest)
            row = session.execute(_ATTEMPT, {"digest": digest}).first()
            if row is not None:
                died = _alive(row.owner) is False or (now - row.started_at).total_seconds() > stale_after_s
                if not died:
                    return unfinished  # someone is decoding it now; decoding twice is harmless (storing is idempotent)
                if row.attempts >= MAX_INTERRUPTED:
                    return None
                session.execute(_RESTART, {"digest": digest, "n": row.attempts + 1, "by": _owner(), "at": now})
                return unfinished
            session.execute(
                _START,
                {"content_hash": digest, "path": str(path)[:2000], "owner": _owner(), "started_at": now, "attempts": 1},
            )
            return unfinished
    except IntegrityError:
        pass  # a concurrent worker recorded it first: as above
    return unfinished_reads(db, digest)


def end_attempt(db: Database, digest: str) -> None:
    """The attempt on ``digest`` ended with an outcome on record."""
    with db.transaction() as session:
        session.execute(_END, {"digest": digest})


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """A file checked once (regular, inside its root, under the size cap) and hashed once: its stat and digest
    travel with it to the decoder and the store."""

    path: Path
    root: Path | None
    stat: FileStat
    digest: str


def check(settings: Settings, path: Path, root: Path | None) -> CheckedFile | FileReport:
    """The file checked and hashed, or the report of why it is refused."""
    try:
        stat = check_file(path, root=root, max_bytes=settings.max_file_bytes)
        digest = content_hash(path)
    except RefusedFile as exc:
        return FileReport(str(path), "rejected", str(exc))
    except OSError as exc:
        return FileReport(str(path), "rejected", f"unreadable: {exc.strerror or exc}")
    return CheckedFile(path, root, stat, digest)


def known_report(db: Database, settings: Settings, athlete_name: str, checked: CheckedFile) -> FileReport | None:
    """A duplicate report when this content was imported before (checked before the costly decode)."""
    known = (
        select(ImportedFile.id)
        .join(Athlete, Athlete.id == ImportedFile.athlete_id)
        .where(Athlete.name == athlete_name, ImportedFile.content_hash == checked.digest, ImportedFile.status != RETRY)
    )
    with db.read() as session:
        # Most files are new: looked up without SQLite's write lock, which the worker storing the last file
        # may hold.
        if session.scalar(known) is None:
            return None
    with db.transaction() as session:
        athlete = ensure_athlete(session, athlete_name, settings)
        imported = session.scalar(
            select(ImportedFile).where(
                ImportedFile.athlete_id == athlete.id, ImportedFile.content_hash == checked.digest
            )
        )
        if imported is None or imported.status == RETRY:
            return None
        remember_file(
            session, athlete.id, Decoded(checked.path, checked.stat, checked.digest, imported.source, None, None)
        )
        report = existing_report(session, str(checked.path), imported)
        report.athlete_id = athlete.id
        return report


def may_still_be_written(decoded: Decoded, hold_still_s: float) -> bool:
    """True if a file that failed to decode changed in the last ``hold_still_s`` seconds, or since it was read:
    its writer may not be done, so the failure is not yet a verdict."""
    if decoded.stat is None or decoded.refused:
        return False
    try:
        st = os.stat(decoded.path)
    except OSError:
        return False
    if (st.st_size, st.st_mtime_ns) != (decoded.stat.size, decoded.stat.mtime_ns):
        return True
    return time.time() - st.st_mtime_ns / 1e9 < hold_still_s


# Decodes a checked file with its time limits scaled by the budget (more for a file read again after a timeout).
Decoder = Callable[[CheckedFile, float], Decoded]


def sandboxed(settings: Settings) -> Decoder:
    """The decoder every way in uses: a sandboxed child under the settings' limits and model constants."""

    def decode(checked: CheckedFile, budget: float) -> Decoded:
        # The stat and digest travel with the file: the child does not hash it again.
        known = (checked.stat.size, checked.stat.mtime_ns, checked.digest)
        return decode_for(settings, checked.path, checked.root, known=known, budget=budget)

    return decode


def unfinished_reads(db: Database, digest: str) -> int:
    """How many times reading this content did not finish (the import log's retry count, any athlete's)."""
    with db.read() as session:
        return _unfinished(session, digest)


def unfinished_query(digest: str) -> Select[int]:
    """The most unfinished reads any athlete's import log counts for this content (an index lookup by hash)."""
    return _UNFINISHED.params(digest=digest)


def _unfinished(session: Session, digest: str) -> int:
    return int(session.scalar(_UNFINISHED, {"digest": digest}) or 0)


def read_guarded(db: Database, settings: Settings, checked: CheckedFile, now: datetime, decode: Decoder) -> Decoded:
    """Decode ``checked`` bracketed by its decode-attempt row, with twice the time for every earlier read that did
    not finish. A file that was being read at two deaths of its reader is not read again now but left to a
    later retry (``INTERRUPTED``)."""
    stale_after_s = settings.decode_timeout_s * 8 + 60.0
    unfinished = _begin(db, checked.digest, checked.path, now, stale_after_s)
    if unfinished is None:
        end_attempt(db, checked.digest)  # the retry starts counting afresh
        source = source_for(checked.path, registered_sources())
        name = source.name if source else None
        return Decoded(checked.path, checked.stat, checked.digest, name, None, INTERRUPTED, retryable=True)
    try:
        return decode(checked, float(2**unfinished))
    finally:
        # Whatever happened in the child, this process lived to record it: the attempt is over.
        end_attempt(db, checked.digest)


def ingest_checked(
    db: Database,
    settings: Settings,
    athlete_name: str,
    checked: CheckedFile,
    now: datetime,
    *,
    decode: Decoder,
    quarantine_damaged: bool = False,
    origin: Origin = INBOX,
) -> FileReport:
    """Ingest a checked file: a known content is a duplicate without decoding; else read (guarded), store."""
    known = known_report(db, settings, athlete_name, checked)
    if known is not None:
        return known
    decoded = read_guarded(db, settings, checked, now, decode)
    if (
        quarantine_damaged
        and decoded.result is None
        and not decoded.refused
        and not decoded.retryable
        and may_still_be_written(decoded, settings.hold_still_seconds)
    ):
        reason = f"{decoded.error or 'damaged'}; it may still be being written, so it is read again later"
        return FileReport(str(checked.path), "pending", reason)
    qdir = settings.effective_quarantine_dir if quarantine_damaged else None
    return store_decoded(db, settings, athlete_name, decoded, now, quarantine_dir=qdir, origin=origin)


def ingest_path(
    db: Database,
    settings: Settings,
    athlete_name: str,
    path: Path,
    now: datetime,
    *,
    root: Path | None = None,
    quarantine_damaged: bool = False,
    origin: Origin = INBOX,
) -> FileReport:
    """Ingest one file for ``athlete_name``: check and hash it once, skip known content, decode it in the
    sandbox under the decode-attempt guard, and store it through the one writer. The report says whether the
    athlete's replan is owed: the caller then runs or queues it (``recommender.planner.replan``).

    ``origin`` says where the file came from (an inbox, an export, a connector's activity): it is kept with the
    runs stored from it. With ``quarantine_damaged`` (files from a watched folder), a damaged file is moved to
    the quarantine, and a file that fails to decode while it may still be written (changed within
    ``STRIDECARE_HOLD_STILL_SECONDS``) is reported ``pending`` and left alone: the watcher offers it again once it
    has changed or held still."""
    checked = check(settings, path, root)
    if isinstance(checked, FileReport):
        return checked
    return ingest_checked(
        db,
        settings,
        athlete_name,
        checked,
        now,
        decode=sandboxed(settings),
        quarantine_damaged=quarantine_damaged,
        origin=origin,
    )
