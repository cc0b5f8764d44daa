"""Decoding untrusted files in a child process with a memory, CPU and wall-clock limit.

The parsers are third-party C and Python code fed bytes from anyone: a file that segfaults expat, loops, or
builds a tree of gigabytes must cost one child, never the process that watches folders or serves the web app.

How: each process that decodes starts, on first use, one small *decode server* (``python -m ingest.sandbox``,
a fresh interpreter, so neither the caller's threads nor its database connections ever cross a fork). The
server imports the decoders once, decodes a small built-in activity so that what a first decode sets up is
in place before any fork (``warm_fit``), freezes what it built out of the collector's reach, and then hands
each file to a child forked from it. The child sets ``RLIMIT_AS``, ``RLIMIT_CPU`` and no core dumps on itself,
decodes with ``decode_path`` and writes the pickled ``Decoded`` to a pipe that only the caller reads.

A child takes up to ``_FILES_PER_CHILD`` files in turn (one at a time, each with a pipe of its own), under
limits per file: for each file it raises its soft CPU limit to what it has used so far plus the file's
allowance (rounded up to a whole second), and its address-space limit by what earlier files left mapped, so
that every file has the room and the time it would have in a fresh child. A child takes another file only
after a clean outcome (decoded, or judged damaged by the decoder), while its address space stays within
``_CHILD_SLACK_BYTES`` of the server's, and only files under the limits it was started with (a file read again
with a larger budget gets a fresh child); it is let go after ``_CHILD_IDLE_S`` without work. A file that
kills its child, exhausts a limit, runs out of memory, nests too deep or trips a decoder bug costs that child
and only its own file: the child held no other file, and the next file goes to a fresh child.

The server enforces each file's wall-clock limit: past it, the server kills the child (it alone knows whether
the child is still on that file or already on the next one), and turns any death into an ``exit`` report. The
caller waits at most the wall-clock limit for the answer, then for that report (killing the child itself only
when the server does not report within ``_KILL_GRACE_S``: a server that does not answer hands out no file),
and turns any death (signal, exhausted limit, no answer) into a rejected ``Decoded`` with a one-line reason.

Forking from a warm server costs a few milliseconds per file (see ``bench/bench_hostile.py``) where a fresh
interpreter would cost ~0.7 s of imports; a child that decodes files in turn saves most of the rest (the fork,
the exit, and the pages a fresh child faults in and copies: ~9 ms per file of a real device run).
``multiprocessing``'s own fork server was tried first: it re-runs the caller's main script in every child,
which is unsafe for a script without a main guard.

Protocol, one Unix seqpacket socket (message boundaries kept) from the caller to its server: per file the
caller sends one pickled request with two pipe write ends attached (SCM_RIGHTS): ``result`` (the pickled
``Decoded``) and ``status`` (the server writes ``pid <n>`` when a child has the file and ``exit <code>`` when the
file is done: 0 when the child reported it done, else the child's exit status, negative for a signal, as
``Popen.returncode``). The server hands a file on to a child over the child's own seqpacket socket, with the
``result`` end attached; the child says ``start`` before it reads the file, and ``done 1`` (it takes another
file) or ``done 0`` (it exits) after. A waiting child that dies before ``start`` (killed from outside) never
had the file: the server, which kept it until then, hands it to a fresh child instead of blaming it.

When the server dies (killed by an operator or the out-of-memory killer), every request it had not
acknowledged is sent again to a fresh server, started once per death: ``_Server`` counts its starts
(generations) and a thread that reports a failure names the generation it saw, so a late report never kills a
server another thread has just started. Children the dead server had forked finish and answer on their own
pipes, then exit. Only servers that die before acknowledging anything, three in a row, end the retries (a crash
loop).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import logging
import math
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
from typing import TYPE_CHECKING

from ingest.decode import Decoded, Known, decode_path, known_digest, registered_sources
from ingest.files import RefusedFile, check_file, content_hash
from ingest.fit_integrity import fit_crc
from stridecare.domain.load import DEFAULT_CONSTANTS, LoadConstants
from stridecare.plugins import source_for

if TYPE_CHECKING:
    # Only named in annotations: the decode server, which imports this module, never loads the settings
    # (pydantic-settings: ~40 ms of its start-up).
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


# A child decodes at most this many files in turn before it is replaced by a fresh fork of the server.
_FILES_PER_CHILD = 32
# A child whose address space grew more than this over the server's (what earlier files left mapped) is not
# given another file: each file gets the same room as in a fresh child, and what is left mapped stays small.
_CHILD_SLACK_BYTES = 48 * 1024 * 1024
# The server lets a child that has waited this long for another file go (a service that decodes a file an hour
# keeps no idle child around).
_CHILD_IDLE_S = 3.0
# The server ends a child's file at its wall-clock limit; the caller waits this much longer for the report
# before it kills the child itself (a server that does not report is dead or stuck and hands out no file).
_KILL_GRACE_S = 5.0


def _address_space() -> int:
    """This process's address space in bytes (what ``RLIMIT_AS`` counts)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_file_limits(limits: Limits, base: int) -> None:
    """Limits for the next file of this child: of address space, ``limits.memory_bytes`` plus what the child
    holds mapped beyond the server's ``base`` (so each file gets the room it would have in a fresh child); of
    CPU, ``limits.cpu_s`` more than the child has used so far (rounded up to a whole second, the unit of
    ``RLIMIT_CPU``: between ``cpu_s`` and ``cpu_s + 1`` per file)."""
    held = max(0, _address_space() - base)
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes + held, limits.memory_bytes + _CHILD_SLACK_BYTES))
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    resource.setrlimit(resource.RLIMIT_CPU, (min(math.ceil(_cpu_used()) + limits.cpu_s, hard), hard))


def _decode_request(request: dict[str, object]) -> tuple[Decoded, bool]:
    """Decode one requested file: the outcome, and whether the child may take another file after it (not
    after running out of memory, too deep a structure or a decoder bug: what that left behind is not reused)."""
    path = Path(str(request["path"]))
    root = Path(str(request["root"])) if request["root"] is not None else None
    max_bytes = int(str(request["max_bytes"]))
    constants = request["constants"]
    assert isinstance(constants, LoadConstants)
    known = request.get("known")
    try:
        return decode_path(path, root, max_bytes, constants, known), True  # type: ignore[arg-type]
    except MemoryError:
        return Decoded(path, None, None, None, None, _MEMORY), False
    except RecursionError:
        return Decoded(path, None, None, None, None, "damaged: structure nested too deeply to read"), False
    except Exception as exc:  # a decoder bug on odd input: one line for the user, the details in the log
        log.warning("decoder failed on %s", path, exc_info=True)
        return Decoded(path, None, None, None, None, f"damaged: the decoder failed ({type(exc).__name__})"), False


def _answer(decoded: Decoded, result_fd: int) -> bool:
    """Write the pickled outcome to the caller's pipe and close it; False when it did not fit in memory."""
    fits = True
    try:
        data = pickle.dumps(decoded, protocol=pickle.HIGHEST_PROTOCOL)
    except MemoryError:
        data, fits = pickle.dumps(Decoded(decoded.path, None, None, None, None, _MEMORY)), False
    with os.fdopen(result_fd, "wb") as out:
        out.write(data)
    return fits


def _child_main(request: dict[str, object], result_fd: int, sock: socket.socket) -> None:
    """In the forked child: limits first, before a byte of the file is read; then decode and answer; then, while
    the child is fit for it, the next file the server hands over ``sock``, under its own limits.

    After each file the child tells the server ``done 1`` (it takes another) or ``done 0`` (it exits now). It
    takes another only when the file ended cleanly (decoded or judged damaged), it has decoded fewer than
    ``_FILES_PER_CHILD`` files and its address space is within ``_CHILD_SLACK_BYTES`` of the server's."""
    base = _address_space()  # the server's, as forked
    limits = request["limits"]
    assert isinstance(limits, Limits)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash on a hostile file leaves no core dump behind
    # The hard CPU limit is the backstop over the child's whole life: every file's allowance, plus 2 s. At a
    # file's soft limit the kernel sends SIGXCPU (which kills).
    cpu_hard = _FILES_PER_CHILD * (limits.cpu_s + 1) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, cpu_hard))
    files = 0
    while True:
        _set_file_limits(limits, base)
        decoded, clean = _decode_request(request)
        clean = _answer(decoded, result_fd) and clean
        files += 1
        again = clean and files < _FILES_PER_CHILD and _address_space() - base <= _CHILD_SLACK_BYTES
        try:
            sock.send(b"done 1" if again else b"done 0")
        except OSError:
            return  # the server is gone
        if not again:
            return
        try:  # the server hangs up on a child idle for _CHILD_IDLE_S (it alone decides, so no file is lost)
            message, fds, _flags, _addr = socket.recv_fds(sock, _MAX_REQUEST, 1)
        except OSError:
            return
        if not message or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return  # the server is gone (or said nothing sensible)
        # From our own server over a socketpair; it hands a child only files under the limits it started with.
        request, result_fd = pickle.loads(message), fds[0]  # noqa: S301
        # Taken: from now on, a death of this child is this file's verdict. Before this word the server still
        # holds the file, and hands it to a fresh child if this one dies (killed from outside while idle).
        try:
            sock.send(b"start")
        except OSError:
            return


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


@dataclass(slots=True)
class _Child:
    """The server's view of one decoding child: the socket it takes files over, the limits it was started with
    (it takes only files under the same), the status pipe of the file it decodes now (None: idle), and a file
    handed to it that it has not yet said it took (``offered``: the request and the server's copy of its result
    pipe)."""

    pid: int
    sock: socket.socket | None
    limits: Limits
    status_fd: int | None = None
    deadline: float = 0.0
    killed: bool = False
    idle_since: float = 0.0
    offered: tuple[bytes, int] | None = None


def _report(child: _Child, code: int) -> None:
    """Tell the caller of the child's current file how it ended, once: ``exit <code>``, or ``timeout`` when this
    server killed it at the file's wall-clock limit (a SIGKILL the caller must not take for the kernel's
    out-of-memory killer: a slow file is read again later, not rejected)."""
    if child.status_fd is not None:
        word = "timeout" if child.killed else f"exit {code}"
        with contextlib.suppress(OSError):  # the caller gave up on it already
            os.write(child.status_fd, f"{word}\n".encode())
        os.close(child.status_fd)
        child.status_fd = None


def _hang_up(child: _Child) -> None:
    if child.sock is not None:
        child.sock.close()
        child.sock = None


def _fork_child(
    control: socket.socket, children: dict[int, _Child], request: dict[str, object], result_fd: int, status_fd: int
) -> _Child:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            control.close()
            mine.close()
            for other in children.values():  # nothing of another file's, so its pipes end with its own child
                if other.sock is not None:
                    other.sock.close()
                if other.status_fd is not None:
                    os.close(other.status_fd)
                if other.offered is not None:
                    os.close(other.offered[1])
            os.close(status_fd)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _child_main(request, result_fd, theirs)
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    limits = request["limits"]
    assert isinstance(limits, Limits)
    child = _Child(pid, mine, limits)
    children[pid] = child
    return child


def _hand_over(
    control: socket.socket,
    children: dict[int, _Child],
    message: bytes,
    result_fd: int,
    status_fd: int,
    *,
    fresh: bool = False,
) -> None:
    """Give one file to an idle child started under the same limits (unless ``fresh``), or to a fresh child.

    A fresh child has the file from its first instruction: its pid goes to the caller at once. An idle child has
    it once it says ``start``: until then the server keeps the file (and its copy of the result pipe, so that the
    caller sees no end of it), and a child that dies first, killed from outside while it waited, gives the file to
    a fresh child instead of its death (:func:`_taken`, :func:`_serve`)."""
    request = pickle.loads(message)  # noqa: S301 - from our own parent over a private socketpair
    limits = request["limits"]
    chosen: _Child | None = None
    for child in () if fresh else children.values():
        if child.sock is not None and child.status_fd is None and child.limits == limits:
            try:
                socket.send_fds(child.sock, [message], [result_fd])
            except OSError:
                _hang_up(child)  # it went away while idle: it is reaped like any other
                continue
            chosen = child
            break
    if chosen is None:
        chosen = _fork_child(control, children, request, result_fd, status_fd)
        os.close(result_fd)
        os.write(status_fd, f"pid {chosen.pid}\n".encode())
    else:
        chosen.offered = (message, result_fd)
    chosen.status_fd, chosen.deadline, chosen.killed = status_fd, time.monotonic() + limits.wall_s, False


def _taken(child: _Child) -> None:
    """The child said it took the file it was offered: from now on its death is that file's verdict."""
    if child.offered is not None and child.status_fd is not None:
        os.close(child.offered[1])
        child.offered = None
        with contextlib.suppress(OSError):  # the caller gave up on it already
            os.write(child.status_fd, f"pid {child.pid}\n".encode())


def _hear(child: _Child, wait: bool = True) -> None:
    """Take one word from the child: ``start`` (it took the file it was offered), ``done 1`` or ``done 0`` (its
    file is done; it takes another, or exits), or the end of its socket (it exited or died: its file's status is
    its exit status, once reaped). ``wait=False``: when it has said nothing more, that is the end too."""
    assert child.sock is not None
    try:
        said = child.sock.recv(64) if wait else child.sock.recv(64, socket.MSG_DONTWAIT)
    except OSError:
        said = b""
    if said == b"start":
        _taken(child)
    elif said.startswith(b"done"):
        _report(child, 0)
        child.idle_since = time.monotonic()
        if said != b"done 1":
            _hang_up(child)  # it exits now
    else:
        _hang_up(child)


def _serve(control: socket.socket) -> None:
    """Hand each request to a child until the caller closes the socket; report each file's child pid and how it
    ended (a child's report ``done``: 0; its death: its exit status). A child that outlives its file's wall-clock
    limit is killed here, by the one process that knows which file it is on."""
    # The warm-up builds long-lived objects only: collecting while it runs would walk them for nothing.
    gc.disable()
    _warm()
    # What the warm-up built is never collected: no child's collections touch (and so copy) those pages.
    gc.freeze()
    gc.enable()
    children: dict[int, _Child] = {}  # pid -> child, until reaped
    while True:
        busy = any(c.status_fd is not None or c.sock is None for c in children.values())
        watched = [control, *(c.sock for c in children.values() if c.sock is not None)]
        readable, _, _ = select.select(watched, [], [], 0.05 if busy else 1.0)
        for sock in readable:
            if sock is control:
                try:
                    message, fds, _flags, _addr = socket.recv_fds(control, _MAX_REQUEST, 2)
                except OSError:
                    message, fds = b"", []
                if not message:
                    # The caller is gone: idle children see their socket end and exit (reaped here, so that no
                    # idle child outlives its server and their CPU is the server's); busy ones finish their file
                    # (or hit its limits) and exit on their own.
                    for child in children.values():
                        _hang_up(child)
                    for pid, child in children.items():
                        if child.status_fd is None:
                            with contextlib.suppress(ChildProcessError):
                                os.waitpid(pid, 0)
                    return
                if len(fds) != 2:
                    for fd in fds:
                        os.close(fd)
                    continue
                _hand_over(control, children, message, *fds)
                continue
            _hear(next(c for c in children.values() if c.sock is sock))
        now = time.monotonic()
        for child in children.values():
            if child.status_fd is not None and not child.killed and now > child.deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                child.killed = True
            elif child.status_fd is None and child.sock is not None and now - child.idle_since > _CHILD_IDLE_S:
                _hang_up(child)  # idle too long: it sees the end of its socket and exits
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            gone = children.pop(pid, None)
            if gone is None:
                continue
            while gone.sock is not None:  # what it said before it ended: whether it took its file, or finished it
                _hear(gone, wait=False)
            if gone.offered is not None and gone.status_fd is not None:
                # It died before it took the file it was offered: the file goes to a fresh child, blameless.
                (message, result_fd), status_fd = gone.offered, gone.status_fd
                gone.offered, gone.status_fd = None, None
                _hand_over(control, children, message, result_fd, status_fd, fresh=True)
                continue
            _report(gone, -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


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


# How long a caller with a whole answer waits for the server's report of it (see ``_decode_once``).
_REPORT_WAIT_S = 1.0


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
        killed_at_limit = False
        if result is not None:
            # The server's report follows the child's ``done`` at once. Waiting for it (briefly: a whole answer
            # stands without it) keeps the next request from arriving before the server knows the child is idle,
            # which would fork a fresh child for it.
            _read_until(status_r, time.monotonic() + _REPORT_WAIT_S, stop_at_newline=True)
        else:
            # No answer: only now does the exit status matter (a whole answer stands whatever the server
            # reports). Past the deadline the server kills the child (it alone knows whether the child
            # is still on this file or already on another one) and reports it; only a server that does not
            # report within the grace is bypassed.
            line, _ = _read_until(status_r, time.monotonic() + (10.0 if finished else _KILL_GRACE_S), True)
            if not line and not finished:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                line, _ = _read_until(status_r, time.monotonic() + 10.0, stop_at_newline=True)
            exitcode = int(line.split()[1]) if line.startswith(b"exit ") else None
            # Killed by the server at the file's limit: a timeout, even when its end reached us before our own
            # deadline did (a caller slow to be scheduled).
            killed_at_limit = line.startswith(b"timeout")
    finally:
        os.close(result_r)
        os.close(status_r)
    if result is not None:
        if result.stat is None and not result.refused and result.error:
            return _failed(path, root, max_bytes, result.error, known), generation  # ran out before it could hash
        return result, generation
    timed_out = not finished or killed_at_limit
    reason = _death_reason(exitcode, timed_out, limits)
    log.warning("decoding %s: %s", path.name, reason)
    return replace(_failed(path, root, max_bytes, reason, known), retryable=timed_out), generation


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
