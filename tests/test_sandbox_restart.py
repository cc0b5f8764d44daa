"""The decode server dies (killed by an operator, the OOM killer, a bug) while files are being decoded in
parallel: it is started again once per death, whichever thread notices first, and every file is still read.

Before the restart was counted per server generation, a thread that noticed a death late killed the server
another thread had just started; under ``stridecare import`` that cascaded into "the decode server does not
answer" and 0 of 103 files stored.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from conftest import make_settings
from harness import settings_env, stridecare, wait_for
from sqlalchemy import func, select

from ingest import sandbox
from ingest.sandbox import Limits, decode_sandboxed
from stridecare.db.models import ImportedFile
from stridecare.domain.load import DEFAULT_CONSTANTS
from stridecare.runtime import Runtime

KILLS = 20
GPX_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1">'
)


def _gpx(path: Path, start: datetime, points: int = 400) -> Path:
    """A running track of ``points`` points 5 s apart at ~3 m/s; distinct ``start`` times make distinct runs."""
    rows = []
    for i in range(points):
        stamp = (start + timedelta(seconds=5 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(f'<trkpt lat="{47.0 + i * 0.000135:.6f}" lon="8.5"><ele>400</ele><time>{stamp}</time></trkpt>')
    path.write_text(GPX_HEAD + "<trk><type>running</type><trkseg>" + "".join(rows) + "</trkseg></trk></gpx>")
    return path


def _files(folder: Path, count: int, first: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    base = datetime(2025, 1, 1, 6, 0, tzinfo=UTC)
    return [_gpx(folder / f"run{first + i:04d}.gpx", base + timedelta(hours=7 * (first + i))) for i in range(count)]


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc, no extra dependency)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _is_server(pid: int) -> bool:
    try:
        return b"ingest.sandbox" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _server_of(pid: int) -> int | None:
    """The decode server started by process ``pid``, if one runs."""
    return next((c for c in _children(pid) if _is_server(c)), None)


def _replaced(parent: int, server: int) -> bool:
    return _server_of(parent) not in (None, server)


def test_the_server_is_started_again_once_per_death_and_no_thread_sees_a_failure(rt: Runtime, tmp_path: Path) -> None:
    """Eight threads decode while the server is killed 20 times: each death costs exactly one new server
    (``generation`` counts them) and every file decodes."""
    files = _files(tmp_path / "files", 24, 0)
    limits = Limits.from_settings(rt.settings)
    decode_sandboxed(files[0], None, rt.settings.max_file_bytes, limits, DEFAULT_CONSTANTS)  # a server runs
    first_generation = sandbox._server.generation
    stop = threading.Event()
    results: list[bool] = []

    def decode_forever(i: int) -> None:
        while not stop.is_set():
            path = files[i % len(files)]
            decoded = decode_sandboxed(path, None, rt.settings.max_file_bytes, limits, DEFAULT_CONSTANTS)
            results.append(decoded.result is not None)
            i += 1

    killed = 0
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(decode_forever, i) for i in range(8)]
        try:
            for kill in range(KILLS):
                server = wait_for(lambda: _server_of(os.getpid()), timeout=30, interval=0.01, what="a decode server")
                assert server is not None
                if kill % 2:  # every other kill while the server's children decode, else while it starts up
                    wait_for(partial(_children, server), timeout=30, interval=0.002, what="a decoding child")
                os.kill(server, signal.SIGKILL)
                killed += 1
                wait_for(partial(_replaced, os.getpid(), server), timeout=30, interval=0.01, what="a new server")
        finally:
            stop.set()
        for future in futures:
            future.result(timeout=60)  # a RuntimeError from any thread fails here
    assert killed == KILLS
    assert results and all(results), f"{results.count(False)} of {len(results)} decodings failed"
    assert sandbox._server.generation - first_generation == KILLS  # one restart per death, never two


def test_stridecare_import_stores_every_file_while_its_decode_server_is_killed_20_times(tmp_path: Path) -> None:
    """The real command with four decoding threads; its server is killed 20 times in all (over as many imports
    of fresh files as that takes): every import ends with rc 0 and every file is stored."""
    settings = make_settings(tmp_path)
    env = settings_env(settings)
    killed, stored_expected, rounds = 0, 0, 0
    while killed < KILLS:
        folder = tmp_path / f"round{rounds}"
        count = 120
        _files(folder, count, stored_expected)
        proc = stridecare(f"import{rounds}", ["import", str(folder), "--workers", "4"], env, tmp_path / "logs")
        try:
            last: int | None = None
            while proc.alive() and killed < KILLS:
                server = _server_of(proc.popen.pid)
                if server is None or server == last:
                    if proc.popen.poll() is None:
                        wait_for(
                            lambda: not proc.alive() or _server_of(proc.popen.pid) not in (None, last),
                            timeout=60,
                            interval=0.01,
                            what="the import's decode server",
                        )
                    continue
                if killed % 2:
                    wait_for(lambda: not proc.alive() or _children(server), timeout=30, interval=0.002)
                try:
                    os.kill(server, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed += 1
                last = server
            proc.popen.wait(timeout=600)
        finally:
            proc.stop()
        output = proc.output()
        assert proc.popen.returncode == 0, output[-3000:]
        assert "does not answer" not in output and "Traceback" not in output, output[-3000:]
        assert f"{count} ingested" in output, output[-3000:]
        stored_expected += count
        rounds += 1
    rt = Runtime.open(settings)
    try:
        with rt.db.read() as session:
            stored = session.scalar(
                select(func.count()).select_from(ImportedFile).where(ImportedFile.status == "ingested")
            )
    finally:
        rt.close()
    assert stored == stored_expected
