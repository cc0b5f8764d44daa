"""A decoding child takes several files in turn, each under its own limits, and a hostile file still costs one
child and only its own file: the next file decodes in a fresh child, and no other file is lost when a child
is killed in the middle of a batch."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fitgen import write_activity
from harness import wait_for
from test_hostile_files import tiny_record_fit

from ingest import sandbox
from ingest.decode import Decoded, decode_path
from ingest.fit_integrity import MAX_FIT_MESSAGES
from ingest.sandbox import Limits, decode_sandboxed
from stridecare.domain.load import DEFAULT_CONSTANTS

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
MAX_BYTES = 1 << 26


def _children(pid: int) -> set[int]:
    """Living (not zombie) processes whose parent is ``pid``."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(entry.name))
    return out


def _runs(folder: Path, count: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"run{i}.fit"
        write_activity(path, start=START + timedelta(days=i), duration_s=600 + 60 * i)
        paths.append(path)
    return paths


def _server_without_children(limits: Limits, tmp_path: Path) -> int:
    """The decode server's pid once it runs and any child an earlier test left idle has gone."""
    warm = _runs(tmp_path / "warm", 1)[0]
    assert decode_sandboxed(warm, None, MAX_BYTES, limits, DEFAULT_CONSTANTS).result is not None
    proc = sandbox._server._proc
    assert proc is not None
    wait_for(lambda: not _children(proc.pid), timeout=sandbox._CHILD_IDLE_S + 10, what="idle children to go")
    return proc.pid


def _same_outcome(a: Decoded, b: Decoded) -> bool:
    return (a.content_hash, a.source, a.error, a.result) == (b.content_hash, b.source, b.error, b.result)


def test_one_child_decodes_files_in_turn_each_with_its_own_cpu_allowance(tmp_path: Path) -> None:
    # Every file costs about a third of a CPU second; the child's allowance is 1 s per file, not per child.
    limits = Limits(1 << 30, 1, 60.0)
    server = _server_without_children(limits, tmp_path)
    files = [tiny_record_fit(tmp_path / f"busy{i}.fit", 15_000 + i) for i in range(6)]
    files += _runs(tmp_path / "runs", 3)
    # The references are decoded first: decoding one between two requests could, on a busy machine, keep the
    # child waiting past _CHILD_IDLE_S, and the server rightly lets an idle child go.
    expected = [decode_path(path, None, MAX_BYTES, DEFAULT_CONSTANTS) for path in files]
    seen: set[int] = set()
    for path, reference in zip(files, expected, strict=True):
        decoded = decode_sandboxed(path, None, MAX_BYTES, limits, DEFAULT_CONSTANTS)
        assert decoded.error is None, decoded.error
        assert _same_outcome(decoded, reference)
        seen |= _children(server)
    assert len(seen) == 1  # one child, waiting idle between the files


def _cpu_s(pid: int) -> float:
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_the_next_request_goes_to_the_same_child_when_the_server_is_slow_to_hear_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child writes its answer straight to the caller, then tells the server it is done. A caller that
    went on as soon as it had the answer could send its next file before the server had heard that: the server
    then saw a busy child and forked a fresh one (a busy machine did this now and then). Here the server is
    stopped while the child decodes and resumed two seconds later: the next file still goes to the same child."""
    monkeypatch.setattr(sandbox, "_REPORT_WAIT_S", 30.0)  # however late the server resumes here
    limits = Limits(1 << 30, 30, 60.0)
    server = _server_without_children(limits, tmp_path)
    first, after = _runs(tmp_path / "runs", 2)
    assert decode_sandboxed(first, None, MAX_BYTES, limits, DEFAULT_CONSTANTS).result is not None
    (child,) = _children(server)
    busy = tiny_record_fit(tmp_path / "busy.fit", 30_000)  # well over half a CPU second
    outcome: list[Decoded] = []
    caller = threading.Thread(
        target=lambda: outcome.append(decode_sandboxed(busy, None, MAX_BYTES, limits, DEFAULT_CONSTANTS))
    )
    start = _cpu_s(child)
    caller.start()
    wait_for(lambda: _cpu_s(child) > start + 0.05, timeout=30, interval=0.01, what="the child decoding")
    os.kill(server, signal.SIGSTOP)
    resume = threading.Timer(2.0, os.kill, (server, signal.SIGCONT))
    resume.start()
    try:
        caller.join(timeout=60)
        assert outcome and outcome[0].error is None, outcome
        assert decode_sandboxed(after, None, MAX_BYTES, limits, DEFAULT_CONSTANTS).result is not None
    finally:
        resume.join()
        os.kill(server, signal.SIGCONT)
    assert _children(server) == {child}


def test_a_child_killed_at_its_limit_is_a_timeout_even_when_its_end_reaches_a_slow_caller_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends a file at its wall-clock limit; the caller's own deadline comes a little later. A caller
    scheduled late (a busy machine) saw the killed child's end of file before its deadline, took the SIGKILL for
    the kernel's out-of-memory killer and rejected the file for good, where a timeout is read again later. The
    caller here waits three seconds past its deadline, as a descheduled thread would."""
    real = sandbox._read_until

    def slow_caller(fd: int, deadline: float, stop_at_newline: bool) -> tuple[bytes, bool]:
        return real(fd, deadline + (0.0 if stop_at_newline else 3.0), stop_at_newline)

    monkeypatch.setattr(sandbox, "_read_until", slow_caller)
    limits = Limits(1 << 30, 60, 1.0)
    _server_without_children(limits, tmp_path)
    hostile = tiny_record_fit(tmp_path / "slow.fit", 300_000)
    decoded = decode_sandboxed(hostile, None, MAX_BYTES, limits, DEFAULT_CONSTANTS)
    assert decoded.result is None and (decoded.error or "").startswith("timed out"), decoded.error
    assert decoded.retryable


def test_a_hostile_file_in_a_used_child_costs_that_child_and_only_its_own_file(tmp_path: Path) -> None:
    limits = Limits(1 << 30, 1, 60.0)
    server = _server_without_children(limits, tmp_path)
    first, after = _runs(tmp_path / "runs", 2)
    assert decode_sandboxed(first, None, MAX_BYTES, limits, DEFAULT_CONSTANTS).result is not None
    used = _children(server)
    assert len(used) == 1
    # About 10 s of CPU here: far past the file's allowance of 1 s, rounded up to 2 s in a used child, on any machine.
    hostile = tiny_record_fit(tmp_path / "slow.fit", MAX_FIT_MESSAGES - 10)
    decoded = decode_sandboxed(hostile, None, MAX_BYTES, limits, DEFAULT_CONSTANTS)
    assert decoded.result is None and "CPU" in (decoded.error or "")
    assert not (used & _children(server))  # that child is gone
    fine = decode_sandboxed(after, None, MAX_BYTES, limits, DEFAULT_CONSTANTS)
    assert _same_outcome(fine, decode_path(after, None, MAX_BYTES, DEFAULT_CONSTANTS))


def test_a_used_child_past_its_wall_clock_limit_is_ended_by_the_server_and_the_next_file_decodes(
    tmp_path: Path,
) -> None:
    limits = Limits(1 << 30, 60, 1.0)
    server = _server_without_children(limits, tmp_path)
    first, after = _runs(tmp_path / "runs", 2)
    assert decode_sandboxed(first, None, MAX_BYTES, limits, DEFAULT_CONSTANTS).result is not None
    used = _children(server)
    hostile = tiny_record_fit(tmp_path / "slow.fit", 300_000)
    began = time.monotonic()
    decoded = decode_sandboxed(hostile, None, MAX_BYTES, limits, DEFAULT_CONSTANTS)
    took = time.monotonic() - began
    assert decoded.result is None and (decoded.error or "").startswith("timed out") and decoded.retryable
    assert took < limits.wall_s + sandbox._KILL_GRACE_S  # the server killed it; the caller did not have to
    assert not (used & _children(server))
    fine = decode_sandboxed(after, None, MAX_BYTES, limits, DEFAULT_CONSTANTS)
    assert _same_outcome(fine, decode_path(after, None, MAX_BYTES, DEFAULT_CONSTANTS))


def test_a_used_child_out_of_memory_rejects_that_file_only(tmp_path: Path) -> None:
    probe = Limits(1 << 30, 60, 60.0)
    server = _server_without_children(probe, tmp_path)
    size = 0
    for line in Path(f"/proc/{server}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            size = int(line.split()[1]) * 1024
    limits = Limits(size + 40 * 1024 * 1024, 60, 120.0)
    runs = _runs(tmp_path / "runs", 3)
    for path in runs[:2]:  # the child holds what two files left behind; the next file has its full room
        assert decode_sandboxed(path, None, MAX_BYTES, limits, DEFAULT_CONSTANTS).result is not None
    heavy = tiny_record_fit(tmp_path / "heavy.fit", MAX_FIT_MESSAGES - 10)
    decoded = decode_sandboxed(heavy, None, MAX_BYTES, limits, DEFAULT_CONSTANTS)
    assert decoded.result is None and ("memory" in (decoded.error or "") or "damaged" in (decoded.error or ""))
    fine = decode_sandboxed(runs[2], None, MAX_BYTES, limits, DEFAULT_CONSTANTS)
    assert _same_outcome(fine, decode_path(runs[2], None, MAX_BYTES, DEFAULT_CONSTANTS))


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_a_child_killed_in_the_middle_of_a_batch_loses_no_other_file(tmp_path: Path, sig: signal.Signals) -> None:
    limits = Limits(1 << 30, 60, 120.0)
    server = _server_without_children(limits, tmp_path)
    runs = _runs(tmp_path / "runs", 12)
    victim = tiny_record_fit(tmp_path / "victim.fit", 300_000)  # seconds of work: time to find and kill it
    work = [*runs[:6], victim, *runs[6:]]
    out: dict[Path, Decoded] = {}

    def decode_some(paths: list[Path]) -> None:
        for path in paths:
            out[path] = decode_sandboxed(path, None, MAX_BYTES, limits, DEFAULT_CONSTANTS)

    threads = [threading.Thread(target=decode_some, args=(work[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    # The victim's child (which decoded two files before it) is the one still busy once the other threads are
    # done: its thread has the victim and two files after it left.
    ahead = [p for p in work if p not in work[6::3]]
    wait_for(lambda: victim in out or all(p in out for p in ahead), timeout=60, what="the quick files")
    busy = _children(server)
    assert victim not in out and busy
    for pid in busy:  # the idle children of the other threads are killed too: none of them holds a file
        os.kill(pid, sig)
    for thread in threads:
        thread.join(60)
    assert out[victim].result is None
    for path in runs:
        assert _same_outcome(out[path], decode_path(path, None, MAX_BYTES, DEFAULT_CONSTANTS)), path
    assert decode_sandboxed(runs[0], None, MAX_BYTES, limits, DEFAULT_CONSTANTS).result is not None


def _pipes(pid: int) -> int:
    """How many pipe ends process ``pid`` holds open."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("pipe:")
    return count


def test_a_waiting_child_killed_before_it_takes_its_file_leaves_the_file_to_a_fresh_child(tmp_path: Path) -> None:
    # An idle child is killed from outside (the out-of-memory killer, an operator) just as the server hands it a
    # file: the file was never read, so it must not take the child's death as its verdict.
    limits = Limits(1 << 30, 60, 120.0)
    server = _server_without_children(limits, tmp_path)
    first, second = _runs(tmp_path / "runs", 2)
    assert decode_sandboxed(first, None, MAX_BYTES, limits, DEFAULT_CONSTANTS).result is not None
    (waiting,) = _children(server)
    os.kill(waiting, signal.SIGSTOP)  # it cannot take the file it is about to be handed
    idle_pipes = _pipes(server)
    out: list[Decoded] = []
    caller = threading.Thread(
        target=lambda: out.append(decode_sandboxed(second, None, MAX_BYTES, limits, DEFAULT_CONSTANTS))
    )
    caller.start()
    # The server holds the request's status pipe: it has handed the file to the stopped child, its only child.
    wait_for(lambda: _pipes(server) > idle_pipes, timeout=30, what="the file handed to the waiting child")
    os.kill(waiting, signal.SIGKILL)
    caller.join(60)
    assert out, "no answer"
    assert _same_outcome(out[0], decode_path(second, None, MAX_BYTES, DEFAULT_CONSTANTS)), out[0].error
    assert waiting not in _children(server)


def _cpu_of(pid: int) -> float:
    """CPU seconds of process ``pid`` and of the children it reaped (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def test_a_closed_server_reaps_its_idle_children_so_their_cpu_is_counted(tmp_path: Path) -> None:
    # `bench/bench_import_ratio.py` counts the CPU of the import's descendants as they are reaped: a child left
    # idle when its server ends must be reaped by the server, not by init.
    limits = Limits(1 << 30, 60, 60.0)
    server = _server_without_children(limits, tmp_path)
    busy = tiny_record_fit(tmp_path / "busy.fit", 40_000)  # a few tenths of a CPU second
    assert decode_sandboxed(busy, None, MAX_BYTES, limits, DEFAULT_CONSTANTS).error is None
    (child,) = _children(server)
    child_cpu, server_cpu = _cpu_of(child), _cpu_of(server)
    assert child_cpu > 0.1
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sandbox._server.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    counted = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert counted >= server_cpu + child_cpu - 0.05, (counted, server_cpu, child_cpu)
