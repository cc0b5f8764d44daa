"""Start-up of the command line: CPU of ``stridecare --help``, ``runs`` and ``status`` against a bare import of
SQLAlchemy and Celery, interleaved in one run on a migrated SQLite database holding one athlete and a few runs;
and of ``stridecare run --no-web`` up to its worker's start (the worker's start is replaced by a return, so the
runner stops there: what every start of the embedded default costs before it consumes).

Run: ``.venv/bin/python bench/bench_cli_startup.py [--repeat 10]``. Each figure is the median CPU (user + system)
of one command over the repeats, with the ratio to the bare import and the load average beside it.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STRIDECARE = str(BIN / "stridecare")
RUN_TO_WORKER = """
import sys
import celery.apps.worker
celery.apps.worker.Worker.start = lambda self: None
sys.argv = ["stridecare", "run", "--no-web"]
from stridecare_app.cli.main import main
main()
"""

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import sqlalchemy, celery' (limit)": [sys.executable, "-c", "import sqlalchemy, celery"],
    "stridecare --help": [STRIDECARE, "--help"],
    "stridecare runs": [STRIDECARE, "runs"],
    "stridecare status": [STRIDECARE, "status"],
    "stridecare runs --help": [STRIDECARE, "runs", "--help"],
    "stridecare run --no-web, to its worker's start": [sys.executable, "-c", RUN_TO_WORKER],
}


def cpu_of(argv: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) the command took, children included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs of each command, interleaved (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "STRIDECARE_DATA_HOME": home}
        subprocess.run([STRIDECARE, "athlete", "add", "me"], env=env, check=True, capture_output=True)
        samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.repeat):
            for name, argv in COMMANDS.items():
                samples[name].append(cpu_of(argv, env))
        load = os.getloadavg()[0]
    limit = statistics.median(samples["python -c 'import sqlalchemy, celery' (limit)"])
    print(f"{'command':48} {'CPU median':>10} {'÷ limit':>8} {'load':>5}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:48} {median:9.3f}s {median / limit:7.2f}× {load:5.2f}")


if __name__ == "__main__":
    main()
