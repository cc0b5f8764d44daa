"""Ingesting one file end to end: check, hash, skip what is known, decode, store. The plain function that the
Celery task, the command line and the archive import all call."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from ingest.decode import Decoded, decode_path
from ingest.files import RefusedFile, check_file, content_hash
from ingest.store import FileReport, existing_report, remember_file, store_decoded
from stridecare.db.athletes import ensure_athlete
from stridecare.db.engine import Database
from stridecare.db.models import ImportedFile
from stridecare.settings import Settings


def known_report(
    db: Database, settings: Settings, athlete_name: str, path: Path, root: Path | None
) -> FileReport | None:
    """A duplicate report when this content was imported before (checked before the costly decode)."""
    try:
        stat = check_file(path, root=root, max_bytes=settings.max_file_bytes)
        digest = content_hash(path)
    except (RefusedFile, OSError):
        return None
    with db.transaction() as session:
        athlete = ensure_athlete(session, athlete_name, settings)
        imported = session.scalar(
            select(ImportedFile).where(ImportedFile.athlete_id == athlete.id, ImportedFile.content_hash == digest)
        )
        if imported is None:
            return None
        remember_file(session, Decoded(path, stat, digest, imported.source, None, None))
        return existing_report(session, str(path), imported)


def ingest_path(
    db: Database,
    settings: Settings,
    athlete_name: str,
    path: Path,
    now: datetime,
    *,
    root: Path | None = None,
    quarantine_damaged: bool = False,
) -> FileReport:
    """Ingest one file for ``athlete_name``; damaged files are quarantined when ``quarantine_damaged``."""
    known = known_report(db, settings, athlete_name, path, root)
    if known is not None:
        return known
    decoded = decode_path(path, root, settings.max_file_bytes)
    qdir = settings.effective_quarantine_dir if quarantine_damaged else None
    return store_decoded(db, settings, athlete_name, decoded, now, quarantine_dir=qdir)
