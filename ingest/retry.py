"""Nothing lost for good: reading again the files whose reading did not finish, and any rejected or quarantined
file on request (``stridecare retry``), after an upgrade whose reader may now manage them.

A timeout or a reader that died is not a verdict on the file: the import log keeps it as ``retry`` with a time to
try again (``ingest.store.retry_delay``), the beat's tick hands each due one to ``stridecare.retry_file``, and
every try gets twice the time of the one before. ``stridecare retry`` forgets the import log's verdict on the
chosen files, moves quarantined ones back where they came from when that place is free, and reads them again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from ingest.files import REASON_SUFFIX, content_hash, original_path, reason_file
from ingest.origin import Origin
from ingest.service import ingest_path
from ingest.store import RETRY, FileReport
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, ImportedFile
from stridecare.settings import Settings

# The verdicts ``stridecare retry`` takes back: a rejection, or a read still waiting for its next try.
RETRYABLE = ("rejected", RETRY)


@dataclass(frozen=True, slots=True)
class RetryItem:
    """One file to read again: for whom, where it is now, and the import log row it replaces (if any)."""

    athlete: str
    path: Path
    file_id: int | None = None


def due_retries(db: Database, now: datetime) -> list[int]:
    """Import log rows whose next read is due: the tick hands each to ``stridecare.retry_file``."""
    with db.read() as session:
        return list(
            session.scalars(
                select(ImportedFile.id)
                .where(ImportedFile.status == RETRY, ImportedFile.retry_at <= now)
                .order_by(ImportedFile.retry_at)
                .limit(100)
            )
        )


def _root_of(settings: Settings, path: Path) -> Path | None:
    """The watched folder ``path`` lies in, if any: its files keep the watched folder's rules (no link leaving
    it, quarantine when damaged)."""
    real = path.resolve()
    for _athlete, root in settings.inbox_map():
        if root.resolve() in real.parents:
            return root
    return None


def read_again(db: Database, settings: Settings, item: RetryItem, now: datetime) -> FileReport:
    """Read one file again; a due retry keeps its import-log row (and its count), a retry asked for by hand
    starts afresh."""
    if not item.path.exists():
        return FileReport(str(item.path), "rejected", f"refused: {item.path} no longer exists")
    origin = Origin("inbox")
    if item.file_id is not None:
        with db.transaction() as session:
            row = session.get(ImportedFile, item.file_id)
            if row is not None:
                origin = Origin(row.origin or "inbox", row.origin_account, row.origin_item)
                if row.status != RETRY:
                    session.delete(row)
    root = _root_of(settings, item.path)
    return ingest_path(
        db, settings, item.athlete, item.path, now, root=root, quarantine_damaged=root is not None, origin=origin
    )


def due_item(db: Database, file_id: int) -> RetryItem | None:
    """The retry a tick handed on, if it is still due (not read meanwhile)."""
    with db.read() as session:
        row = session.get(ImportedFile, file_id)
        if row is None or row.status != RETRY:
            return None
        athlete = session.get(Athlete, row.athlete_id)
        return None if athlete is None else RetryItem(athlete.name, Path(row.path), row.id)


def _quarantined(settings: Settings) -> dict[Path, Path]:
    """Every quarantined file by the path it came from."""
    found: dict[Path, Path] = {}
    qdir = settings.effective_quarantine_dir
    if not qdir.is_dir():
        return found
    for reason in qdir.glob(f"*{REASON_SUFFIX}"):
        kept = reason.with_name(reason.name.removesuffix(REASON_SUFFIX))
        came_from = original_path(kept)
        if kept.is_file() and came_from is not None:
            found[came_from] = kept
    return found


def _restore(kept: Path, came_from: Path) -> Path:
    """Move a quarantined file back where it came from when that place is free; else read it where it is."""
    if came_from.exists() or not came_from.parent.is_dir():
        return kept
    kept.rename(came_from)
    reason_file(kept).unlink(missing_ok=True)
    return came_from


def chosen(db: Database, settings: Settings, athlete: str | None, paths: Iterable[Path]) -> list[RetryItem]:
    """What ``stridecare retry`` reads again: the given files (for ``athlete``, or the default athlete), or every
    rejected, quarantined or waiting file of ``athlete`` (of every athlete when None)."""
    quarantined = _quarantined(settings)
    given = [p.expanduser() for p in paths]
    with db.read() as session:
        query = select(ImportedFile, Athlete.name).join(Athlete, Athlete.id == ImportedFile.athlete_id)
        query = query.where(ImportedFile.status.in_(RETRYABLE))
        if athlete is not None:
            query = query.where(Athlete.name == athlete)
        rows = [(row.id, row.path, row.content_hash, name) for row, name in session.execute(query)]
    if given:
        by_hash: dict[str, tuple[int, str]] = {digest: (rid, name) for rid, _p, digest, name in rows}
        items = []
        for path in given:
            came_from = original_path(path) if path.with_name(path.name + REASON_SUFFIX).exists() else None
            if came_from is not None:
                path = _restore(path, came_from)
            try:
                rid, name = by_hash.get(content_hash(path), (None, athlete or settings.default_athlete))
            except OSError:
                rid, name = None, athlete or settings.default_athlete
            items.append(RetryItem(name, path, rid))
        return items
    items = []
    for rid, recorded, _digest, name in rows:
        where = Path(recorded)
        if not where.exists() and where in quarantined:
            where = _restore(quarantined[where], where)
        items.append(RetryItem(name, where, rid))
    return items
