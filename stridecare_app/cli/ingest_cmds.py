"""Commands that bring runs in: ``ingest``, ``import``, ``watch``, ``retry`` and ``recompute``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import select

from ingest.decode import Decoded, supported_suffixes
from ingest.files import iter_files
from ingest.retry import chosen, read_again
from ingest.sandbox import SandboxUnavailable
from ingest.service import CheckedFile, check, ingest_checked, ingest_path, read_guarded, sandboxed
from ingest.store import FileReport, store_decoded_batch
from recommender.planner import replan
from recommender.silence import outcomes_for_runs
from stridecare.db.athletes import UnknownAthlete, ensure_athlete
from stridecare.db.engine import Database
from stridecare.db.models import ImportedFile, Run, SeenFile
from stridecare.db.run_json import run_json
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.cli.app import app, emit_json, fail, runtime
from workers.announce import prompt_line

err = Console(stderr=True, soft_wrap=True)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="FIT files to read.", show_default=False)],
    athlete: Annotated[str | None, typer.Option(help="Athlete handle (default: STRIDECARE_DEFAULT_ATHLETE).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file on stdout.")] = False,
) -> None:
    """Read files now, in this process, and store their runs.

    Prints one line per file (or one JSON object with --json) and exits 2 when any file was rejected.
    The same content under another name is reported as a duplicate and stored once.
    """
    rt = runtime()
    name = athlete or rt.settings.default_athlete
    rejected = False
    summary: dict[str, int] = {}
    reasons: Reasons = {}
    for path in paths:
        report = planned(rt.db, rt.settings, ingest_path(rt.db, rt.settings, name, path, rt.now()), rt.now())
        rejected |= report.status == "rejected"
        summary[report.status] = summary.get(report.status, 0) + 1
        _count_reason(reasons, report)
        _print_report(report, as_json)
        if not as_json and report.status == "ingested":
            _print_prompts(rt, report)
    if not as_json and len(paths) > 1:
        _print_summary(f"{len(paths)} files", summary, reasons, "no files")
    if rejected:
        raise typer.Exit(2)


def planned(db: Database, settings: Settings, report: FileReport, now: datetime) -> FileReport:
    """The report after the replan it owes (run here, in this process), with its runs' figures as planned."""
    if not report.replan_owed or report.athlete_id is None:
        return report
    replan(db, settings, report.athlete_id, now)
    ids = [int(r["id"]) for r in report.runs]
    with db.read() as session:
        stored = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids)))}
        report.runs = [run_json(stored[i]) if i in stored else r for i, r in zip(ids, report.runs, strict=True)]
    return report


def _print_prompts(rt: Runtime, report: FileReport) -> None:
    """Each new run's prompt, or why it got none (an old run, the day's second run …)."""

    with rt.db.read() as session:
        outcomes = outcomes_for_runs(session, rt.settings, [int(r["id"]) for r in report.runs])
    for outcome in outcomes:
        typer.echo(f"          {prompt_line(outcome).removeprefix(outcome.athlete + ': ')}")


Reasons = dict[str, dict[str, int]]  # status (skipped, rejected) → reason → files


def reason_group(reason: str | None) -> str:
    """The part of a skip or reject reason that files share (details such as offsets dropped), for summaries."""
    text = re.sub(r"/None\)", ")", (reason or "no reason given").strip())
    head, sep, _tail = text.partition(": ")
    return head if sep and len(text) > 60 else text


def _count_reason(reasons: Reasons | None, report: FileReport) -> None:
    if reasons is not None and report.status in ("skipped", "rejected"):
        group = reasons.setdefault(report.status, {})
        key = reason_group(report.reason)
        group[key] = group.get(key, 0) + 1


def _print_summary(source: Path | str, summary: dict[str, int], reasons: Reasons, empty: str) -> None:
    """Per status, how many files for which reason, then (last, for scripts that read the last line)
    ``imported X: 3 duplicate, 10 ingested, 50 skipped``."""
    for status in ("duplicate", "skipped", "rejected", "ignored"):
        by_reason = sorted(reasons.get(status, {}).items(), key=lambda item: (-item[1], item[0]))
        if by_reason:
            err.print(f"  {status}: " + "; ".join(f"{n} {why}" for why, n in by_reason), highlight=False)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.items()))
    err.print(f"imported {source}: {counts or empty}", highlight=False)


def _print_report(report: FileReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_json())
        return
    runs = ", ".join(f"{r['sport']} {r['distance_m'] / 1000:.2f} km {r['steps']} steps" for r in report.runs)
    detail = runs or (report.reason or "")
    typer.echo(f"{report.status:9} {report.path}" + (f"  {detail}" if detail else ""))


@app.command("import")
def import_archive(
    folder: Annotated[Path, typer.Argument(help="A folder of FIT/GPX/TCX files, or a Strava export .zip")],
    athlete: Annotated[str | None, typer.Option(help="Athlete handle (default: STRIDECARE_DEFAULT_ATHLETE).")] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding processes (default: one per core).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file on stdout.")] = False,
) -> None:
    """Import a whole archive in parallel, with a progress bar and a summary.

    Runs older than the freshness window (STRIDECARE_FRESH_WINDOW_HOURS) count for load only: importing
    history sends no post-run prompts. Files read before (same path, size and time) are skipped without
    being read. A damaged file is reported and never stops the rest.
    """
    rt = runtime()
    name = athlete or rt.settings.default_athlete
    if folder.is_file() and folder.name.lower().endswith(".zip"):
        _import_strava_zip(rt, folder, name, as_json=as_json)
        return
    if not folder.is_dir():
        fail(f"{folder} is not a folder")
    reasons: Reasons = {}
    try:
        summary = import_folder(
            rt, folder, name, workers or rt.settings.import_workers, as_json=as_json, reasons=reasons
        )
    except SandboxUnavailable as exc:
        fail(f"{exc}: decoding stopped; the files read so far are stored, and running the import again goes on")
    _print_summary(folder, summary, reasons, "no files")
    if summary.get("rejected"):
        raise typer.Exit(2)


def _import_strava_zip(rt: object, archive: Path, athlete: str, *, as_json: bool) -> None:
    """A Strava bulk-export archive: every row of its activities.csv, reported like a folder's files."""
    # deferred: start-up time of the command line (the archive reader brings the decoders and stravalib)
    from ingest.strava_export import StravaExportError, import_strava_export

    assert isinstance(rt, Runtime)
    reasons: Reasons = {}

    def report_one(report: FileReport) -> None:
        _count_reason(reasons, report)
        _print_report(report, as_json)

    try:
        summary = import_strava_export(rt, archive, athlete, rt.now(), report=report_one)
    except StravaExportError as exc:
        fail(str(exc))
    with rt.db.transaction() as session:
        athlete_id = ensure_athlete(session, athlete, rt.settings).id
    # The rows were stored with their runs only marked: load, flags and prompts once, oldest run first.
    replan(rt.db, rt.settings, athlete_id, rt.now())
    _print_summary(archive, summary, reasons, "no activities")
    if summary.get("rejected"):
        raise typer.Exit(2)


def import_folder(
    rt: object, folder: Path, athlete: str, workers: int, *, as_json: bool = False, reasons: Reasons | None = None
) -> dict[str, int]:
    """Decode every supported file below ``folder`` across ``workers`` processes and store each result; files
    per status are returned, and skipped and rejected files are counted per reason into ``reasons``, and so are
    the duplicates that were recognised without being read again."""

    assert isinstance(rt, Runtime)
    suffixes = supported_suffixes()
    files: list[Path] = []
    for p in iter_files(folder):
        if p.name.lower().endswith(suffixes):
            files.append(p)
        elif reasons is not None:  # a photo or a JSON sidecar in an export: said, not silently passed over
            group = reasons.setdefault("ignored", {})
            key = f"not an activity file ({p.suffix.lower() or 'no suffix'})"
            group[key] = group.get(key, 0) + 1
    with rt.db.transaction() as session:
        owner = ensure_athlete(session, athlete, rt.settings)
        athlete_id = owner.id
        seen = {
            row.path: (row.size, row.mtime_ns)
            for row in session.scalars(select(SeenFile).where(SeenFile.athlete_id == owner.id))
        }
        first_of = set(session.scalars(select(ImportedFile.content_hash).where(ImportedFile.athlete_id == owner.id)))
    summary: dict[str, int] = {}
    todo: list[CheckedFile] = []
    # Content imported before, or met earlier in this archive: reported as a duplicate once the first copy is
    # stored, never decoded again.
    copies: list[CheckedFile] = []
    refused: list[FileReport] = []
    for path in files:
        st = path.stat()
        if seen.get(str(path.resolve())) == (st.st_size, st.st_mtime_ns):
            summary["duplicate"] = summary.get("duplicate", 0) + 1
            _count_unread(reasons, _UNREAD_SEEN)
            continue
        # Checked and hashed once here; the stat and digest travel with the file to the store. Hashing is a
        # thousand times faster than parsing: an archive holding copies decodes each content once.
        checked = check(rt.settings, path, None)
        if isinstance(checked, FileReport):
            refused.append(checked)
        elif checked.digest in first_of:
            copies.append(checked)
        else:
            first_of.add(checked.digest)
            todo.append(checked)
    now = rt.now()
    decode = sandboxed(rt.settings)

    def record(report: FileReport) -> None:
        summary[report.status] = summary.get(report.status, 0) + 1
        _count_reason(reasons, report)
        if as_json:
            emit_json(report.as_json())
        elif report.status == "rejected":
            err.print(f"[red]rejected[/red] {report.path}: {report.reason}", highlight=False)

    for report in refused:
        record(report)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False, disable=not todo) as progress:
        task = progress.add_task(f"importing {len(todo) + len(copies)} files", total=len(todo) + len(copies))

        def read(checked: CheckedFile) -> Decoded:
            # The same decode-attempt guard as the worker: a file that killed its reader twice is not read again.
            return read_guarded(rt.db, rt.settings, checked, now, decode)

        # Stored a batch at a time: one transaction, athlete lock and replan mark per batch instead of per file.
        batch: list[Decoded] = []

        def store_batch() -> None:
            if batch:
                for report in store_decoded_batch(rt.db, rt.settings, athlete, batch, now):
                    record(report)
                    progress.advance(task)
                batch.clear()

        for decoded in _decode_all(todo, workers, read):
            batch.append(decoded)
            if len(batch) >= _STORE_BATCH:
                store_batch()
        store_batch()
        for checked in copies:
            report = ingest_checked(rt.db, rt.settings, athlete, checked, now, decode=decode)
            if report.status == "duplicate":
                _count_unread(reasons, _UNREAD_COPY)
            record(report)
            progress.advance(task)
    # Load, flags and prompts in one pass, oldest run first, whatever order the files finished decoding in.
    replan(rt.db, rt.settings, athlete_id, rt.now())
    return summary


# Decoded files stored per transaction by `import` (a crash loses at most this many decodes, read again by the
# next import; the files of a batch are still each stored entirely or not at all).
_STORE_BATCH = 16

# Why a duplicate was not read: said in the import summary, so that a re-import of a large archive shows its
# files were recognised rather than parsed again.
_UNREAD_SEEN = "not read again (same path, size and time as before)"
_UNREAD_COPY = "not read again (same content as a stored file)"


def _count_unread(reasons: Reasons | None, why: str) -> None:
    if reasons is not None:
        group = reasons.setdefault("duplicate", {})
        group[why] = group.get(why, 0) + 1


def _decode_all(todo: list[CheckedFile], workers: int, decode: Callable[[CheckedFile], Decoded]) -> Iterator[Decoded]:
    """Decoded files in completion order, ``workers`` at a time, each in its own sandboxed child process (the
    threads here only wait for them: a file that crashes or exhausts its child is one rejected file, never the
    import); bounded so memory stays flat."""
    if workers <= 1 or len(todo) <= 1:
        for path in todo:
            yield decode(path)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stridecare-decode") as pool:
        queue = iter(todo)
        running: set[Future[Decoded]] = set()
        for checked in queue:
            running.add(pool.submit(decode, checked))
            if len(running) >= workers * 4:
                break
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(queue, None)
                if nxt is not None:
                    running.add(pool.submit(decode, nxt))


@app.command()
def retry(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files to read again (quarantined ones too). Default: all.")
    ] = None,
    athlete: Annotated[str | None, typer.Option(help="Only this athlete's files (default: every athlete's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file on stdout.")] = False,
) -> None:
    """Read again files that were rejected, quarantined or left to a later try.

    A file whose reading timed out or whose reader died is read again by itself, later and with more time;
    this reads it now. After an upgrade whose reader may manage files it once refused, run it without
    arguments: every rejected and quarantined file goes back where it came from (when that place is free) and
    is read again. Exits 2 when a file is still rejected.
    """
    rt = runtime()
    items = chosen(rt.db, rt.settings, athlete, paths or [])
    if not items:
        typer.echo("nothing to read again: no rejected, quarantined or waiting files")
        return
    summary: dict[str, int] = {}
    reasons: Reasons = {}
    for item in items:
        report = planned(rt.db, rt.settings, read_again(rt.db, rt.settings, item, rt.now()), rt.now())
        summary[report.status] = summary.get(report.status, 0) + 1
        _count_reason(reasons, report)
        _print_report(report, as_json)
    if not as_json:
        _print_summary(f"{len(items)} files read again", summary, reasons, "no files")
    if summary.get("rejected"):
        raise typer.Exit(2)


@app.command()
def recompute(
    athlete: Annotated[str | None, typer.Option(help="Athlete handle (default: STRIDECARE_DEFAULT_ATHLETE).")] = None,
) -> None:
    """Rebuild an athlete's runs from their sources after an upgrade or a change of a model setting.

    Every imported file is read again from the original kept in the data home, and every Strava activity
    converted again from what Strava said of it when it was fetched: nothing is downloaded. Loads, flags and
    the daily series are then recomputed; no prompt is sent again. The result is the same as importing
    everything afresh with the settings in force now.
    """
    # deferred: start-up time of the command line (rebuilding Strava runs brings stravalib)
    from ingest.recompute import recompute_athlete

    rt = runtime()
    name = athlete or rt.settings.default_athlete
    try:
        with Progress(TextColumn("{task.description}"), console=err, transient=True) as progress:
            task = progress.add_task("reading sources")
            done = recompute_athlete(
                rt.db,
                rt.settings,
                name,
                on_source=lambda label: progress.update(task, description=f"read {Path(label).name}"),
            )
    except UnknownAthlete as exc:
        fail(str(exc))
    for why in done.missing or ():
        err.print(f"[yellow]not read again[/yellow] {why}", highlight=False)
    if done.replan_athlete is not None:
        replan(rt.db, rt.settings, done.replan_athlete, rt.now())
    typer.echo(f"recomputed {name}: {done.sources} sources read, {done.changed} runs changed, figures recomputed")
    if done.missing:
        raise typer.Exit(2)


@app.command()
def watch(
    folders: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders to watch, as PATH or ATHLETE=PATH (default: STRIDECARE_INBOXES).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Watch folders and ingest every complete FIT file that lands in them.

    With a broker configured (STRIDECARE_BROKER_URL) files are handed to the Celery workers; otherwise they
    are ingested in this process. A FIT file is read as soon as its own sizes and checksums show it is whole;
    any other file once it has not changed for STRIDECARE_SETTLE_SECONDS (a copy in progress is never read
    half). Damaged files move to the quarantine folder with a reason file.
    """
    # deferred: start-up time of the command line (Celery, watchdog)
    from ingest.watch import make_inbox
    from stridecare_app.runner import run_watcher

    rt = runtime()
    if folders:
        rt.settings = rt.settings.model_copy(update={"inboxes": [str(f) for f in folders]})
    for athlete, root in rt.settings.inbox_map():
        make_inbox(root)
        err.print(f"watching {root} for {athlete}")
    run_watcher(rt, use_broker=not rt.settings.embedded)
