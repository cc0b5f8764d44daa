"""Decoding speed and memory on the shared FIT corpus: bare fitparse vs ``FitSource.decode``, fast and not.

Run from the repository root: ``.venv/bin/python bench/bench_decode.py [--corpus PATH]``. Throughput is
measured over every distinct file content of the corpus (the corpus keeps byte-identical copies), file by
file in turn (bare fitparse, ``FitSource()`` with the native scan, ``FitSource(fast=False)``), so that drift in
a shared machine's speed falls on all alike; the two ``FitSource`` results are compared file by file. Peak
memory is measured in a fresh subprocess per file (VmHWM, the peak resident set of the process image: unlike
ru_maxrss it does not inherit the parent's peak across fork and exec; and tracemalloc's peak of Python allocations) on
the two largest files and on the largest file with a foot session.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from fit_corpus import DEFAULT_CORPUS, bare_fitparse, distinct_files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_MEMORY_SNIPPET = """
import json, resource, sys, tracemalloc, warnings
sys.path.insert(0, {root!r})
from pathlib import Path
import fitparse
from ingest.fit import FitSource
warnings.simplefilter("ignore")
mode, path = sys.argv[1], sys.argv[2]
def hwm_kb():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = hwm_kb()
tracemalloc.start()
if mode == "fitparse":
    for _ in fitparse.UncachedFitFile(path):
        pass
else:
    try:
        FitSource(fast=mode == "fast").decode(Path(path), "bench")
    except Exception:
        pass
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({{"maxrss_kb": hwm_kb(), "base_kb": base,
                  "traced_peak": peak}}))
"""


def decode(path: Path, fast: bool) -> object:
    from ingest.fit import FitSource
    from stridecare.domain.run import DecodeError

    try:
        return FitSource(fast=fast).decode(path, "bench")
    except DecodeError as exc:
        return str(exc)


def throughput(files: list[Path]) -> tuple[list[tuple[str, float, float, float]], int]:
    """Rows of (decoder, seconds, MB/s, files/s), and how many files the two FitSource paths disagree on."""
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    seconds = {"fitparse UncachedFitFile": 0.0, "FitSource (fast scan)": 0.0, "FitSource (fitparse only)": 0.0}
    differ = 0
    for path in files:
        t0 = time.perf_counter()
        bare_fitparse(path)
        t1 = time.perf_counter()
        fast = decode(path, True)
        t2 = time.perf_counter()
        reference = decode(path, False)
        t3 = time.perf_counter()
        seconds["fitparse UncachedFitFile"] += t1 - t0
        seconds["FitSource (fast scan)"] += t2 - t1
        seconds["FitSource (fitparse only)"] += t3 - t2
        differ += fast != reference
    rows = [(label, s, total_mb / s, len(files) / s) for label, s in seconds.items()]
    return rows, differ


def memory(path: Path, mode: str) -> dict[str, float]:
    snippet = _MEMORY_SNIPPET.format(root=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", snippet, mode, str(path)], capture_output=True, text=True, check=True
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return {
        "maxrss_mb": data["maxrss_kb"] / 1024,
        "growth_mb": (data["maxrss_kb"] - data["base_kb"]) / 1024,
        "traced_peak_mb": data["traced_peak"] / 1e6,
    }


def largest_foot_file(files: list[Path]) -> Path | None:
    for path in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
        result = decode(path, True)
        if not isinstance(result, str) and result.runs:  # type: ignore[attr-defined]
            return path
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput pass")
    args = parser.parse_args()
    files = distinct_files(args.corpus)
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"corpus: {len(files)} distinct files, {total_mb:.1f} MB ({args.corpus})\n")
    if not args.memory_only:
        print_throughput(files)
    print_memory(files)


def print_throughput(files: list[Path]) -> None:
    """The interleaved throughput table."""
    rows, differ = throughput(files)
    print(f"{'decoder':<28}{'seconds':>9}{'MB/s':>8}{'files/s':>9}{'vs bare':>9}")
    bare = rows[0][1]
    for label, seconds, mbps, fps in rows:
        print(f"{label:<28}{seconds:>9.2f}{mbps:>8.3f}{fps:>9.2f}{bare / seconds:>8.1f}x")
    print(f"files whose fast and fitparse-only results differ: {differ} of {len(files)}")


def print_memory(files: list[Path]) -> None:
    """Peak memory of each mode on the largest files."""
    largest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:2]
    foot = largest_foot_file(files)
    if foot is not None and foot not in largest:
        largest.append(foot)
    print(f"\n{'peak memory':<48}{'mode':<10}{'peak MB':>10}{'growth MB':>10}{'traced MB':>10}")
    for path in largest:
        label = f"{path.name} ({path.stat().st_size / 1e6:.1f} MB)"
        for mode in ("fitparse", "ref", "fast"):
            m = memory(path, mode)
            print(f"{label:<48}{mode:<10}{m['maxrss_mb']:>10.1f}{m['growth_mb']:>10.1f}{m['traced_peak_mb']:>10.1f}")


if __name__ == "__main__":
    main()
