"""Ingest pipeline throughput and memory on the shared FIT corpus.

Measures, on every distinct file content of ``../shared/corpus/fit`` (copied to a temporary folder):

* bare fitparse decoding (``UncachedFitFile``, one process) — the floor;
* the pipeline in one process, file by file as a worker runs it (check, hash, decode, store to SQLite, then
  load, flags and prompts), interleaved with a bare fitparse pass over the same file so that drift in the
  machine's speed falls on both alike — the pipeline's own overhead;
* ``stridecare import`` with one decoding process and with two (the same work plus process start-up);
* a re-scan of the already imported folder (MB/s);
* peak memory (max RSS) of ``stridecare ingest`` on the two largest corpus files, each in a fresh process.

Run: ``.venv/bin/python bench/bench_ingest.py [--corpus PATH] [--json]``. Numbers go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fit_corpus import DEFAULT_CORPUS, bare_fitparse, distinct_files

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def bare_fitparse_s(files: list[Path]) -> float:
    """Seconds for bare fitparse over ``files``, one after the other."""
    t0 = time.perf_counter()
    for path in files:
        bare_fitparse(path)
    return time.perf_counter() - t0


def pipeline_interleaved(files: list[Path], home: Path) -> tuple[float, float]:
    """(bare fitparse seconds, pipeline seconds) over ``files``, measured file by file in turn."""
    from datetime import UTC, datetime

    sys.path.insert(0, str(ROOT))
    from ingest.decode import decode_path
    from ingest.store import store_decoded
    from recommender.planner import replan
    from stridecare.runtime import Runtime
    from stridecare.settings import Settings

    rt = Runtime.open(Settings(data_home=home))
    now = datetime.now(UTC)
    bare = pipeline = 0.0
    for path in files:
        t0 = time.perf_counter()
        bare_fitparse(path)
        t1 = time.perf_counter()
        decoded = decode_path(path, None, rt.settings.max_file_bytes, rt.settings.load.constants)
        report = store_decoded(rt.db, rt.settings, "me", decoded, now)
        t2 = time.perf_counter()
        bare, pipeline = bare + (t1 - t0), pipeline + (t2 - t1)
    t0 = time.perf_counter()
    if report.athlete_id is not None:
        replan(rt.db, rt.settings, report.athlete_id, now)
    pipeline += time.perf_counter() - t0
    rt.close()
    return bare, pipeline


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
    env["STRIDECARE_DATA_HOME"] = str(home)
    return env


def timed(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def rescan_in_process(folder: Path, home: Path) -> float:
    """Seconds for the watcher's rescan of an already imported folder (no process start-up counted)."""
    sys.path.insert(0, str(ROOT))
    from ingest.watch import FolderScanner
    from stridecare.runtime import Runtime
    from stridecare.settings import Settings

    rt = Runtime.open(Settings(data_home=home))
    scanner = FolderScanner(rt.db, [("me", folder)], settle_seconds=0.0)
    t0 = time.perf_counter()
    queued = scanner.rescan()
    elapsed = time.perf_counter() - t0
    if queued:
        raise RuntimeError(f"rescan queued {queued} files that were imported already")
    return elapsed


def peak_rss_mb(path: Path, home: Path) -> float:
    """Peak RSS of ``stridecare ingest PATH`` in a fresh process, its data home migrated beforehand (as a
    worker's is: the schema is migrated once when a deployment starts, not per file)."""
    subprocess.run([str(BIN / "stridecare"), "migrate"], env=env_for(home), check=True, capture_output=True)
    code = (
        "import resource, sys\n"
        "from stridecare_app.cli.main import main\n"
        "sys.argv = ['stridecare', 'ingest', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env_for(home), capture_output=True, text=True, check=False
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def memory(files: list[Path], home: Path) -> dict[str, float]:
    """Peak RSS on the two largest files, next to the same command on the smallest (the libraries alone)."""
    by_size = sorted(files, key=lambda p: p.stat().st_size)
    results = {f"peak_rss_mb:baseline:{by_size[0].name}": round(peak_rss_mb(by_size[0], home / "m-base"), 1)}
    for i, path in enumerate(reversed(by_size[-2:])):
        results[f"peak_rss_mb:{path.name}"] = round(peak_rss_mb(path, home / f"m{i}"), 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory measurements")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"corpus not found at {args.corpus}")
    files = distinct_files(args.corpus)
    mb = sum(p.stat().st_size for p in files) / 1e6
    results: dict[str, float] = {"files": len(files), "megabytes": round(mb, 2)}
    if args.memory_only:
        with tempfile.TemporaryDirectory() as tmp:
            results |= memory(files, Path(tmp))
        print(json.dumps(results, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "archive"
        folder.mkdir()
        for i, path in enumerate(files):
            shutil.copy(path, folder / f"{i:03d}-{path.name}")
        copies = sorted(folder.iterdir())
        results["bare_fitparse_s"] = bare_fitparse_s(copies)
        results["interleaved_bare_s"], results["interleaved_pipeline_s"] = pipeline_interleaved(
            copies, Path(tmp) / "h0"
        )
        stride = str(BIN / "stridecare")
        results["import_1_worker_s"] = timed(
            [stride, "import", str(folder), "--workers", "1"], env_for(Path(tmp) / "h1")
        )
        results["import_2_workers_s"] = timed(
            [stride, "import", str(folder), "--workers", "2"], env_for(Path(tmp) / "h2")
        )
        results["rescan_cli_s"] = timed([stride, "import", str(folder), "--workers", "2"], env_for(Path(tmp) / "h2"))
        results["rescan_s"] = rescan_in_process(folder, Path(tmp) / "h2")
        results |= memory(files, Path(tmp))
    results["bare_fitparse_mb_s"] = mb / results["bare_fitparse_s"]
    results["import_1_worker_mb_s"] = mb / results["import_1_worker_s"]
    results["import_1_worker_files_s"] = len(files) / results["import_1_worker_s"]
    results["import_2_workers_mb_s"] = mb / results["import_2_workers_s"]
    results["overhead_vs_bare"] = results["import_1_worker_s"] / results["bare_fitparse_s"] - 1
    results["pipeline_overhead_interleaved"] = results["interleaved_pipeline_s"] / results["interleaved_bare_s"] - 1
    results["speedup_2_workers"] = results["import_1_worker_s"] / results["import_2_workers_s"]
    results["rescan_mb_s"] = mb / results["rescan_s"]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for key, value in results.items():
        print(f"{key:40} {value:10.3f}" if isinstance(value, float) else f"{key:40} {value:>10}")


if __name__ == "__main__":
    main()
