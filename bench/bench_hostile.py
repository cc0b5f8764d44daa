"""Peak memory and CPU of the worst hostile file of each kind at the size cap, under the decode sandbox's limits.

Each case is decoded the way the sandbox does it (a forked child that sets RLIMIT_AS / RLIMIT_CPU on itself and
calls ``decode_path``), and the child's peak RSS and CPU come from ``wait4``. Then the same files go through
``decode_sandboxed`` itself, to show the caller's own peak memory does not move, and a normal FIT file is
timed in-process and sandboxed for the per-file overhead.

    .venv/bin/python bench/bench_hostile.py [--cap-mb 64] [--json]

Target: every file at the cap within 512 MB and 60 s of CPU, the caller unaffected.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fitgen import write_activity  # noqa: E402
from test_hostile_files import deep_gpx, entity_gpx, good_gpx, tiny_record_fit  # noqa: E402

from ingest.decode import decode_path  # noqa: E402
from ingest.fit_integrity import MAX_FIT_MESSAGES  # noqa: E402
from ingest.sandbox import Limits, decode_sandboxed  # noqa: E402
from stridecare.domain.load import DEFAULT_CONSTANTS  # noqa: E402

MB = 1024 * 1024


def _cases(folder: Path, cap: int) -> list[tuple[str, Callable[[], Path]]]:
    # Depth so that the file is just under the cap ("<e>" + "</e>" is 7 bytes a level).
    return [
        ("deep GPX at the cap", lambda: deep_gpx(folder / "deep.gpx", depth=(cap - 400) // 7)),
        ("entity GPX at the cap (ratio 50)", lambda: entity_gpx(folder / "entity.gpx", size=cap - 1000, ratio=50)),
        ("1-byte-record FIT at the cap", lambda: tiny_record_fit(folder / "tiny-cap.fit", cap - 100)),
        (
            "1-byte-record FIT just under the record bound",
            lambda: tiny_record_fit(folder / "tiny-bound.fit", MAX_FIT_MESSAGES - 10),
        ),
        ("normal FIT, 3 h at 1 Hz", lambda: _normal_fit(folder / "normal.fit")),
        ("normal GPX, 3 h at 0.1 Hz", lambda: good_gpx(folder / "normal.gpx", minutes=180)),
    ]


def _normal_fit(path: Path) -> Path:
    write_activity(path, start=datetime(2026, 3, 2, 6, 30, tzinfo=UTC), duration_s=3 * 3600)
    return path


def _limited_child(path: Path, cap: int, limits: Limits) -> dict[str, object]:
    """Decode ``path`` in a forked child under ``limits``; its outcome, peak RSS and CPU."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 2))
        try:
            decoded = decode_path(path, None, cap, DEFAULT_CONSTANTS)
            outcome = decoded.error or f"{len(decoded.result.runs) if decoded.result else 0} run(s)"
        except MemoryError:
            outcome = "MemoryError"
        os.write(w, outcome.encode()[:500])
        os._exit(0)
    os.close(w)
    started = time.monotonic()
    _pid, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - started
    outcome = os.read(r, 1000).decode() or f"died: status {status}"
    os.close(r)
    return {
        "outcome": outcome,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    """Run every case and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap-mb", type=float, default=64.0, help="STRIDECARE_MAX_FILE_MB (default 64)")
    parser.add_argument("--memory-mb", type=int, default=512)
    parser.add_argument("--cpu-s", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cap = int(args.cap_mb * MB)
    limits = Limits(args.memory_mb * MB, args.cpu_s, 120.0)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="stridecare-hostile-") as tmp:
        folder = Path(tmp)
        files: list[tuple[str, Path]] = []
        for name, make in _cases(folder, cap):
            path = make()
            files.append((name, path))
            row: dict[str, object] = {"case": name, "size_mb": round(path.stat().st_size / MB, 1)}
            row.update(_limited_child(path, cap, limits))
            rows.append(row)
        # The caller's view: every file through the real sandbox, the caller's peak RSS before and after.
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for (_name, path), row in zip(files, rows, strict=True):
            started = time.monotonic()
            decoded = decode_sandboxed(path, None, cap, limits, DEFAULT_CONSTANTS)
            row["sandboxed_outcome"] = decoded.error or "ok"
            row["sandboxed_wall_s"] = round(time.monotonic() - started, 2)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        overhead = _overhead(folder, cap, limits)
    summary = {
        "limits": {"memory_mb": args.memory_mb, "cpu_s": args.cpu_s},
        "cases": rows,
        "caller_peak_rss_mb": {"before": round(before / 1024, 1), "after": round(after / 1024, 1)},
        "per_file_ms": overhead,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"limits: {args.memory_mb} MB address space, {args.cpu_s} s CPU per file")
    print(f"{'case':48} {'MB':>6} {'peak RSS':>9} {'CPU s':>6}  outcome")
    for row in rows:
        print(f"{row['case']:48} {row['size_mb']:>6} {row['peak_rss_mb']:>9} {row['cpu_s']:>6}  {row['outcome']}")
    print(f"caller peak RSS: {summary['caller_peak_rss_mb']}")
    print(f"per-file time (ms): {overhead}")


def _overhead(folder: Path, cap: int, limits: Limits, rounds: int = 10) -> dict[str, float]:
    """Median time of one small GPX and one normal FIT decoded in-process and sandboxed."""
    small = good_gpx(folder / "small.gpx", minutes=2)
    fit = folder / "normal.fit"
    out: dict[str, float] = {}
    for label, path in (("small GPX", small), ("3 h FIT", fit)):
        for mode, fn in (("in-process", decode_path), ("sandboxed", None)):
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                if fn is None:
                    decode_sandboxed(path, None, cap, limits, DEFAULT_CONSTANTS)
                else:
                    fn(path, None, cap, DEFAULT_CONSTANTS)
                times.append(time.perf_counter() - started)
            out[f"{label} {mode}"] = round(sorted(times)[len(times) // 2] * 1000, 1)
    return out


if __name__ == "__main__":
    main()
