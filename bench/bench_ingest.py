"""Ingest pipeline throughput and memory on the shared FIT corpus.

Measures, on every distinct file content of ``../shared/corpus/fit`` (copied to a temporary folder):

* bare fitparse decoding (``UncachedFitFile``, one process) — the floor;
* ``stridecare import`` with one decoding process and with two (hash, decode, store to SQLite, load, flags);
* a re-scan of the already imported folder (MB/s);
* peak memory (max RSS) of ``stridecare ingest`` on the two largest corpus files, each in a fresh process.

Run: ``.venv/bin/python bench/bench_ingest.py [--corpus PATH] [--json]``. Numbers go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "fit"


def distinct_files(corpus: Path) -> list[Path]:
    seen: dict[str, Path] = {}
    for path in sorted(corpus.rglob("*")):
        if path.is_file() and path.suffix.lower() == ".fit":
            seen.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return list(seen.values())


def bare_fitparse(files: list[Path]) -> float:
    import fitparse

    t0 = time.perf_counter()
    for path in files:
        with warnings.catch_warnings(), contextlib.suppress(Exception):
            warnings.simplefilter("ignore")
            for _ in fitparse.UncachedFitFile(str(path)):
                pass
    return time.perf_counter() - t0


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
    code = (
        "import resource, sys\n"
        "from stridecare.cli.main import main\n"
        "sys.argv = ['stridecare', 'ingest', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env_for(home), capture_output=True,
                         text=True, check=False)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"corpus not found at {args.corpus}")
    files = distinct_files(args.corpus)
    mb = sum(p.stat().st_size for p in files) / 1e6
    results: dict[str, float] = {"files": len(files), "megabytes": round(mb, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "archive"
        folder.mkdir()
        for i, path in enumerate(files):
            shutil.copy(path, folder / f"{i:03d}-{path.name}")
        copies = sorted(folder.iterdir())
        results["bare_fitparse_s"] = bare_fitparse(copies)
        stride = str(BIN / "stridecare")
        results["import_1_worker_s"] = timed([stride, "import", str(folder), "--workers", "1"],
                                             env_for(Path(tmp) / "h1"))
        results["import_2_workers_s"] = timed([stride, "import", str(folder), "--workers", "2"],
                                              env_for(Path(tmp) / "h2"))
        results["rescan_cli_s"] = timed([stride, "import", str(folder), "--workers", "2"],
                                        env_for(Path(tmp) / "h2"))
        results["rescan_s"] = rescan_in_process(folder, Path(tmp) / "h2")
        biggest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:2]
        for i, path in enumerate(biggest):
            results[f"peak_rss_mb:{path.name}"] = round(peak_rss_mb(path, Path(tmp) / f"m{i}"), 1)
    results["bare_fitparse_mb_s"] = mb / results["bare_fitparse_s"]
    results["import_1_worker_mb_s"] = mb / results["import_1_worker_s"]
    results["import_1_worker_files_s"] = len(files) / results["import_1_worker_s"]
    results["import_2_workers_mb_s"] = mb / results["import_2_workers_s"]
    results["overhead_vs_bare"] = results["import_1_worker_s"] / results["bare_fitparse_s"] - 1
    results["speedup_2_workers"] = results["import_1_worker_s"] / results["import_2_workers_s"]
    results["rescan_mb_s"] = mb / results["rescan_s"]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for key, value in results.items():
        print(f"{key:40} {value:10.3f}" if isinstance(value, float) else f"{key:40} {value:>10}")


if __name__ == "__main__":
    main()
