"""Import against its decoder: CPU per run of ``stridecare import --workers 1`` against ``FitSource.decode`` alone,
on real device files (corpus runs moved in time so that each copy is a new run), at two sizes.

Run: ``.venv/bin/python bench/bench_import_ratio.py [--n 100 400] [--corpus PATH]``. The target (import within
1.5x of decoding) is a ratio measured in the same run: the decoder alone before and after the import, the
load average beside each figure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fit_corpus import DEFAULT_CORPUS, distinct_files
from fit_shift import DAY_S, NotFit, shifted

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

from ingest.fit import FitSource  # noqa: E402
from stridecare.domain.run import DecodeError  # noqa: E402


def device_runs(corpus: Path) -> list[bytes]:
    """The corpus files that decode to foot runs with samples: what a watch really writes."""
    source = FitSource()
    out = []
    for path in distinct_files(corpus):
        try:
            result = source.decode(path, "x")
            data = path.read_bytes()
            shifted(data, DAY_S)  # the walker understands it
        except (DecodeError, NotFit, OSError, ValueError, IndexError):
            continue
        if result.runs and all(len(r.samples) > 30 for r in result.runs) and len(data) < 3_000_000:
            out.append(data)
    return out


def write_files(folder: Path, base: list[bytes], n: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        data = shifted(base[i % len(base)], DAY_S * (i + 1))
        path = folder / f"run-{i:04d}.fit"
        path.write_bytes(data)
        paths.append(path)
    return paths


def decode_cpu(paths: list[Path]) -> tuple[float, int]:
    source = FitSource()
    t0 = time.process_time()
    runs = 0
    for path in paths:
        runs += len(source.decode(path, hashlib.sha256(path.read_bytes()).hexdigest()).runs)
    return time.process_time() - t0, runs


def import_cpu(folder: Path, home: Path) -> float:
    env = {
        **os.environ,
        "STRIDECARE_DATA_HOME": str(home),
        "STRIDECARE_ENCRYPTION_KEYS": "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c=",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [str(BIN / "stridecare"), "import", str(folder), "--workers", "1"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    base = device_runs(args.corpus)
    if not base:
        sys.exit(f"no device runs found in {args.corpus}")
    print(f"{len(base)} real device runs from {args.corpus}, moved in time into distinct runs")
    for n in args.n:
        with tempfile.TemporaryDirectory(prefix="sc-import-ratio-") as tmp:
            paths = write_files(Path(tmp) / "files", base, n)
            # Interleaved: the decoder alone before and after the import, so that a change in the machine's load
            # during the run shows as two different decode figures rather than as a skewed ratio.
            load_before = os.getloadavg()[0]
            decode_before, runs = decode_cpu(paths)
            load_import = os.getloadavg()[0]
            imported_s = import_cpu(Path(tmp) / "files", Path(tmp) / "home")
            load_after = os.getloadavg()[0]
            decode_after, _ = decode_cpu(paths)
            per_before, per_after = decode_before / runs * 1000, decode_after / runs * 1000
            per_decode = (per_before + per_after) / 2
            per_import = imported_s / runs * 1000
            print(
                f"n={n:4d} files, {runs} runs: decode {per_before:5.1f} ms/run [load {load_before:.1f}] and "
                f"{per_after:5.1f} ms/run [load {load_after:.1f}], import {per_import:5.1f} ms/run "
                f"[load {load_import:.1f}] (process start included), ratio {per_import / per_decode:4.2f}x"
            )


if __name__ == "__main__":
    main()
