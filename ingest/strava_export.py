"""Strava's bulk export (``export_<n>.zip``): every foot activity of an account, imported once.

The archive holds ``activities.csv`` (one row per activity) and ``activities/<id>.fit.gz|.fit|.gpx|.gpx.gz|
.tcx|.tcx.gz`` (the originals as uploaded). The CSV is the index: a row's ``Filename`` names its file; rows
without one are manual entries. Column names are matched case-insensitively; Strava repeats some of them
("Elapsed Time", "Distance": first for display — distance in km or miles — then in seconds and metres), so the
*last* column of a name is read first and a value that does not fit is read in the display unit.

Policies:

* Files are read through the registered sources, in the decode sandbox (``ingest.sandbox``), and stored with
  ``ingest.store.store_decoded``, so the content-hash import log dedupes: importing the archive twice adds
  nothing. Gzipped members are decompressed first and hashed as the plain file, so a FIT file that later
  arrives from the watch's own folder (byte-identical to the one uploaded to Strava) stays one import.
* Extraction is safe: a member is found only by the exact name the CSV gives, names that are absolute, hold
  ``..``, backslashes or a drive are refused, and every file is written under a fixed name inside a private
  temporary directory (the member's name never becomes a path). Sizes are capped: the member at
  ``STRIDECARE_MAX_FILE_MB``, its expansion at 200× and 512 MB (``ingest.compressed``).
* Rows whose "Activity Type" is not a foot sport (Ride, Swim, …) are skipped with a reason without reading
  their file. For a foot row with a file, the file's own sport decides (as it would from a watch folder, so
  both paths store the same run).
* A row without a file (a manual entry) but with a distance and a time becomes a summary-only run through
  the Strava converter: source "strava", ``source_key`` = the Activity ID, which is also what the Strava API
  import uses, so the activity stays single when it later arrives from the API; a file of the same session
  from another source is linked to it by ``ingest.dedupe.link_duplicate``. Without cadence its steps
  are estimated from its average speed (``cadence_source = "estimated"``). A row whose file is missing from
  the archive is stored the same way.
* "Activity Date" is UTC (Strava writes e.g. ``Mar 2, 2026, 6:30:00 AM``; ISO dates are accepted too).
* Bounded: the zip's entry count is read from its end record before ``zipfile`` builds an object per entry
  (:data:`MAX_MEMBERS`); activities.csv is streamed, never held whole, and read through once first, so that a
  CSV over ``STRIDECARE_EXPORT_MAX_ROWS`` rows, with a line over :data:`MAX_LINE_CHARS` or a header over
  :data:`MAX_COLUMNS` columns is refused before anything is stored. Manual entries are stored
  :data:`_BATCH` to a transaction (the time per row is in ``bench/bench_strava_export.py``).
* Encrypted members and compression methods that cannot be read are skipped with that reason, unread.
* Bad rows and bad files get a one-line reason and never stop the rest. Only an archive that cannot be read
  at all (not a zip, no ``activities.csv``, an encrypted one, over a cap) raises ``StravaExportError``.
"""

from __future__ import annotations

import csv
import io
import lzma
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from tempfile import TemporaryDirectory
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.compressed import MAX_DECOMPRESSED_BYTES, MAX_RATIO, copy_capped, gunzip_capped
from ingest.decode import supported_suffixes
from ingest.files import content_hash, kind_of
from ingest.origin import Origin
from ingest.sandbox import Limits, decode_sandboxed
from ingest.store import FileReport, existing_report, store_decoded
from ingest.strava.convert import convert_activity, sport_of
from ingest.strava.sync import store_parsed
from stridecare.db.athletes import ensure_athlete
from stridecare.db.models import ImportedFile, Run
from stridecare.db.run_json import run_json
from stridecare.domain.run import DecodeError, ParsedRun
from stridecare.runtime import Runtime

# activities.csv is a few hundred bytes a row; 64 MB is ~100,000 activities.
MAX_CSV_BYTES = 64 * 1024 * 1024
# A physical CSV line (a row, or part of a multi-line description) longer than this is not an export's.
MAX_LINE_CHARS = 1024 * 1024
MAX_COLUMNS = 1000  # Strava's own header has ~90
# Entries in the zip, counted from its end record before the central directory is read: a zip of a million
# tiny entries costs hundreds of megabytes as ``ZipInfo`` objects alone. A real export holds one file per
# activity plus media.
MAX_MEMBERS = 250_000
MAX_CENTRAL_DIRECTORY_BYTES = 128 * 1024 * 1024
# Summary rows (manual entries) are stored this many to a transaction: one lock, one mark per batch.
_BATCH = 200
_READABLE = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
# What reading one member can raise besides a decoder's reasons: damage, an unknown method, a truncated stream.
_MEMBER_ERRORS = (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError, zlib.error, lzma.LZMAError)
_DATE_FORMATS = ("%b %d, %Y, %I:%M:%S %p", "%b %d, %Y %I:%M:%S %p", "%d %b %Y, %H:%M:%S", "%Y-%m-%d %H:%M:%S")

Report = Callable[[FileReport], None]


class StravaExportError(Exception):
    """The archive as a whole cannot be read (not a zip, no activities.csv). The message is one line."""


@dataclass(frozen=True, slots=True)
class _Row:
    """One activities.csv row, by column name; repeated names keep every value in column order."""

    values: dict[str, list[str]]

    def get(self, *names: str) -> str | None:
        """The last non-empty value of the first name present (the last of a repeated column is the
        machine-readable one)."""
        for name in names:
            for value in reversed(self.values.get(name.lower(), [])):
                if value.strip():
                    return value.strip()
        return None

    def all(self, name: str) -> list[float]:
        """Every parseable number in columns called ``name``, last column first."""
        out: list[float] = []
        for value in reversed(self.values.get(name.lower(), [])):
            number = _number(value)
            if number is not None:
                out.append(number)
        return out


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    cleaned = text.strip().replace(",", "")
    if not cleaned:
        return None
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def parse_activity_date(text: str | None) -> datetime | None:
    """An "Activity Date" cell as an aware UTC datetime, or None when no known format fits."""
    if not text:
        return None
    # Newer exports put a narrow no-break space before AM/PM (CLDR 42); read it as a space.
    value = " ".join(text.replace("\u202f", " ").replace("\xa0", " ").split())
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _strava_sport_type(activity_type: str) -> str:
    """CSV "Activity Type" ("Trail Run", "Virtual Run") → API ``sport_type`` ("TrailRun", "VirtualRun")."""
    return "".join(activity_type.split())


def _seconds(row: _Row, *names: str) -> float | None:
    for name in names:
        values = [v for v in row.all(name) if v > 0]
        if values:
            return values[0]
    return None


def _distance_m(row: _Row, seconds: float | None) -> float | None:
    """Distance in metres. The last "Distance" column is metres in current exports; an older export's only
    column is in km (or miles). A value is taken as metres only when the implied speed is humanly possible,
    else as km (miles cannot be told from km without the athlete's settings: a documented approximation)."""
    values = [v for v in row.all("Distance") if v > 0]
    if not values:
        return None
    if len(values) >= 2:
        return values[0]
    value = values[0]
    if seconds and seconds > 0:
        as_metres = value / seconds
        as_km = value * 1000.0 / seconds
        if 0.2 <= as_metres <= 12.0 and not 0.2 <= as_km <= 12.0:
            return value
        return value * 1000.0
    # Without a time: a value below 1000 is almost surely km (nobody logs a 999 m activity by hand).
    return value * 1000.0 if value < 1000 else value


def _safe_member(name: str) -> str | None:
    """``name`` as a relative POSIX member name, or None when it could escape a directory."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return None
    parts = PurePosixPath(name).parts
    if not parts or any(p in ("..", ".") for p in parts) or ":" in parts[0]:
        return None
    return "/".join(parts)


def _member_kind(info: zipfile.ZipInfo) -> str | None:
    """What a member is if not a regular file (a symbolic link, FIFO or device recorded by a Unix zip tool),
    from the mode in its external attributes; None for a regular file or when no Unix mode is recorded."""
    mode = info.external_attr >> 16
    if info.create_system != 3 or not stat.S_IFMT(mode):  # 3: Unix; other systems record no file type here
        return None
    return kind_of(mode)


def _unreadable(info: zipfile.ZipInfo) -> str | None:
    """Why a member cannot be read without trying (a password, a compression method zipfile lacks), or None."""
    if info.flag_bits & 0x1:
        return f"{info.filename} is encrypted (the archive has a password)"
    if info.compress_type not in _READABLE:
        return f"{info.filename} uses a compression method that cannot be read here (method {info.compress_type})"
    return None


def check_member_count(path: Path) -> None:
    """Refuse a zip whose end record announces more than :data:`MAX_MEMBERS` entries or a central directory
    over :data:`MAX_CENTRAL_DIRECTORY_BYTES`, before ``zipfile`` builds an object per entry. A file without an
    end record passes: ``zipfile`` then says it is not a zip."""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        tail_len = min(size, 22 + 0xFFFF)  # the end record, then a comment of at most 64 KB
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return
        entries, directory = struct.unpack("<HI", tail[at + 10 : at + 16])
        locator = at - 20
        if (
            (entries == 0xFFFF or directory == 0xFFFFFFFF)
            and locator >= 0
            and tail[locator : locator + 4] == b"PK\x06\x07"
        ):
            (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
            fh.seek(offset)
            record = fh.read(56)
            if record[:4] == b"PK\x06\x06" and len(record) == 56:
                entries, directory = struct.unpack("<QQ", record[32:48])
    if entries > MAX_MEMBERS:
        raise StravaExportError(f"the archive holds {entries:,} entries, over the cap of {MAX_MEMBERS:,}")
    if directory > MAX_CENTRAL_DIRECTORY_BYTES:
        raise StravaExportError(f"the archive's directory is {directory / 1e6:.0f} MB, over the cap")


def _find_csv(archive: zipfile.ZipFile) -> tuple[str, zipfile.ZipInfo]:
    """The folder prefix of ``activities.csv`` inside the archive and its member."""
    candidates = [
        info
        for info in archive.infolist()
        if PurePosixPath(info.filename).name.lower() == "activities.csv" and _safe_member(info.filename)
    ]
    if not candidates:
        raise StravaExportError("not a Strava export: no activities.csv in the archive")
    # Shallowest wins: an export re-zipped inside a folder keeps its layout one level down.
    info = min(candidates, key=lambda i: (i.filename.count("/"), i.filename))
    if info.file_size > MAX_CSV_BYTES:
        raise StravaExportError(f"activities.csv is {info.file_size / 1e6:.0f} MB, over the 64 MB cap")
    why = _unreadable(info)
    if why is not None:
        raise StravaExportError(f"cannot read {why}: download the export again from Strava")
    prefix = info.filename[: -len(PurePosixPath(info.filename).name)]
    return prefix, info


class _TooWide(Exception):
    """A CSV line longer than :data:`MAX_LINE_CHARS`."""


def _lines(text: io.TextIOWrapper) -> Iterator[str]:
    """The CSV's physical lines, none longer than :data:`MAX_LINE_CHARS` (csv alone would build a row of any
    width: a line of 64 MB of commas is 64 million cells)."""
    while True:
        line = text.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        if len(line) > MAX_LINE_CHARS:
            raise _TooWide(f"a line of activities.csv is longer than {MAX_LINE_CHARS // 1024} KB")
        yield line


class _Csv:
    """activities.csv read as a stream, never whole: its rows one at a time, each with its spreadsheet number."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self.archive, self.info = archive, info

    def _records(self) -> Iterator[tuple[int, list[str] | csv.Error]]:
        """(line number, cells or the csv error of that record) for every record, the header first."""
        with self.archive.open(self.info) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            reader = csv.reader(_lines(text))
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield reader.line_num, exc
                    continue
                yield reader.line_num, record

    def check(self, max_rows: int) -> int:
        """Read through once (cheap: no row is kept) and refuse what the import would choke on: no header,
        too many columns or rows, a line too long. Returns the number of rows."""
        rows = -1
        try:
            for _line, record in self._records():
                if rows < 0:
                    if isinstance(record, csv.Error) or not record:
                        raise StravaExportError("activities.csv has no header row")
                    if len(record) > MAX_COLUMNS:
                        raise StravaExportError(
                            f"activities.csv has {len(record):,} columns, over the cap of {MAX_COLUMNS:,}"
                        )
                rows += 1
                if rows > max_rows:
                    raise StravaExportError(
                        f"activities.csv has more than {max_rows:,} rows: refused before importing any "
                        "(raise STRIDECARE_EXPORT_MAX_ROWS to import it; it bounds an import's time)"
                    )
        except _TooWide as exc:
            raise StravaExportError(str(exc)) from exc
        if rows < 0:
            raise StravaExportError("activities.csv is empty")
        return rows

    def rows(self) -> Iterator[tuple[int, _Row | str]]:
        """(spreadsheet row number, the row or why it cannot be read), blank rows left out."""
        names: list[str] | None = None
        number = 0
        for _line, record in self._records():
            if names is None:
                names = [] if isinstance(record, csv.Error) else [h.strip().lower() for h in record]
                number = 1
                continue
            number += 1  # row 1 is the header, as a spreadsheet numbers it
            if isinstance(record, csv.Error):
                yield number, f"unreadable CSV row: {' '.join(str(record).split())[:160]}"
                continue
            if not any(cell.strip() for cell in record):
                continue
            values: dict[str, list[str]] = {}
            for name, cell in zip(names, record, strict=False):
                values.setdefault(name, []).append(cell)
            yield number, _Row(values)


@dataclass(frozen=True, slots=True)
class _Summary:
    """A summary-only run (a manual entry, or a row whose file is missing) waiting for its batch."""

    label: str
    parsed: ParsedRun
    activity: dict[str, Any]
    note: str | None


def stored_runs(session: Session, athlete_id: int, keys: list[str]) -> list[Run]:
    """The athlete's stored Strava runs among the Activity IDs ``keys`` (the key the API import uses too)."""
    return list(
        session.scalars(
            select(Run).where(Run.athlete_id == athlete_id, Run.source == "strava", Run.source_key.in_(keys))
        )
    )


class _Importer:
    def __init__(self, rt: Runtime, zip_path: Path, athlete: str, now: datetime, report: Report | None) -> None:
        self.rt = rt
        self.zip_path = zip_path
        self.athlete = athlete
        self.now = now
        self.report = report
        self.summary: dict[str, int] = {}
        self.pending: list[_Summary] = []

    def count(self, report: FileReport) -> None:
        self.summary[report.status] = self.summary.get(report.status, 0) + 1
        if self.report is not None:
            self.report(report)

    def row(self, archive: zipfile.ZipFile, prefix: str, row: _Row, tmp: Path, number: int) -> None:
        activity_id = row.get("Activity ID", "id")
        label = f"{self.zip_path}:activities.csv#{number}" + (f" ({activity_id})" if activity_id else "")
        if not activity_id:
            self.count(FileReport(label, "skipped", "row without an Activity ID"))
            return
        activity_type = row.get("Activity Type", "type") or ""
        sport_type = _strava_sport_type(activity_type)
        if sport_of({"sport_type": sport_type}) is None:
            reason = f"Strava {activity_type or 'activity without a type'} is not a foot sport"
            self.count(FileReport(label, "skipped", reason))
            return
        filename = row.get("Filename", "File Name")
        if filename:
            member = _safe_member(prefix + filename) if _safe_member(filename) else None
            if member is None:
                reason = f"refused: unsafe file name in archive: {filename[:120]}"
                self.count(FileReport(label, "rejected", reason))
                return
            try:
                info = archive.getinfo(member)
            except KeyError:
                self.summary_run(row, activity_id, sport_type, label, missing_file=filename)
                return
            self.count(self.file(archive, info, tmp))
            return
        self.summary_run(row, activity_id, sport_type, label)

    def file(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, tmp: Path) -> FileReport:
        settings = self.rt.settings
        display = Path(f"{self.zip_path}/{info.filename}")
        name = info.filename.lower()
        suffixes = supported_suffixes()
        unreadable = _unreadable(info)
        if unreadable is not None:
            return FileReport(str(display), "skipped", f"{unreadable}: not read")
        if not name.endswith(suffixes):
            reason = f"refused: {info.filename} is not a supported file ({', '.join(suffixes)})"
            return FileReport(str(display), "rejected", reason)
        member_kind = _member_kind(info)
        if member_kind is not None:
            reason = f"refused: {info.filename} is {member_kind}, not a regular file"
            return FileReport(str(display), "rejected", reason)
        if info.file_size > settings.max_file_bytes:
            return FileReport(
                str(display),
                "rejected",
                f"refused: {info.filename} is {info.file_size / 1e6:.1f} MB, over the "
                f"{settings.max_file_bytes / 1e6:.1f} MB cap (STRIDECARE_MAX_FILE_MB)",
            )
        is_gz = name.endswith(".gz")
        plain_suffix = next(s for s in sorted(suffixes, key=len, reverse=True) if name.endswith(s))
        if is_gz:
            plain_suffix = plain_suffix[: -len(".gz")]
        # Fixed names in a private directory: the member's own name never becomes a filesystem path.
        extracted = tmp / ("member.gz" if is_gz else "member" + plain_suffix)
        target = tmp / ("activity" + plain_suffix)
        try:
            try:
                with archive.open(info) as fh:
                    copy_capped(
                        fh,
                        extracted,
                        label=info.filename,
                        compressed_size=info.compress_size,
                        max_bytes=settings.max_file_bytes,
                        max_ratio=MAX_RATIO,
                    )
            except _MEMBER_ERRORS as exc:
                # A damaged member: one line, the rest goes on.
                detail = " ".join(str(exc).split())[:160] or type(exc).__name__
                return FileReport(str(display), "rejected", f"damaged archive member: {detail}")
            if is_gz:
                # Hash the plain file: it is byte-identical to the watch's own file if that arrives later.
                gunzip_capped(extracted, target, max_bytes=MAX_DECOMPRESSED_BYTES, max_ratio=MAX_RATIO)
                extracted.unlink()
            else:
                extracted.rename(target)
        except DecodeError as exc:
            return FileReport(str(display), "rejected", str(exc).splitlines()[0] if str(exc) else "damaged")
        try:
            seen = self._known(target, display)
            if seen is not None:
                return seen
            max_bytes = MAX_DECOMPRESSED_BYTES if is_gz else settings.max_file_bytes
            decoded = replace(
                decode_sandboxed(target, tmp, max_bytes, Limits.from_settings(settings), settings.load.constants),
                path=display,
            )
            return store_decoded(self.rt.db, settings, self.athlete, decoded, self.now, origin=Origin("export"))
        finally:
            target.unlink(missing_ok=True)

    def _known(self, target: Path, display: Path) -> FileReport | None:
        """A duplicate report without decoding when this content was imported before (a re-run archive)."""
        digest = content_hash(target)
        with self.rt.db.transaction() as session:
            athlete = ensure_athlete(session, self.athlete, self.rt.settings)
            imported = session.scalar(
                select(ImportedFile).where(ImportedFile.athlete_id == athlete.id, ImportedFile.content_hash == digest)
            )
            return None if imported is None else existing_report(session, str(display), imported)

    def summary_run(
        self, row: _Row, activity_id: str, sport_type: str, label: str, *, missing_file: str | None = None
    ) -> None:
        elapsed = _seconds(row, "Elapsed Time")
        moving = _seconds(row, "Moving Time") or elapsed
        distance = _distance_m(row, moving)
        start = parse_activity_date(row.get("Activity Date", "date"))
        why = "file missing from the archive" if missing_file else "manual entry"
        if start is None:
            self.count(FileReport(label, "rejected", f"{why}: unreadable Activity Date"))
            return
        if not moving or not distance:
            self.count(FileReport(label, "skipped", f"{why} without distance or time: nothing to count"))
            return
        cadence = _number(row.get("Average Cadence"))
        activity: dict[str, Any] = {
            "id": activity_id,
            "sport_type": sport_type,
            "start_date": start.isoformat(),
            "elapsed_time": elapsed or moving,
            "moving_time": moving,
            "distance": distance,
            "name": (row.get("Activity Name") or "")[:300] or None,
            "total_elevation_gain": _number(row.get("Elevation Gain")),
            "average_cadence": cadence if cadence and cadence > 0 else None,
            "manual": missing_file is None,
        }
        try:
            parsed = convert_activity(activity, self.rt.settings.load.constants)
        except (ValueError, TypeError, KeyError) as exc:
            self.count(FileReport(label, "rejected", f"{why}: {' '.join(str(exc).split())[:160]}"))
            return
        if not isinstance(parsed, ParsedRun):
            self.count(FileReport(label, "skipped", parsed.reason))
            return
        if any(p.parsed.source_key == parsed.source_key for p in self.pending):
            self.count(
                FileReport(label, "duplicate", f"Strava activity {activity_id} is listed twice in activities.csv")
            )
            return
        note = f"{missing_file} is missing from the archive: stored from the CSV summary" if missing_file else None
        self.pending.append(_Summary(label, parsed, activity, note))
        if len(self.pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        """Store the summary runs waiting for their batch and report each."""
        batch, self.pending = self.pending, []
        if batch:
            for report in self.store_runs(batch):
                self.count(report)

    def store_runs(self, batch: list[_Summary]) -> list[FileReport]:
        """Store summary-only Strava runs once, in one transaction, through the Strava API import's own insert
        path (``ingest.strava.sync.store_parsed``: unique ``(athlete, "strava", Activity ID)``, linked to a
        file copy of the same session); a report per run, in order. A row already stored — by an earlier import
        or by the API, whose record is at least as rich — is reported as a duplicate and left as it is."""
        settings = self.rt.settings
        for attempt in range(2):
            try:
                with self.rt.db.transaction() as session:
                    athlete = ensure_athlete(session, self.athlete, settings)
                    reports: dict[int, FileReport] = {}
                    new: list[tuple[int, _Summary]] = []
                    # One query for the batch, before anything is added (a query per row would flush per row).
                    known = {
                        run.source_key: run
                        for run in stored_runs(session, athlete.id, [b.parsed.source_key for b in batch])
                    }
                    for i, item in enumerate(batch):
                        existing = known.get(item.parsed.source_key)
                        if existing is not None:
                            reason = f"Strava activity {item.parsed.source_key} already stored"
                            reports[i] = FileReport(item.label, "duplicate", reason, [run_json(existing)])
                        else:
                            new.append((i, item))
                    records = {
                        item.parsed.source_key: {"activity": item.activity, "streams": None, "from": "export"}
                        for _, item in new
                    }
                    stored = store_parsed(session, athlete, [item.parsed for _, item in new], records=records).runs
                    by_key = {run.source_key: run for run in stored}
                    for i, item in new:
                        run = by_key.get(item.parsed.source_key)
                        reports[i] = (
                            FileReport(item.label, "ingested", item.note, [run_json(run)])
                            if run is not None
                            else FileReport(item.label, "rejected", "not stored: outside physical bounds")
                        )
                    return [reports[i] for i in range(len(batch))]
            except IntegrityError:
                # The Strava API import stored one of them meanwhile; the second pass reports it as a duplicate.
                if attempt:
                    raise
        raise AssertionError("unreachable")


def import_strava_export(
    rt: Runtime, zip_path: Path, athlete: str, now: datetime, *, report: Report | None = None
) -> dict[str, int]:
    """Import a Strava bulk-export archive for ``athlete``; return counts by status.

    Statuses are those of ``ingest.store.FileReport`` (ingested, duplicate, skipped, rejected), one per
    activities.csv row. ``report`` is called with each row's report (the command line prints them). Raises
    ``StravaExportError`` when the archive cannot be read at all.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    try:
        check_member_count(zip_path)
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:160]
        raise StravaExportError(f"cannot read {zip_path.name} as a zip archive: {detail}") from exc
    importer = _Importer(rt, zip_path, athlete, now, report)
    with archive, TemporaryDirectory(prefix="stridecare-strava-") as tmp_name:
        try:
            prefix, info = _find_csv(archive)
            table = _Csv(archive, info)
            table.check(rt.settings.export_max_rows)  # refused whole, before a row is stored
            tmp = Path(tmp_name)
            for number, row in table.rows():
                try:
                    if isinstance(row, str):
                        importer.count(FileReport(f"{zip_path}:activities.csv#{number}", "rejected", row))
                    else:
                        importer.row(archive, prefix, row, tmp, number)
                except (*_MEMBER_ERRORS, csv.Error, DecodeError) as exc:
                    # Disk trouble or an unexpected file problem on one row: report it, go on with the rest.
                    detail = " ".join(str(exc).split())[:160] or type(exc).__name__
                    importer.count(FileReport(f"{zip_path}:activities.csv#{number}", "rejected", detail))
            importer.flush()
        except (*_MEMBER_ERRORS, csv.Error, _TooWide) as exc:
            # activities.csv itself became unreadable part way (it passed the first read: a disk error).
            importer.flush()
            detail = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise StravaExportError(f"cannot read activities.csv: {detail}") from exc
    # The rows were stored with their runs only marked: the caller replans the athlete once.
    return importer.summary


__all__ = ["StravaExportError", "import_strava_export", "parse_activity_date"]
