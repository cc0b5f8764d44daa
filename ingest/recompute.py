"""Rebuilding an athlete's runs from their sources after a model or converter change (``stridecare recompute``).

Every imported file's kept original (``ingest.originals``; the file at its recorded path when no original was
kept and its content is unchanged) is decoded again with the settings' model constants, and every kept API
record (``SourceRecord``) converted again; the runs are updated through the one writer (``ingest.runs``), and
the athlete is marked stale from their first run so that loads, flags and the daily series are recomputed by
the replan that follows. The result is the same as a fresh import with the same settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from ingest.files import content_hash
from ingest.originals import original
from ingest.runs import store_parsed
from ingest.sandbox import decode_for
from ingest.strava.convert import SOURCE as STRAVA
from ingest.strava.convert import convert_activity
from ingest.strava.sync import kept_record
from stridecare.db.athletes import get_athlete, lock_athlete
from stridecare.db.engine import Database
from stridecare.db.marks import mark_stale
from stridecare.db.models import Athlete, ImportedFile, Run, SourceRecord
from stridecare.domain.run import ParsedRun
from stridecare.settings import Settings


@dataclass(slots=True)
class Recomputed:
    """What a recompute did: sources read, runs changed, sources that could not be read again (with why), and
    the athlete whose replan follows."""

    sources: int = 0
    changed: int = 0
    missing: list[str] | None = None
    replan_athlete: int | None = None


def _source_file(settings: Settings, recorded: str, kept: str | None, digest: str) -> Path | None:
    """The bytes an import log row was read from: the kept original, else the recorded path if its content is
    still the same."""
    if kept:
        copy = original(settings.data_home, kept)
        if copy.is_file():
            return copy
    path = Path(recorded)
    try:
        if path.is_file() and content_hash(path) == digest:
            return path
    except OSError:
        return None
    return None


def recompute_athlete(
    db: Database, settings: Settings, athlete_name: str, *, on_source: Callable[[str], None] | None = None
) -> Recomputed:
    """Rebuild the athlete's runs from their kept sources (see the module docstring); ``on_source`` hears the
    label of each source as it is done (progress)."""
    out = Recomputed(missing=[])
    with db.read() as session:
        athlete_id = get_athlete(session, athlete_name).id
        files = list(
            session.execute(
                select(ImportedFile.id, ImportedFile.path, ImportedFile.original, ImportedFile.content_hash)
                .where(ImportedFile.athlete_id == athlete_id, ImportedFile.status == "ingested")
                .order_by(ImportedFile.id)
            )
        )
        records = list(
            session.scalars(
                select(SourceRecord.id)
                .where(SourceRecord.athlete_id == athlete_id, SourceRecord.source == STRAVA)
                .order_by(SourceRecord.id)
            )
        )
    for file_id, path, kept, digest in files:
        source = _source_file(settings, path, kept, digest)
        if source is None:
            assert out.missing is not None
            out.missing.append(f"{path}: neither the kept original nor the file itself is there any more")
            continue
        decoded = decode_for(settings, source, None)
        if decoded.result is None:
            assert out.missing is not None
            out.missing.append(f"{path}: {decoded.error}")
            continue
        _store(db, athlete_id, decoded.result.runs, out, file_id=file_id)
        if on_source is not None:
            on_source(path)
    for record_id in records:
        with db.read() as session:
            rec = session.get(SourceRecord, record_id)
            if rec is None:
                continue
            key, data = rec.source_key, kept_record(rec)
        parsed = convert_activity(data["activity"], settings.load.constants, data.get("streams"))
        _store(db, athlete_id, [parsed] if isinstance(parsed, ParsedRun) else [], out)
        if on_source is not None:
            on_source(f"{STRAVA} activity {key}")
    with db.transaction() as session:
        lock_athlete(session, athlete_id)
        athlete = get_athlete(session, athlete_name)
        first = session.scalar(select(func.min(Run.start_time)).where(Run.athlete_id == athlete_id))
        # Every figure is recomputed, not only those of changed runs: the model constants also decide loads.
        if first is not None:
            mark_stale(session, athlete, since=first)
            out.replan_athlete = athlete_id
    return out


def _store(
    db: Database, athlete_id: int, parsed: list[ParsedRun], out: Recomputed, *, file_id: int | None = None
) -> None:
    out.sources += 1
    with db.transaction() as session:
        lock_athlete(session, athlete_id)
        athlete = session.get(Athlete, athlete_id)
        if athlete is None:
            return
        existing = None
        if file_id is not None:
            existing = {r.source_key: r for r in session.scalars(select(Run).where(Run.file_id == file_id))}
        stored = store_parsed(session, athlete, parsed, file_id=file_id, existing=existing)
        out.changed += len(stored.runs)
