"""Decoding speed and memory on the shared FIT corpus: bare fitparse vs ``FitSource.decode``.

Run from the repository root: ``.venv/bin/python bench/bench_decode.py [--corpus PATH]``. Throughput is
measured over every distinct file content of the corpus (the corpus keeps byte-identical copies); peak memory
is measured in a fresh subprocess per file (ru_maxrss, and tracemalloc's peak of Python allocations) on the
two largest files.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "fit"

_MEMORY_SNIPPET = """
import json, resource, sys, tracemalloc, warnings
sys.path.insert(0, {root!r})
from pathlib import Path
import fitparse
from ingest.fit import FitSource
warnings.simplefilter("ignore")
mode, path = sys.argv[1], sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
if mode == "fitparse":
    for _ in fitparse.UncachedFitFile(path):
        pass
else:
    FitSource().decode(Path(path), "bench")
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({{"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "base_kb": base,
                  "traced_peak": peak}}))
"""


def distinct_files(corpus: Path) -> list[Path]:
    seen: dict[str, Path] = {}
    for path in sorted(corpus.rglob("*")):
        if path.is_file() and path.suffix.lower() == ".fit":
            seen.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return list(seen.values())


def bare_fitparse(path: Path) -> None:
    import warnings

    import fitparse

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for _ in fitparse.UncachedFitFile(str(path)):
                pass
        except Exception:  # damaged files count as decoded work here
            pass


def ours(path: Path) -> None:
    from ingest.fit import FitSource
    from stridecare.domain.run import DecodeError

    with contextlib.suppress(DecodeError):
        FitSource().decode(path, "bench")


def throughput(files: list[Path]) -> list[tuple[str, float, float, float]]:
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    rows = []
    for label, fn in (("fitparse UncachedFitFile", bare_fitparse), ("FitSource.decode", ours)):
        start = time.perf_counter()
        for path in files:
            fn(path)
        seconds = time.perf_counter() - start
        rows.append((label, seconds, total_mb / seconds, len(files) / seconds))
    return rows


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    files = distinct_files(args.corpus)
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"corpus: {len(files)} distinct files, {total_mb:.1f} MB ({args.corpus})\n")
    print(f"{'decoder':<26}{'seconds':>9}{'MB/s':>8}{'files/s':>9}")
    for label, seconds, mbps, fps in throughput(files):
        print(f"{label:<26}{seconds:>9.1f}{mbps:>8.3f}{fps:>9.2f}")

    largest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:2]
    print(f"\n{'peak memory':<48}{'mode':<10}{'maxrss MB':>10}{'growth MB':>10}{'traced MB':>10}")
    for path in largest:
        label = f"{path.name} ({path.stat().st_size / 1e6:.1f} MB)"
        for mode in ("fitparse", "ours"):
            m = memory(path, mode)
            print(f"{label:<48}{mode:<10}{m['maxrss_mb']:>10.1f}{m['growth_mb']:>10.1f}{m['traced_peak_mb']:>10.1f}")


if __name__ == "__main__":
    main()
