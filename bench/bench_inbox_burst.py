"""An inbox burst against an import of the same files: CPU and wall of ``stridecare run`` with N small FIT files
renamed into its inbox newest first, against ``stridecare import --workers 1`` of the same N.

Run from the repository root::

    .venv/bin/python bench/bench_inbox_burst.py [--n 100] [--rounds 3] [--timeout 600]

Both are measured from outside (``wait4``: the command and the decoding children it reaped). The burst counts
as done once every run has its load, the athlete's stale mark is clear (the figures are final) and the queue is
empty (every file's line printed), not merely once the runs are stored. Files, data homes and the child runner
are those of ``bench_growth.py``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
from pathlib import Path
from typing import Any

from bench_growth import bench_import, bench_inbox


def planned(home: Path, n: int) -> bool:
    """Every run stored with its load and no stale mark left (read without the write lock)."""
    db = home / "stridecare.db"
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            loads = int(conn.execute("SELECT count(*) FROM run_loads").fetchone()[0])
            marks = int(conn.execute("SELECT count(*) FROM athletes WHERE replan_from IS NOT NULL").fetchone()[0])
    except sqlite3.Error:
        return False
    return loads >= n and marks == 0


def queue_empty(home: Path) -> bool:
    """No task message left in the embedded broker's queue (the per-file lines come from the last ones)."""
    try:
        with sqlite3.connect(f"file:{home / 'broker.db'}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM kombu_message").fetchone()[0]) == 0
    except sqlite3.Error:
        return False


def burst(n: int, timeout: float) -> dict[str, Any]:
    """N files renamed into a running ``stridecare run --no-web``, newest first, until planned and drained."""
    return bench_inbox(n, timeout, settled=lambda home: planned(home, n) and queue_empty(home))


def imported(n: int, timeout: float) -> dict[str, Any]:
    """``stridecare import --workers 1`` of the same N files."""
    return bench_import(n, timeout, inspect=lambda home: {"planned": planned(home, n)})


def main() -> None:
    """Print each round's rows, then the medians and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--rounds", type=int, default=3, help="import and inbox alternate this many times (CPU time varies here)"
    )
    args = parser.parse_args()
    rows: dict[str, list[dict[str, Any]]] = {"import": [], "inbox": []}
    for _round in range(args.rounds):
        for name, bench in (("import", imported), ("inbox", burst)):
            row = bench(args.n, args.timeout)
            rows[name].append(row)
            cpu, wall = row["cpu_s"], row["wall_s"]
            print(f"{name:7s} N={args.n}: {cpu:7.1f} s CPU {wall:7.1f} s wall  timed out: {row['timed_out']}")
    cpu = {name: statistics.median(r["cpu_s"] for r in runs) for name, runs in rows.items()}
    wall = {name: statistics.median(r["wall_s"] for r in runs) for name, runs in rows.items()}
    print(
        f"medians of {args.rounds}: import {cpu['import']:.1f} s CPU {wall['import']:.1f} s wall, "
        f"inbox {cpu['inbox']:.1f} s CPU {wall['inbox']:.1f} s wall; "
        f"inbox / import: {cpu['inbox'] / cpu['import']:.2f}x CPU, {wall['inbox'] / wall['import']:.2f}x wall"
    )


if __name__ == "__main__":
    main()
