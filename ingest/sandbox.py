"""Decoding untrusted files in a child process with a memory, CPU and wall-clock limit.

The parsers are third-party C and Python code fed bytes from anyone: a file that segfaults expat, loops, or
builds a tree of gigabytes must cost one child, never the process that watches folders or serves the web app.

How: each process that decodes starts, on first use, one small *decode server* (``python -m ingest.sandbox``,
a fresh interpreter, so neither the caller's threads nor its database connections ever cross a fork). The
server imports the decoders once, decodes a small built-in activity so that what a first decode sets up is
in place before any fork (``warm_fit``), and then forks one child per file; the child sets ``RLIMIT_AS``, ``RLIMIT_CPU``
and no core dumps on itself, decodes with ``decode_path`` and writes the pickled ``Decoded`` to a pipe that
only the caller reads. The caller waits at most the wall-clock limit, kills the child if it is still there,
and turns any death (signal, exhausted limit, no answer) into a rejected ``Decoded`` with a one-line reason.

Forking from a warm server costs a few milliseconds per file (see ``bench/bench_hostile.py``) where a fresh
interpreter would cost ~0.7 s of imports; and a fresh child per file keeps the CPU limit per file and leaves
nothing one file did (a fragmented heap) to the next. ``multiprocessing``'s own fork server was tried first:
it re-runs the caller's main script in every child, which is unsafe for a script without a main guard.

Protocol, one Unix seqpacket socket (message boundaries kept) from the caller to its server: per file the
caller sends one pickled request with two pipe write ends attached (SCM_RIGHTS): ``result`` (the pickled
``Decoded``) and ``status`` (the server writes ``pid <n>`` when the child starts and ``exit <code>`` when it
has reaped it, negative for a signal, as ``Popen.returncode``).

When the server dies (killed by an operator or the out-of-memory killer), every request it had not
acknowledged is sent again to a fresh server, started once per death: ``_Server`` counts its starts
(generations) and a thread that reports a failure names the generation it saw, so a late report never kills a
server another thread has just started. Children the dead server had forked finish and answer on their own
pipes. Only servers that die before acknowledging anything, three in a row, end the retries (a crash loop).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import pickle
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ingest.decode import Decoded, Known, decode_path, known_digest, registered_sources
from ingest.files import RefusedFile, check_file, content_hash
from ingest.fit_integrity import fit_crc
from stridecare.domain.load import DEFAULT_CONSTANTS, LoadConstants
from stridecare.plugins import source_for
from stridecare.settings import Settings

log = logging.getLogger(__name__)

_MEMORY = "refused: decoding this file needs more memory than allowed (STRIDECARE_DECODE_MEMORY_MB)"
# Loaded lazily by the decoders; imported once in the server instead of once per child.
_WARM_MODULES = ("gpxpy", "gpxpy.gpx", "gpxpy.parser", "fitparse", "tcxreader.tcxreader", "numpy", "ingest.fit_fast")
# Requests are tiny (a path, a few numbers, the model constants); anything larger on the control socket is a
# protocol error.
_MAX_REQUEST = 1 << 16
# A server killed from outside is started again, as often as that happens (each request is retried on a server
# started after the one that failed it); only this many servers in a row that died before acknowledging any
# request mean a crash loop (a server that cannot start), which ends the retries. Not fewer: a server killed
# while its first child runs, before its acknowledgement is read, also counts as one that took nothing, so a
# machine whose servers are killed now and then under load can show three in a row without any crash loop.
_CRASH_LOOP = 6
# And a bound for one request whatever happens, so no caller can wait forever.
_MAX_TRIES = 100


class SandboxUnavailable(RuntimeError):
    """The decode server cannot be kept running (it dies as it starts): no file can be decoded now."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one decoding may use: address space (bytes), CPU seconds, wall-clock seconds."""

    memory_bytes: int
    cpu_s: int
    wall_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits configured by ``STRIDECARE_DECODE_MEMORY_MB``, ``_CPU_SECONDS`` and ``_TIMEOUT_S``."""
        return cls(settings.decode_memory_mb * 1024 * 1024, settings.decode_cpu_seconds, settings.decode_timeout_s)


# --- the server side (runs in ``python -m ingest.sandbox``) ---------------------------------------------------


def _child_main(request: dict[str, object], result_fd: int) -> None:
    """In the forked child: limits first, before a byte of the file is read; then decode and answer."""
    limits = request["limits"]
    assert isinstance(limits, Limits)
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    # At the soft limit the kernel sends SIGXCPU (which kills); the hard limit is the backstop.
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 2))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash on a hostile file leaves no core dump behind
    path = Path(str(request["path"]))
    root = Path(str(request["root"])) if request["root"] is not None else None
    max_bytes = int(str(request["max_bytes"]))
    constants = request["constants"]
    assert isinstance(constants, LoadConstants)
    known = request.get("known")
    try:
        decoded = decode_path(path, root, max_bytes, constants, known)  # type: ignore[arg-type]
    except MemoryError:
        decoded = Decoded(path, None, None, None, None, _MEMORY)
    except RecursionError:
        decoded = Decoded(path, None, None, None, None, "damaged: structure nested too deeply to read")
    except Exception as exc:  # a decoder bug on odd input: one line for the user, the details in the log
        log.warning("decoder failed on %s", path, exc_info=True)
        decoded = Decoded(path, None, None, None, None, f"damaged: the decoder failed ({type(exc).__name__})")
    try:
        data = pickle.dumps(decoded, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        data = pickle.dumps(Decoded(path, None, None, None, None, _MEMORY))
    with os.fdopen(result_fd, "wb") as out:
        out.write(data)


def _warm() -> None:
    """Import and build once, in the server, what every child would otherwise load again per file; then decode
    a small activity a few times, so that what a first decode sets up (the interpreter's specialised bytecode,
    lazily built tables in the decoders) is in the server's memory before any child is forked from it."""
    registered_sources()
    for name in _WARM_MODULES:
        with contextlib.suppress(ImportError):  # a source that is not installed is simply not warmed
            importlib.import_module(name)
    fit_crc(b"\0\0")  # builds the CRC word table (~15 ms)
    try:
        with tempfile.TemporaryDirectory(prefix="stridecare-warm-") as folder:
            path = Path(folder) / "warm.fit"
            path.write_bytes(warm_fit())
            for _ in range(_WARM_DECODES):
                decode_path(path, None, 1 << 20, DEFAULT_CONSTANTS)
    except Exception:  # a warm-up is an optimisation: a server that cannot do it still serves
        log.debug("decode server warm-up failed", exc_info=True)


# Decodes of the warm-up activity: enough for the interpreter to specialise the decoders' bytecode.
_WARM_DECODES = 4
_FIT_START = 1_000_000_000  # seconds since the FIT epoch (2021-09-09)


def warm_fit(records: int = 120) -> bytes:
    """A small, valid FIT activity (file_id, timer events, ``records`` one-second records with every field the
    decoders read, a running session, the activity message): the server's warm-up, built here so that no file
    ships for it."""
    u8, u16, u32, enum = 0x02, 0x84, 0x86, 0x00

    def definition(local: int, number: int, fields: list[tuple[int, int, int]]) -> bytes:
        out = bytes([0x40 | local, 0, 0]) + number.to_bytes(2, "little") + bytes([len(fields)])
        return out + b"".join(bytes(f) for f in fields)

    def u(value: int, size: int) -> bytes:
        return value.to_bytes(size, "little")

    t0, end = _FIT_START, _FIT_START + records
    body = definition(0, 0, [(0, 1, enum), (1, 2, u16), (2, 2, u16), (4, 4, u32)])
    body += b"\x00" + u(4, 1) + u(1, 2) + u(1, 2) + u(t0, 4)  # an activity file from a Garmin device
    body += definition(1, 21, [(253, 4, u32), (0, 1, enum), (1, 1, enum)])
    body += b"\x01" + u(t0, 4) + u(0, 1) + u(0, 1)  # timer start
    body += definition(2, 20, [(253, 4, u32), (5, 4, u32), (6, 2, u16), (4, 1, u8), (2, 2, u16), (3, 1, u8)])
    for i in range(records):
        # 3 m/s, 85 strides/min, 100 m up (scale 5, offset 500), heart rate 140
        body += b"\x02" + u(t0 + i, 4) + u(300 * i, 4) + u(3000, 2) + u(85, 1) + u(3000, 2) + u(140, 1)
    body += b"\x01" + u(end, 4) + u(0, 1) + u(4, 1)  # timer stop_all
    body += definition(3, 18, [(253, 4, u32), (2, 4, u32), (7, 4, u32), (8, 4, u32), (9, 4, u32), (5, 1, enum)])
    body += b"\x03" + u(end, 4) + u(t0, 4) + u(records * 1000, 4) + u(records * 1000, 4) + u(300 * records, 4)
    body += u(1, 1)  # running
    body += definition(4, 34, [(253, 4, u32), (5, 4, u32), (1, 2, u16)])
    body += b"\x04" + u(end, 4) + u(end + 3600, 4) + u(1, 2)
    header = bytes([14, 0x20]) + u(2132, 2) + u(len(body), 4) + b".FIT"
    header += u(fit_crc(header), 2)
    data = header + body
    return data + u(fit_crc(data), 2)


def _serve(control: socket.socket) -> None:
    """Fork a child per request until the caller closes the socket; report each child's pid and exit status."""
    _warm()
    status_fds: dict[int, int] = {}  # child pid -> its status pipe
    while True:
        readable, _, _ = select.select([control], [], [], 0.05 if status_fds else 1.0)
        if readable:
            try:
                message, fds, _flags, _addr = socket.recv_fds(control, _MAX_REQUEST, 2)
            except OSError:
                message, fds = b"", []
            if not message:
                return  # the caller is gone: its children finish (or hit their limits) on their own
            if len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                continue
            result_fd, status_fd = fds
            request = pickle.loads(message)  # noqa: S301 - from our own parent over a private socketpair
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    control.close()
                    for fd in status_fds.values():
                        os.close(fd)
                    os.close(status_fd)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    _child_main(request, result_fd)
                    code = 0
                finally:
                    os._exit(code)
            os.close(result_fd)
            os.write(status_fd, f"pid {pid}\n".encode())
            status_fds[pid] = status_fd
        while status_fds:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid not in status_fds:
                continue
            fd = status_fds.pop(pid)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            with contextlib.suppress(OSError):  # the caller gave up on it already
                os.write(fd, f"exit {code}\n".encode())
            os.close(fd)


# --- the caller side --------------------------------------------------------------------------------------------


class _Server:
    """The caller's handle on its decode server: started on first use, started again once per death.

    Every start is a new *generation*. A request remembers the generation it was sent to; when that server
    dies or stops answering, every thread waiting on it notices, but only the first one's ``reset`` retires it:
    the others name a generation that is gone already and change nothing. Without the count, a thread that
    noticed the old death late would kill the server another thread had just started for its own request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0
        self.generation = 0  # how many servers this process started; read by tests and the log
        self._acknowledged = 0  # the newest generation known to have started a child for a request

    def _start(self) -> socket.socket:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        # The server must import what this process imports, from the same places.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        # Children are single-threaded decoders: no BLAS thread pools reserving address space under RLIMIT_AS.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ingest.sandbox", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        theirs.close()
        self._sock = mine
        self._pid = os.getpid()
        self.generation += 1
        if self.generation > 1:
            log.warning("decode server restarted (start %d)", self.generation)
        return mine

    def _usable(self) -> socket.socket | None:
        """The current server's socket when it is this process's and still running."""
        if self._sock is None or self._pid != os.getpid() or self._proc is None or self._proc.poll() is not None:
            return None
        return self._sock

    def _retire(self) -> None:
        """Stop using the current server: killed if it still runs (it did not answer), reaped, its socket closed."""
        if self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    @property
    def pid(self) -> int | None:
        """The running server's process id, None before the first request or after a death not yet noticed."""
        with self._lock:
            return self._proc.pid if self._usable() is not None and self._proc is not None else None

    def close(self) -> None:
        """Stop the server (it ends when its socket closes); at exit, so that nothing is left behind."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self._proc is not None and self._pid == os.getpid():
                try:
                    self._proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None

    def reset(self, generation: int) -> None:
        """Give up on the server of ``generation`` (it died or did not answer): the next request starts a fresh
        one. Nothing happens when that server was replaced already, by another thread that noticed first."""
        with self._lock:
            if generation == self.generation:
                self._retire()

    def acknowledged(self, generation: int) -> None:
        """The server of ``generation`` started a child for a request: it works."""
        with self._lock:
            self._acknowledged = max(self._acknowledged, generation)

    def crash_loop(self, generation: int) -> bool:
        """Whether ``generation`` and the servers just before it all died without acknowledging anything."""
        with self._lock:
            return generation - self._acknowledged >= _CRASH_LOOP

    def send(self, request: bytes, fds: list[int]) -> int:
        """Hand one request to the server, starting (or restarting) it as needed; returns the generation of
        the server that took it."""
        with self._lock:
            for attempt in range(2):
                sock = self._usable()
                if sock is None:
                    self._retire()
                    sock = self._start()
                try:
                    socket.send_fds(sock, [request], fds)
                    return self.generation
                except OSError:
                    self._retire()  # died under us: once more with a fresh server
                    if attempt:
                        raise
        raise AssertionError("unreachable")


_server = _Server()
atexit.register(_server.close)


def _read_until(fd: int, deadline: float, stop_at_newline: bool) -> tuple[bytes, bool]:
    """Bytes from ``fd`` until end of file (or a newline), and whether that came before ``deadline``."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return b"".join(chunks), False
        chunk = os.read(fd, 1 << 20 if not stop_at_newline else 1)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        if stop_at_newline and chunk == b"\n":
            return b"".join(chunks), True


def _unpickled(data: bytes) -> Decoded | None:
    if not data:
        return None
    try:
        result = pickle.loads(data)  # noqa: S301 - written by our own child
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, ImportError):
        return None  # cut short: the child died while writing
    return result if isinstance(result, Decoded) else None


def _death_reason(exitcode: int | None, timed_out: bool, limits: Limits) -> str:
    if timed_out:
        return f"timed out: decoding this file took longer than {limits.wall_s:g} s (STRIDECARE_DECODE_TIMEOUT_S)"
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        if sig == signal.SIGXCPU:
            return (
                f"refused: decoding this file needs more than {limits.cpu_s} s of CPU (STRIDECARE_DECODE_CPU_SECONDS)"
            )
        if sig == signal.SIGKILL:  # not ours (that is timed_out): the kernel's out-of-memory killer
            return _MEMORY
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"damaged: the decoder crashed on this file ({name})"
    if exitcode is None:
        return "damaged: the decoder stopped without an answer"
    return f"damaged: the decoder stopped unexpectedly (exit status {exitcode})"


def _failed(path: Path, root: Path | None, max_bytes: int, reason: str, known: Known | None = None) -> Decoded:
    """A rejection the caller records itself, with the file's stat and hash, so that it is logged in the import
    log and quarantined like any damaged file."""
    try:
        stat = check_file(path, root=root, max_bytes=max_bytes)
        digest = known_digest(stat, known) or content_hash(path)
    except RefusedFile as exc:
        return Decoded(path, None, None, None, None, str(exc), refused=True)
    except OSError as exc:
        return Decoded(path, None, None, None, None, f"unreadable: {exc.strerror or exc}", refused=True)
    source = source_for(path, registered_sources())
    return Decoded(path, stat, digest, source.name if source else None, None, reason)


def decode_sandboxed(
    path: Path, root: Path | None, max_bytes: int, limits: Limits, constants: LoadConstants, known: Known | None = None
) -> Decoded:
    """``decode_path`` in a child process under ``limits``, with sources built with the model ``constants``
    (pass the settings' own: ``settings.load.constants``); a crash, a hang or an exhausted limit becomes a
    rejected ``Decoded`` with a plain reason. Never raises for anything the file does. ``known``: the caller's
    stat and digest of the file, so that it is not hashed again.

    A server that never acknowledged the request (it died for reasons of its own, or was killed) is not the
    file's fault: the request is made again, each time to a server started after the one that failed it, before
    anything is concluded. ``RuntimeError`` only when servers die as they start (a crash loop)."""
    for _attempt in range(_MAX_TRIES):
        outcome, generation = _decode_once(path, root, max_bytes, limits, constants, known)
        if outcome is not None:
            return outcome
        if _server.crash_loop(generation):
            raise SandboxUnavailable(f"the decode server died {_CRASH_LOOP} times in a row before it took any file")
    raise SandboxUnavailable(f"the decode server died {_MAX_TRIES} times before it took {path.name}")


def _decode_once(
    path: Path, root: Path | None, max_bytes: int, limits: Limits, constants: LoadConstants, known: Known | None
) -> tuple[Decoded | None, int]:
    """One try: the outcome (None when the server did not acknowledge the request) and the server generation
    that was asked."""
    request = pickle.dumps(
        {
            "path": str(path),
            "root": None if root is None else str(root),
            "max_bytes": max_bytes,
            "limits": limits,
            "constants": constants,
            "known": known,
        }
    )
    result_r, result_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        try:
            generation = _server.send(request, [result_w, status_w])
        finally:
            os.close(result_w)  # the child holds the only write end now: its death reads as end of file here
            os.close(status_w)
        deadline = time.monotonic() + limits.wall_s
        line, _ = _read_until(status_r, time.monotonic() + 30.0, stop_at_newline=True)
        if not line.startswith(b"pid "):
            _server.reset(generation)
            return None, generation  # not acknowledged: no child was started for this file
        _server.acknowledged(generation)
        pid = int(line.split()[1])
        data, finished = _read_until(result_r, deadline, stop_at_newline=False)
        result = _unpickled(data) if finished else None
        exitcode: int | None = 0
        if result is None:
            # No answer: only now does the exit status matter (a whole answer is taken without waiting for the
            # server to reap the child).
            if not finished:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # the server reaps it and reports the kill
            line, _ = _read_until(status_r, time.monotonic() + 10.0, stop_at_newline=True)
            exitcode = int(line.split()[1]) if line.startswith(b"exit ") else None
    finally:
        os.close(result_r)
        os.close(status_r)
    if result is not None:
        if result.stat is None and not result.refused and result.error:
            return _failed(path, root, max_bytes, result.error, known), generation  # ran out before it could hash
        return result, generation
    reason = _death_reason(exitcode, not finished, limits)
    log.warning("decoding %s: %s", path.name, reason)
    return replace(_failed(path, root, max_bytes, reason, known), retryable=not finished), generation


def decode_for(
    settings: Settings,
    path: Path,
    root: Path | None,
    max_bytes: int | None = None,
    known: Known | None = None,
    budget: float = 1.0,
) -> Decoded:
    """``decode_sandboxed`` with the limits, size cap and model constants from ``settings``; ``budget`` scales the
    time limits (a file read again after a timeout gets more)."""
    limits = Limits.from_settings(settings)
    if budget != 1.0:
        limits = replace(limits, cpu_s=int(limits.cpu_s * budget), wall_s=limits.wall_s * budget)
    return decode_sandboxed(
        path,
        root,
        settings.max_file_bytes if max_bytes is None else max_bytes,
        limits,
        settings.load.constants,
        known,
    )


if __name__ == "__main__":
    # Through the package module, not this ``__main__`` copy: requests carry ``ingest.sandbox.Limits``.
    from ingest.sandbox import _serve as serve

    logging.basicConfig(level=logging.WARNING)
    serve(socket.socket(fileno=int(sys.argv[1])))
