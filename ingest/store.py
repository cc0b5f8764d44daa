"""Storing decoded files: the import log, runs and samples, and the load/prompt update, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.decode import Decoded
from ingest.dedupe import link_duplicate
from ingest.files import quarantine
from recommender.planner import complete_pending, mark_deferred, runs_changed
from recommender.run_json import run_json
from recommender.shoes import shoe_for_new_run
from stridecare.db.athletes import ensure_athlete
from stridecare.db.engine import Database
from stridecare.db.models import ImportedFile, Run, RunSamples, SeenFile
from stridecare.db.samples import ENCODING, pack_samples
from stridecare.domain.plausibility import first_implausibility
from stridecare.domain.run import ParsedRun
from stridecare.settings import Settings


@dataclass(slots=True)
class FileReport:
    """The result of one input file, as ``stridecare ingest --json`` prints it."""

    path: str
    status: str  # ingested | duplicate | skipped | rejected
    reason: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    # A deferred store that owes the athlete's replan (``planner.mark_deferred``): the caller queues it. Else a
    # replan is queued or running and plans these runs too (``planner.replan``).
    replan_owed: bool = False

    def as_json(self) -> dict[str, Any]:
        """The documented JSON shape."""
        return {"path": self.path, "status": self.status, "reason": self.reason, "runs": self.runs}


def add_run(session: Session, athlete_id: int, parsed: ParsedRun, file_id: int | None) -> Run:
    """Insert one parsed run with its packed samples (caller handles uniqueness)."""
    run = Run(
        athlete_id=athlete_id,
        source=parsed.source,
        source_key=parsed.source_key,
        file_id=file_id,
        name=parsed.name,
        sport=parsed.sport,
        sub_sport=parsed.sub_sport,
        start_time=parsed.start_time,
        utc_offset_s=parsed.utc_offset_s,
        elapsed_s=parsed.elapsed_s,
        timer_s=parsed.timer_s,
        distance_m=parsed.distance_m,
        ascent_m=parsed.ascent_m,
        descent_m=parsed.descent_m,
        steps=parsed.steps,
        avg_cadence_spm=parsed.avg_cadence_spm,
        avg_heart_rate_bpm=parsed.avg_heart_rate_bpm,
        max_heart_rate_bpm=parsed.max_heart_rate_bpm,
        cadence_source=str(parsed.cadence_source),
        device=parsed.device,
        device_total_strides=parsed.device_total_strides,
        shoe_id=shoe_for_new_run(session, athlete_id, parsed.gear_id),
    )
    if len(parsed.samples):
        run.samples = RunSamples(count=len(parsed.samples), encoding=ENCODING, data=pack_samples(parsed.samples))
    session.add(run)
    return run


def remember_file(session: Session, athlete_id: int, decoded: Decoded) -> None:
    """Record that this athlete read this path at this size and mtime, so their rescans skip it unhashed.

    An upsert: a concurrent import of the same folder writing the same row (a duplicate's fast path takes no
    athlete lock) updates it instead of failing the transaction on the primary key.
    """
    if decoded.stat is None or decoded.content_hash is None:
        return
    values = {
        "athlete_id": athlete_id,
        "path": str(decoded.path.resolve()),
        "size": decoded.stat.size,
        "mtime_ns": decoded.stat.mtime_ns,
        "content_hash": decoded.content_hash,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(SeenFile).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[SeenFile.athlete_id, SeenFile.path],
        set_={k: statement.excluded[k] for k in ("size", "mtime_ns", "content_hash")},
    )
    session.execute(statement)


def existing_report(session: Session, path: str, imported: ImportedFile) -> FileReport:
    """The report for content imported before, naming the first copy."""
    runs = session.scalars(select(Run).where(Run.file_id == imported.id).order_by(Run.start_time)).all()
    reason = f"same content as {imported.path} ({imported.status})"
    return FileReport(path, "duplicate", reason, [run_json(r) for r in runs])


def store_decoded(
    db: Database,
    settings: Settings,
    athlete_name: str,
    decoded: Decoded,
    now: datetime,
    *,
    quarantine_dir: Path | None = None,
    defer_load: bool = False,
) -> FileReport:
    """Record one decoded file exactly once: a second call with the same content reports a duplicate.

    Runs, samples, load, prompts and their outbox rows are written in one transaction, so a crash leaves either
    all of them or none (and the file is then picked up again by the next scan). ``defer_load`` stores the runs
    only; the caller then runs :func:`complete_pending_loads` once, in time order (bulk imports).
    """
    path = str(decoded.path)
    if decoded.refused or decoded.content_hash is None:
        return FileReport(path, "rejected", decoded.error)
    if decoded.result is not None and (implausible := first_implausibility(decoded.result.runs)):
        # Physically impossible content is rejected like a damaged file: logged, quarantined, never stored.
        decoded = replace(decoded, result=None, error=implausible)
    report, move = FileReport(path, "duplicate", "stored at the same time by a concurrent import"), False
    for _attempt in range(2):
        try:
            report, move = _store_once(db, settings, athlete_name, decoded, now, defer_load)
            break
        except IntegrityError:
            # A concurrent import stored the same content (or the same run) first: the second pass reports it
            # as a duplicate; if that too meets a unique violation, the content is stored all the same.
            continue
    if move and quarantine_dir is not None and decoded.path.exists():
        quarantine(decoded.path, quarantine_dir, report.reason or "damaged", now)
    return report


def _store_once(
    db: Database, settings: Settings, athlete_name: str, decoded: Decoded, now: datetime, defer_load: bool
) -> tuple[FileReport, bool]:
    path = str(decoded.path)
    assert decoded.content_hash is not None and decoded.stat is not None
    with db.transaction() as session:
        athlete = ensure_athlete(session, athlete_name, settings, lock=True)
        imported = session.scalar(
            select(ImportedFile).where(
                ImportedFile.athlete_id == athlete.id, ImportedFile.content_hash == decoded.content_hash
            )
        )
        if imported is not None:
            remember_file(session, athlete.id, decoded)
            return existing_report(session, path, imported), False
        if decoded.result is None:
            session.add(
                ImportedFile(
                    athlete_id=athlete.id,
                    content_hash=decoded.content_hash,
                    path=path,
                    size=decoded.stat.size,
                    status="rejected",
                    reason=decoded.error,
                    source=decoded.source or "unknown",
                )
            )
            remember_file(session, athlete.id, decoded)
            return FileReport(path, "rejected", decoded.error), True
        result = decoded.result
        status = "ingested" if result.runs else "skipped"
        reason = None
        if not result.runs:
            reason = "; ".join(s.reason for s in result.skipped) or "no foot sessions in file"
        elif result.skipped:
            reason = "also skipped: " + "; ".join(s.reason for s in result.skipped)
        imported = ImportedFile(
            athlete_id=athlete.id,
            content_hash=decoded.content_hash,
            path=path,
            size=decoded.stat.size,
            status=status,
            reason=reason,
            source=decoded.source or "unknown",
        )
        session.add(imported)
        session.flush()
        runs = [add_run(session, athlete.id, parsed, imported.id) for parsed in result.runs]
        session.flush()
        for run in runs:
            link_duplicate(session, athlete.id, run)  # the same run from Strava: one primary, one prompt
        owed = False
        if runs and not defer_load:
            runs_changed(session, settings, athlete, runs, now)
        elif runs:
            # The batch's replan recomputes from the earliest of them; under the athlete's lock, like the replan.
            owed = mark_deferred(session, athlete, runs)
        remember_file(session, athlete.id, decoded)
        return FileReport(path, status, reason, [run_json(r) for r in runs], replan_owed=owed), False


def complete_pending_loads(db: Database, settings: Settings, athlete_name: str, now: datetime) -> int:
    """Compute load, flags and (fresh) prompts for the athlete's runs stored without them, oldest first.

    Bulk imports store runs first and finish them here in one pass, so each run's figures are the same as if
    the runs had arrived one by one in time order; an import interrupted before this pass is finished by the
    next one.
    """
    with db.transaction() as session:
        athlete_id = ensure_athlete(session, athlete_name, settings).id
    # One recompute from the earliest stored run, in short transactions (recommender.planner.replan).
    return complete_pending(db, settings, athlete_id, now)
