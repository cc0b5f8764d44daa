"""Hostile and careless files: each ends in a clear outcome (rejected with a reason, or ingested), nothing is
lost, and the rest of the import goes on.

The generators below write the files themselves (deep XML, entity amplification within expat's ratio limit,
FIT files of minimal records, FIFOs, slow writers); ``bench/bench_hostile.py`` uses them at the size cap.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import threading
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result
from conftest import make_settings
from factories import ingest_planned
from fitgen import write_activity
from harness import processes, settings_env, stridecare, wait_for
from sqlalchemy import func, select
from typer.testing import CliRunner

from ingest import sandbox
from ingest.decode import Decoded
from ingest.fit_integrity import MAX_FIT_MESSAGES, fit_crc
from ingest.sandbox import Limits, decode_sandboxed
from ingest.service import INTERRUPTED
from ingest.store import FileReport
from ingest.watch import Candidate, FolderScanner, FolderWatcher
from stridecare.db.models import DecodeAttempt, ImportedFile, Run
from stridecare.domain.load import DEFAULT_CONSTANTS
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
GPX_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="hostile" xmlns="http://www.topografix.com/GPX/1/1">'


# --- generators -------------------------------------------------------------------------------------------------


def deep_gpx(path: Path, depth: int = 200_000) -> Path:
    """A GPX whose track nests ``depth`` elements (200,000 levels: ~1.4 MB, crashed ElementTree's deepcopy)."""
    path.write_text(GPX_HEAD + "<trk>" + "<e>" * depth + "</e>" * depth + "</trk></gpx>")
    return path


def entity_gpx(path: Path, size: int = 1_000_000, ratio: int = 50) -> Path:
    """A GPX of about ``size`` bytes whose one declared entity expands each reference ``ratio`` times: below
    expat's amplification limit (100), so the parser itself lets it through."""
    value = "x" * (4 * ratio)  # "&e;" plus a separator is 4 bytes on disk
    body_refs = max(1, (size - 400) // 4)
    doc = (
        '<?xml version="1.0"?>\n<!DOCTYPE gpx [<!ENTITY e "' + value + '">]>\n'
        '<gpx version="1.1" creator="hostile" xmlns="http://www.topografix.com/GPX/1/1"><metadata><desc>'
        + "&e; " * body_refs
        + "</desc></metadata></gpx>"
    )
    path.write_text(doc)
    return path


def tiny_record_fit(path: Path, records: int) -> Path:
    """A FIT file with a valid header and CRC holding ``records`` data messages of one byte each (a definition
    with no fields, then bare record headers): the most messages per byte the format allows."""
    definition = bytes([0x40, 0, 0, 0xFF, 0x00, 0])  # local 0, little-endian, global 255, no fields
    data = definition + b"\x00" * records
    header = bytearray(struct.pack("<BBHI4s", 14, 0x20, 2132, len(data), b".FIT"))
    header += struct.pack("<H", fit_crc(bytes(header)))
    body = bytes(header) + data
    path.write_bytes(body + struct.pack("<H", fit_crc(body)))
    return path


def slow_copy(source: bytes, target: Path, chunks: int = 3, pause_s: float = 3.0, reopen: bool = False) -> None:
    """Write ``source`` to ``target`` in ``chunks`` with ``pause_s`` between them, holding the file open
    throughout (a slow network copy) or, with ``reopen``, appending with a fresh open per chunk."""
    step = len(source) // chunks + 1
    parts = [source[i * step : (i + 1) * step] for i in range(chunks)]
    if reopen:
        for i, part in enumerate(parts):
            with target.open("ab") as fh:
                fh.write(part)
            if i < chunks - 1:
                time.sleep(pause_s)
        return
    with target.open("wb") as fh:
        for i, part in enumerate(parts):
            fh.write(part)
            fh.flush()
            if i < chunks - 1:
                time.sleep(pause_s)


def good_gpx(path: Path, minutes: int = 20, day: int = 2) -> Path:
    """A plain running track: one point every 10 s at ~3 m/s heading north."""
    points = []
    for i in range(minutes * 6):
        t = START.replace(day=day).timestamp() + 10 * i
        stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        points.append(f'<trkpt lat="{47.0 + i * 0.00027:.6f}" lon="8.5"><ele>400</ele><time>{stamp}</time></trkpt>')
    path.write_text(GPX_HEAD + "<trk><type>running</type><trkseg>" + "".join(points) + "</trkseg></trk></gpx>")
    return path


# --- helpers ----------------------------------------------------------------------------------------------------


def _runs(rt: Runtime) -> int:
    with rt.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Run)) or 0)


def _limits(rt: Runtime) -> Limits:
    return Limits.from_settings(rt.settings)


# --- the decoders refuse what would blow them up -----------------------------------------------------------------


def test_deep_gpx_is_rejected_with_a_reason_and_the_caller_lives_on(rt: Runtime, tmp_path: Path) -> None:
    deep = deep_gpx(tmp_path / "deep.gpx")
    report = ingest_planned(rt.db, rt.settings, "me", deep, rt.now())
    assert report.status == "rejected"
    assert "nested more than 64 levels" in (report.reason or "")
    good = good_gpx(tmp_path / "good.gpx")
    assert ingest_planned(rt.db, rt.settings, "me", good, rt.now()).status == "ingested"


def test_entity_amplification_under_the_ratio_limit_is_refused_before_the_tree(rt: Runtime, tmp_path: Path) -> None:
    bomb = entity_gpx(tmp_path / "bomb.gpx", size=2_000_000, ratio=50)
    started = time.process_time()
    report = ingest_planned(rt.db, rt.settings, "me", bomb, rt.now())
    assert report.status == "rejected" and "declares XML entities" in (report.reason or "")
    assert time.process_time() - started < 5  # refused by the pre-scan, not after building a 400 MB tree


def test_a_fit_of_one_byte_records_is_bounded(rt: Runtime, tmp_path: Path) -> None:
    too_many = tiny_record_fit(tmp_path / "many.fit", MAX_FIT_MESSAGES + 10)
    started = time.monotonic()
    report = ingest_planned(rt.db, rt.settings, "me", too_many, rt.now())
    assert report.status == "rejected" and "too many records" in (report.reason or "")
    assert time.monotonic() - started < 30
    write_activity(tmp_path / "fine.fit", start=START, duration_s=600)
    assert ingest_planned(rt.db, rt.settings, "me", tmp_path / "fine.fit", rt.now()).status == "ingested"


def test_a_decoder_that_runs_out_of_its_memory_limit_is_a_rejection(rt: Runtime, tmp_path: Path) -> None:
    # Under the record bound, but far too many for 40 MB of address space above the server's own.
    fit = tiny_record_fit(tmp_path / "heavy.fit", MAX_FIT_MESSAGES - 10)
    base = _vm_size(sandbox._server)
    decoded = decode_sandboxed(
        fit, None, rt.settings.max_file_bytes, Limits(base + 40 * 1024 * 1024, 60, 120), DEFAULT_CONSTANTS
    )
    assert decoded.result is None and decoded.error
    assert "memory" in decoded.error or "damaged" in decoded.error
    assert decoded.content_hash is not None  # recorded and quarantined like any damaged file


def _vm_size(server: object) -> int:
    proc = getattr(server, "_proc", None)
    if proc is None:  # not started yet: one decode starts it
        write = Path(os.environ.get("TMPDIR", "/tmp")) / f"warm-{os.getpid()}.gpx"
        good_gpx(write, minutes=1)
        decode_sandboxed(write, None, 1 << 20, Limits(1 << 30, 10, 30), DEFAULT_CONSTANTS)
        write.unlink()
        proc = server._proc
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 200 * 1024 * 1024


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_a_decoder_that_crashes_is_a_rejection_with_the_signal_named(rt: Runtime, tmp_path: Path) -> None:
    # A real crash of the decoding child: it is sent SIGSEGV while it works on a slow file.
    slow = tiny_record_fit(tmp_path / "slow.fit", MAX_FIT_MESSAGES - 10)
    _vm_size(sandbox._server)  # the server runs
    server_pid = sandbox._server._proc.pid  # type: ignore[union-attr]
    # A child left idle by an earlier decode is let go after a while: then the only child is the one decoding.
    wait_for(lambda: not _children_of(server_pid), timeout=sandbox._CHILD_IDLE_S + 10, what="idle children to go")
    out: list[Decoded] = []
    worker = threading.Thread(
        target=lambda: out.append(
            decode_sandboxed(slow, None, rt.settings.max_file_bytes, _limits(rt), DEFAULT_CONSTANTS)
        )
    )
    worker.start()
    children = wait_for(lambda: _children_of(server_pid), timeout=20, interval=0.01, what="the decoding child")
    os.kill(children[0], signal.SIGSEGV)
    worker.join(60)
    decoded = out[0]
    assert decoded.result is None
    assert "crashed" in (decoded.error or "") and "SIGSEGV" in (decoded.error or "")
    good = good_gpx(tmp_path / "next.gpx")
    assert decode_sandboxed(good, None, rt.settings.max_file_bytes, _limits(rt), DEFAULT_CONSTANTS).result is not None


def test_cpu_limit_ends_a_decoding_that_takes_too_long(rt: Runtime, tmp_path: Path) -> None:
    slow = tiny_record_fit(tmp_path / "slow.fit", MAX_FIT_MESSAGES - 10)
    decoded = decode_sandboxed(slow, None, rt.settings.max_file_bytes, Limits(1 << 30, 1, 60), DEFAULT_CONSTANTS)
    assert decoded.result is None
    assert "CPU" in (decoded.error or "") or "memory" in (decoded.error or "")


def test_a_file_whose_reader_died_twice_is_not_read_again_now_but_left_for_a_later_retry(
    rt: Runtime, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    victim = good_gpx(inbox / "killer.gpx")
    from ingest.files import content_hash

    digest = content_hash(victim)
    with rt.db.transaction() as s:  # as left by a process that died twice while reading it (pid 1 is not us)
        s.add(DecodeAttempt(content_hash=digest, path=str(victim), owner="elsewhere:1:x", started_at=START, attempts=2))
    report = ingest_planned(rt.db, rt.settings, "me", victim, rt.now(), root=inbox, quarantine_damaged=True)
    assert report.status == "retry" and (report.reason or "").startswith(INTERRUPTED)
    assert victim.exists()  # not moved: reading it again later must find it
    assert not (rt.settings.effective_quarantine_dir / "killer.gpx").exists()
    with rt.db.transaction() as s:
        assert s.get(DecodeAttempt, digest) is None


def test_one_death_is_forgiven_and_a_finished_attempt_leaves_no_trace(rt: Runtime, tmp_path: Path) -> None:
    run = good_gpx(tmp_path / "run.gpx")
    from ingest.files import content_hash

    digest = content_hash(run)
    with rt.db.transaction() as s:
        s.add(DecodeAttempt(content_hash=digest, path=str(run), owner="elsewhere:1:x", started_at=START, attempts=1))
    assert ingest_planned(rt.db, rt.settings, "me", run, rt.now()).status == "ingested"
    with rt.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(DecodeAttempt)) == 0


# --- only regular files are opened ---------------------------------------------------------------------------------


def test_a_fifo_is_refused_everywhere_without_blocking(rt: Runtime, tmp_path: Path, cli_env: Path) -> None:
    folder = cli_env / "archive"
    folder.mkdir()
    os.mkfifo(folder / "pipe.fit")
    write_activity(folder / "run.fit", start=START, duration_s=600)
    runner = CliRunner()
    done: list[Result] = []
    thread = threading.Thread(
        target=lambda: done.append(runner.invoke(app, ["import", str(folder), "--workers", "1", "--json"])),
        daemon=True,
    )
    thread.start()
    thread.join(60)
    assert done, "stridecare import hung on a FIFO"
    result = done[0]
    objs = {Path(o["path"]).name: o for o in map(json.loads, result.stdout.splitlines())}
    assert objs["run.fit"]["status"] == "ingested"
    assert objs["pipe.fit"]["status"] == "rejected" and "FIFO" in objs["pipe.fit"]["reason"]

    ingest = runner.invoke(app, ["ingest", str(folder / "pipe.fit"), "--json"])
    assert ingest.exit_code == 2 and "FIFO" in json.loads(ingest.stdout)["reason"]


def test_the_watcher_refuses_a_fifo_and_goes_on(rt: Runtime, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "stuck.fit")
    scanner = FolderScanner(rt.db, [("me", inbox)], 0.3, hold_still_s=1.0)
    watcher = FolderWatcher(
        scanner,
        lambda c: ingest_planned(rt.db, rt.settings, c.athlete, c.path, rt.now(), root=c.root, quarantine_damaged=True),
        rescan_interval_s=0.3,
        poll_s=0.1,
    )
    watcher.start_thread()
    try:
        wait_for(lambda: inbox / "stuck.fit" in scanner.refused(), timeout=20, what="the FIFO refused")
        write_activity(inbox / "after.fit", start=START, duration_s=600)
        wait_for(lambda: _runs(rt) == 1, timeout=20, what="the file after the FIFO")
    finally:
        watcher.stop()
    assert inbox / "stuck.fit" in scanner.refused()


def test_a_fifo_member_of_an_export_zip_is_refused(rt: Runtime, tmp_path: Path) -> None:
    from ingest.strava_export import import_strava_export

    archive = tmp_path / "export.zip"
    write_activity(tmp_path / "a.fit", start=START, duration_s=600)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(
            "activities.csv",
            "Activity ID,Activity Date,Activity Name,Activity Type,Elapsed Time,Distance,Filename\n"
            '1,"Mar 2, 2026, 6:30:00 AM",A,Run,600,2.0,activities/a.fit\n'
            '2,"Mar 3, 2026, 6:30:00 AM",B,Run,600,2.0,activities/pipe.fit\n',
        )
        zf.write(tmp_path / "a.fit", "activities/a.fit")
        fifo = zipfile.ZipInfo("activities/pipe.fit")
        fifo.create_system = 3
        fifo.external_attr = (0o010644) << 16  # S_IFIFO | 0644, as a Unix zip tool records a FIFO
        zf.writestr(fifo, b"")
    reports: list[FileReport] = []
    summary = import_strava_export(rt, archive, "me", rt.now(), report=reports.append)
    by_name = {Path(r.path).name: r for r in reports}
    assert by_name["a.fit"].status == "ingested"
    assert by_name["pipe.fit"].status == "rejected" and "FIFO" in (by_name["pipe.fit"].reason or "")
    assert summary.get("ingested") == 1


def test_a_deep_gpx_inside_an_export_zip_does_not_stop_the_import(rt: Runtime, tmp_path: Path) -> None:
    from ingest.strava_export import import_strava_export

    archive = tmp_path / "export.zip"
    write_activity(tmp_path / "a.fit", start=START, duration_s=600)
    deep_gpx(tmp_path / "deep.gpx")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "activities.csv",
            "Activity ID,Activity Date,Activity Name,Activity Type,Elapsed Time,Distance,Filename\n"
            '1,"Mar 2, 2026, 6:30:00 AM",A,Run,600,2.0,activities/deep.gpx\n'
            '2,"Mar 3, 2026, 6:30:00 AM",B,Run,600,2.0,activities/a.fit\n',
        )
        zf.write(tmp_path / "deep.gpx", "activities/deep.gpx")
        zf.write(tmp_path / "a.fit", "activities/a.fit")
    reports: list[FileReport] = []
    import_strava_export(rt, archive, "me", rt.now(), report=reports.append)
    statuses = {Path(r.path).name: r.status for r in reports}
    assert statuses == {"deep.gpx": "rejected", "a.fit": "ingested"}


# --- a file is complete when its writer is done ----------------------------------------------------------------------


def _watch(rt: Runtime, inbox: Path, reports: list[FileReport], settle: float) -> FolderWatcher:
    def submit(c: Candidate) -> None:
        reports.append(
            ingest_planned(rt.db, rt.settings, c.athlete, c.path, rt.now(), root=c.root, quarantine_damaged=True)
        )

    scanner = FolderScanner(
        rt.db,
        [("me", inbox)],
        settle,
        hold_still_s=rt.settings.hold_still_seconds,
        quarantine_dir=rt.settings.effective_quarantine_dir,
    )
    watcher = FolderWatcher(scanner, submit, rescan_interval_s=0.5, poll_s=0.1)
    watcher.start_thread()
    return watcher


@pytest.mark.parametrize("reopen", [False, True], ids=["held-open", "reopened-per-chunk"])
def test_a_writer_pausing_longer_than_the_settle_time_loses_nothing(rt: Runtime, tmp_path: Path, reopen: bool) -> None:
    rt.settings = rt.settings.model_copy(update={"settle_seconds": 0.5, "hold_still_seconds": 8.0})
    source = good_gpx(tmp_path / "src.gpx", minutes=40).read_bytes()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    reports: list[FileReport] = []
    watcher = _watch(rt, inbox, reports, settle=0.5)
    try:
        slow_copy(source, inbox / "slow.gpx", chunks=3, pause_s=3.0, reopen=reopen)
        # The report, not the row: the run is committed a moment before its report is handed back.
        wait_for(lambda: "ingested" in [r.status for r in reports], timeout=30, what="the slowly written run")
    finally:
        watcher.stop()
    assert _runs(rt) == 1
    qdir = rt.settings.effective_quarantine_dir
    assert not qdir.exists() or list(qdir.iterdir()) == []
    assert (inbox / "slow.gpx").read_bytes() == source
    statuses = [r.status for r in reports]
    assert statuses.count("ingested") == 1
    assert set(statuses) <= {"pending", "ingested"}


def test_a_quarantined_file_that_changes_afterwards_is_taken_back(rt: Runtime, tmp_path: Path) -> None:
    rt.settings = rt.settings.model_copy(update={"hold_still_seconds": 0.5})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = good_gpx(tmp_path / "src.gpx").read_bytes()
    target = inbox / "late.gpx"
    fh = target.open("wb")
    fh.write(source[: len(source) // 2])
    fh.flush()
    old = time.time() - 60  # it looks long still: a failed read quarantines it at once
    os.utime(target, (old, old))
    report = ingest_planned(rt.db, rt.settings, "me", target, rt.now(), root=inbox, quarantine_damaged=True)
    assert report.status == "rejected"
    qdir = rt.settings.effective_quarantine_dir
    assert (qdir / "late.gpx").exists() and not target.exists()
    time.sleep(0.05)
    fh.write(source[len(source) // 2 :])  # its writer was not done: it goes on writing into the moved file
    fh.close()
    reports: list[FileReport] = []
    watcher = _watch(rt, inbox, reports, settle=0.3)
    try:
        wait_for(lambda: _runs(rt) == 1, timeout=20, what="the run taken back from quarantine")
    finally:
        watcher.stop()
    assert target.read_bytes() == source
    assert not (qdir / "late.gpx").exists() and not (qdir / "late.gpx.reason.txt").exists()


# --- the real process ----------------------------------------------------------------------------------------------


def test_stridecare_run_survives_a_deep_gpx_and_ingests_the_next_file(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(tmp_path, web_port=port, rescan_interval_s=1.0, settle_seconds=0.3, hold_still_seconds=1.0)
    rt = Runtime.open(settings)
    env = settings_env(settings)
    inbox = settings.inbox_map()[0][1]
    inbox.mkdir(parents=True)
    logs = tmp_path / "logs"
    run = stridecare("run", ["run"], env, logs)
    qdir = settings.effective_quarantine_dir
    with processes(run):
        wait_for(lambda: "inbox for me" in run.output(), timeout=60, what="the runner's banner")
        deep_gpx(tmp_path / "deep.gpx")
        os.replace(tmp_path / "deep.gpx", inbox / "deep.gpx")
        wait_for(lambda: (qdir / "deep.gpx.reason.txt").exists(), timeout=90, what="the deep GPX quarantined")
        assert run.popen.poll() is None, "stridecare run died"
        assert "nested" in (qdir / "deep.gpx.reason.txt").read_text()
        write_activity(tmp_path / "good.fit", start=START, duration_s=900)
        os.replace(tmp_path / "good.fit", inbox / "good.fit")
        wait_for(lambda: _runs(rt) == 1, timeout=90, what="the good FIT after the deep GPX")
        assert run.popen.poll() is None
    with rt.db.transaction() as s:
        statuses = sorted(f.status for f in s.scalars(select(ImportedFile)))
    assert statuses == ["ingested", "rejected"]
    rt.close()
