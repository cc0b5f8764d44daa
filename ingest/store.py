"""Storing decoded files: the import log row, the kept original and the file's runs (through the one writer,
``ingest.runs``), in one transaction (an archive's files several to a transaction, each still entirely or not
at all: ``store_decoded_batch``). Planning follows the commit: a report whose ``replan_owed`` is set is
planned by its caller (``recommender.planner.replan``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.decode import Decoded
from ingest.files import quarantine
from ingest.origin import INBOX, Origin
from ingest.originals import keep
from ingest.runs import Stored, store_parsed
from stridecare.db.athletes import ensure_athlete
from stridecare.db.engine import Database
from stridecare.db.marks import mark_stale
from stridecare.db.models import Athlete, ImportedFile, Run, SeenFile
from stridecare.db.run_json import run_json
from stridecare.domain.load_arrays import SampleColumns
from stridecare.domain.plausibility import first_implausibility
from stridecare.settings import Settings

# The import-log status of a file whose reading did not finish (a timeout, the reader died): read again later.
RETRY = "retry"
RETRY_FIRST = timedelta(minutes=10)
RETRY_LONGEST = timedelta(hours=12)
MAX_ATTEMPTS = 4


@dataclass(slots=True)
class FileReport:
    """The result of one input file, as ``stridecare ingest --json`` prints it."""

    path: str
    status: str  # ingested | duplicate | skipped | rejected | retry | pending
    reason: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    # This store owes the athlete's replan (``stridecare.db.marks.mark_stale``): the caller runs or queues it.
    # Else a replan is queued or running and plans these runs too.
    replan_owed: bool = False
    athlete_id: int | None = None
    # For a duplicate: the path the content was first imported from, and when.
    first_path: str | None = None
    first_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The documented JSON shape."""
        return {"path": self.path, "status": self.status, "reason": self.reason, "runs": self.runs}


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
    session.execute(_remember_statement(session.get_bind().dialect.name), values)


# The upsert of remember_file per dialect, built once (it runs for every file; the values are its parameters).
_REMEMBER: dict[str, Any] = {}


def _remember_statement(dialect: str) -> Any:
    statement = _REMEMBER.get(dialect)
    if statement is None:
        insert = pg_insert(SeenFile) if dialect == "postgresql" else sqlite_insert(SeenFile)
        statement = _REMEMBER[dialect] = insert.on_conflict_do_update(
            index_elements=[SeenFile.athlete_id, SeenFile.path],
            set_={k: insert.excluded[k] for k in ("size", "mtime_ns", "content_hash")},
        )
    return statement


def existing_report(session: Session, path: str, imported: ImportedFile) -> FileReport:
    """The report for content imported before, naming the first copy."""
    runs = session.scalars(select(Run).where(Run.file_id == imported.id).order_by(Run.start_time)).all()
    reason = f"same content as {imported.path} ({imported.status})"
    return FileReport(
        path, "duplicate", reason, [run_json(r) for r in runs], first_path=imported.path, first_at=imported.created_at
    )


def store_decoded(
    db: Database,
    settings: Settings,
    athlete_name: str,
    decoded: Decoded,
    now: datetime,
    *,
    quarantine_dir: Path | None = None,
    origin: Origin = INBOX,
) -> FileReport:
    """Record one decoded file exactly once: a second call with the same content reports a duplicate.

    The import log row, the kept original, the runs and samples, their session identity and the athlete's
    replan mark are written in one transaction, so a crash leaves either all of them or none (and the file is
    then picked up again by the next scan). The report says whether the athlete's replan is owed."""
    prepared = _prepared(settings, decoded)
    if isinstance(prepared, FileReport):
        return prepared
    decoded = prepared.decoded
    report, move = FileReport(str(decoded.path), "duplicate", "stored at the same time by a concurrent import"), False
    for _attempt in range(2):
        try:
            report, move = _store_once(db, settings, athlete_name, prepared, origin, now)
            break
        except IntegrityError:
            # A concurrent import stored the same content (or the same run) first: the second pass reports it
            # as a duplicate; if that too meets a unique violation, the content is stored all the same.
            continue
    if move and quarantine_dir is not None and decoded.path.exists():
        try:
            quarantine(decoded.path, quarantine_dir, report.reason or "damaged", now)
        except OSError as error:
            # A folder that may not be changed (a watch mounted read-only, another user's folder): the file is
            # recorded as rejected all the same and stays where it is; being in the import log, it is not read
            # again however often the folder is scanned.
            why = str(error.strerror or error).lower()
            report.reason = f"{report.reason or 'damaged'}; left in place: it could not be moved out ({why})"
    return report


def store_decoded_batch(
    db: Database,
    settings: Settings,
    athlete_name: str,
    batch: Sequence[Decoded],
    now: datetime,
    *,
    origin: Origin = INBOX,
) -> list[FileReport]:
    """:func:`store_decoded` for several files of one athlete (an archive's), in one transaction: one athlete
    lock, one replan mark, one commit instead of one per file. Each file's rows are still there entirely or not
    at all; a crash loses the batch, whose files the next import reads again. Nothing is quarantined (as
    ``store_decoded`` without ``quarantine_dir``). A unique violation (a concurrent import stored one of the
    files or runs first) rolls the batch back, and each file is then stored on its own by ``store_decoded``."""
    reports: list[FileReport | None] = []
    todo: list[tuple[int, _Prepared]] = []
    for decoded in batch:
        prepared = _prepared(settings, decoded)
        if isinstance(prepared, FileReport):
            reports.append(prepared)
            continue
        todo.append((len(reports), prepared))
        reports.append(None)
    try:
        with db.transaction() as session:
            athlete = ensure_athlete(session, athlete_name, settings, lock=True)
            changed: list[Run] = []
            since: list[datetime] = []
            storing: list[FileReport] = []
            for index, prepared in todo:
                report, _move, stored = _store_in(session, athlete, prepared, origin, now, mark=False)
                reports[index] = report
                if stored is not None and stored.runs:
                    changed.extend(stored.runs)
                    since.extend([stored.since] if stored.since is not None else [])
                    storing.append(report)
            if changed:
                owed = mark_stale(session, athlete, changed, since=min(since) if since else None)
                for report in storing:
                    report.replan_owed = owed
    except IntegrityError:
        return [store_decoded(db, settings, athlete_name, decoded, now, origin=origin) for decoded in batch]
    return [report for report in reports if report is not None]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A file ready for its transaction (:func:`_prepared`)."""

    decoded: Decoded
    original: str | None  # the kept original; None when there is nothing to keep
    # Each run's samples as arrays, in the order of the runs: converted once, for the plausibility checks and
    # then for packing the stored blob.
    columns: list[SampleColumns] | None


def _prepared(settings: Settings, decoded: Decoded) -> FileReport | _Prepared:
    """What is settled before a file's transaction: a refused file's report; else the file, its physically
    impossible content turned into a rejection, and its kept original."""
    digest = decoded.content_hash
    if decoded.refused or digest is None:
        return FileReport(str(decoded.path), "rejected", decoded.error)
    columns: list[SampleColumns] | None = None
    if decoded.result is not None:
        columns = []
        for run in decoded.result.runs:  # each run converted only once the runs before it passed
            columns.append(SampleColumns.of(run.samples))
            if implausible := first_implausibility([run], columns=columns[-1:]):
                # Physically impossible content is rejected like a damaged file: logged, quarantined, never stored.
                decoded, columns = replace(decoded, result=None, error=implausible), None
                break
    original = keep(settings.data_home, decoded.path, digest) if decoded.result else None
    return _Prepared(decoded, original, columns)


def retry_delay(attempts: int) -> timedelta:
    """How long a file whose reading did not finish ``attempts`` times waits before it is read again."""
    delay: timedelta = min(RETRY_FIRST * 2 ** (attempts - 1), RETRY_LONGEST)
    return delay


def _store_once(
    db: Database,
    settings: Settings,
    athlete_name: str,
    prepared: _Prepared,
    origin: Origin,
    now: datetime,
) -> tuple[FileReport, bool]:
    with db.transaction() as session:
        athlete = ensure_athlete(session, athlete_name, settings, lock=True)
        report, move, _stored = _store_in(session, athlete, prepared, origin, now, mark=True)
        return report, move


# An athlete's import-log row of a content, built once (looked up for every file stored).
_IMPORTED = select(ImportedFile).where(
    ImportedFile.athlete_id == bindparam("athlete_id"), ImportedFile.content_hash == bindparam("digest")
)


def _store_in(
    session: Session,
    athlete: Athlete,
    prepared: _Prepared,
    origin: Origin,
    now: datetime,
    *,
    mark: bool,
) -> tuple[FileReport, bool, Stored | None]:
    """One file's rows in the caller's transaction, the athlete's lock held: the report, whether the file is to
    be moved to the quarantine, and what the one writer stored (with ``mark``, the replan mark is written too)."""
    decoded, original = prepared.decoded, prepared.original
    path = str(decoded.path)
    assert decoded.content_hash is not None and decoded.stat is not None
    imported = session.scalar(_IMPORTED, {"athlete_id": athlete.id, "digest": decoded.content_hash})
    if imported is not None and imported.status != RETRY:
        remember_file(session, athlete.id, decoded)
        return existing_report(session, path, imported), False, None
    result = decoded.result
    attempts = imported.attempts if imported is not None else 0
    retry_at = None
    reason: str | None
    if result is None and decoded.retryable and attempts < MAX_ATTEMPTS:
        attempts += 1
        retry_at = now + retry_delay(attempts)
        status = RETRY
        reason = (
            f"{decoded.error}; read again after {retry_at:%Y-%m-%d %H:%M} UTC with {2**attempts}× the time "
            f"(`stridecare retry {path}` reads it now)"
        )
    elif result is None:
        status, reason = "rejected", decoded.error
        if decoded.retryable:
            reason = f"{decoded.error} ({attempts + 1} times; `stridecare retry {path}` reads it again)"
    elif result.runs:
        status = "ingested"
        reason = ("also skipped: " + "; ".join(s.reason for s in result.skipped)) if result.skipped else None
    else:
        status, reason = "skipped", "; ".join(s.reason for s in result.skipped) or "no foot sessions in file"
    if imported is None:
        imported = ImportedFile(athlete_id=athlete.id, content_hash=decoded.content_hash)
        session.add(imported)
    imported.path, imported.size, imported.status, imported.reason = path, decoded.stat.size, status, reason
    imported.source = decoded.source or "unknown"
    imported.origin, imported.origin_account, imported.origin_item = origin.kind, origin.account, origin.item_id
    imported.original, imported.attempts, imported.retry_at = original, attempts, retry_at
    session.flush()
    remember_file(session, athlete.id, decoded)
    if result is None:
        # A file to read again stays where it is; only a damaged one is moved out of the inbox.
        return FileReport(path, status, reason, athlete_id=athlete.id), status == "rejected", None
    stored = store_parsed(
        session,
        athlete,
        result.runs,
        file_id=imported.id,
        checked=True,
        locked=True,
        mark=mark,
        columns=prepared.columns,
    )
    runs = sorted(stored.runs, key=lambda r: (r.start_time, r.id))
    report = FileReport(path, status, reason, [run_json(r) for r in runs], stored.replan_owed, athlete.id)
    return report, False, stored
