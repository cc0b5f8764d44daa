"""Time and peak memory of ``stridecare import export.zip`` for a Strava export with a large activities.csv.

A zip of well under a megabyte can hold a 100,000-row CSV. The bench writes one (manual entries, every row a
foot activity with a distance and a time, so every row becomes a run; or, with ``--kind Ride``, rows that are
all skipped), imports it with the real command in a fresh data home, and reports wall time, time per row and
the command's peak RSS (``wait4``: the process and the decode server it waited for).

    .venv/bin/python bench/bench_strava_export.py [--rows 100000] [--kind Run] [--max-rows N] [--json]

Target: a 100,000-row CSV imported within minutes and under 200 MB, or refused at the row cap with the reason.

Measured on 2026-12-07 (2 shared cores, load average 7-9; 0.9 MB zip):

* default cap (``STRIDECARE_EXPORT_MAX_ROWS`` 50,000): refused in 1.9 s, peak RSS 130 MB, nothing stored;
* 100,000 Ride rows (``--kind Ride --max-rows 100000``): all skipped with a reason in 3.3 s, peak RSS 131 MB
  (before streaming: 20,000 rows already took 174 MB);
* 100,000 manual runs (``--max-rows 100000``): every row stored and reported in ~10.5 min (~6 ms a row, batches
  of 200; was ~27 ms a row, 45 ms in the issue's measurement), peak RSS 146 MB for the whole command. The
  athlete's replan that the command runs afterwards (``recommender.planner``) had not finished 29 minutes later
  (12,500 of ~20,800 days of loads written) and was stopped: the planner, not the export reader, bounds a
  history this long.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEADER = ["Activity ID", "Activity Date", "Activity Name", "Activity Type", "Elapsed Time", "Distance", "Filename"]
HEADER += ["Elapsed Time", "Moving Time", "Distance", "Average Cadence"]


def write_export(path: Path, rows: int, kind: str) -> int:
    """A Strava export zip whose activities.csv has ``rows`` manual entries; returns the zip's size."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(HEADER)
    start = datetime(2000, 1, 1, 6, 0, tzinfo=UTC)
    for i in range(rows):
        when = start + timedelta(hours=5 * i)
        seconds = 1800 + (i % 7) * 300
        metres = seconds * (2.6 + (i % 5) * 0.1)
        date = when.strftime("%b %-d, %Y, %-I:%M:%S %p")
        writer.writerow(
            [1_000_000 + i, date, f"run {i}", kind, seconds, f"{metres / 1000:.2f}", "", seconds, seconds, metres, 82]
        )
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("activities.csv", text.getvalue())
    return path.stat().st_size


def run_import(archive: Path, home: Path, max_rows: int | None) -> dict[str, object]:
    """``stridecare import`` in a child; wall time, exit status, the last line and peak RSS of the child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
    env["STRIDECARE_DATA_HOME"] = str(home)
    env["STRIDECARE_ENCRYPTION_KEYS"] = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="
    if max_rows is not None:
        env["STRIDECARE_EXPORT_MAX_ROWS"] = str(max_rows)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [str(BIN / "stridecare"), "import", str(archive)], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
    return {
        "exit": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "last_lines": lines[-3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--kind", default="Run", help="Activity Type of every row (Run: stored; Ride: skipped)")
    parser.add_argument("--max-rows", type=int, help="STRIDECARE_EXPORT_MAX_ROWS for the import (default: its own)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "export_1.zip"
        size = write_export(archive, args.rows, args.kind)
        result = run_import(archive, Path(tmp) / "home", args.max_rows)
    result = {"rows": args.rows, "kind": args.kind, "zip_kb": round(size / 1024), **result}
    result["ms_per_row"] = round(float(str(result["wall_s"])) * 1000 / max(1, args.rows), 2)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:12} {value}")


if __name__ == "__main__":
    main()
