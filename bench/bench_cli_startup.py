"""Start-up of the command line: CPU of ``stridecare --help``, ``runs`` and ``status`` against a bare import of
SQLAlchemy and Celery (and of the libraries ``runs`` cannot do without), interleaved in one run on a migrated
SQLite database holding one athlete and a few runs; and of ``stridecare run --no-web`` up to its worker's start
(the worker's start is replaced by a return, so the runner stops there: what every start of the embedded default
costs before it consumes).

Run: ``.venv/bin/python bench/bench_cli_startup.py [--repeat 10] [--baseline DIR]``. Each figure is the median CPU
(user + system) of one command over the repeats, after one unmeasured round, with the ratio to the bare import and
the load average beside it. ``--baseline DIR`` measures the ``stridecare`` commands of another checkout too (``git
worktree add DIR COMMIT``), interleaved with these in the same run, its packages put first on PYTHONPATH: before and
after under one load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from fitgen import write_activity  # noqa: E402

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
    # What `stridecare runs` cannot do without: its command line, its settings and its database's libraries.
    "python -c 'import typer, pydantic_settings, sqlalchemy'": [
        sys.executable,
        "-c",
        "import typer, pydantic_settings, sqlalchemy",
    ],
    "stridecare --help": [STRIDECARE, "--help"],
    "stridecare runs": [STRIDECARE, "runs"],
    "stridecare status": [STRIDECARE, "status"],
    "stridecare runs --help": [STRIDECARE, "runs", "--help"],
    "stridecare run --no-web, to its worker's start": [sys.executable, "-c", RUN_TO_WORKER],
}


def cpu_of(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """CPU seconds (user + system) the command took, children included. Run in ``cwd``, not in the checkout:
    ``python -c`` puts its working directory first on the path, ahead of a baseline's PYTHONPATH."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs of each command, interleaved (default 10)")
    parser.add_argument("--baseline", type=Path, help="a checkout of another commit, measured alongside")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "STRIDECARE_DATA_HOME": home}
        runs = Path(home) / "runs"
        runs.mkdir()
        files = [runs / f"{day}.fit" for day in range(1, 4)]
        for day, path in enumerate(files, 1):  # a few runs with their loads: `runs` and `status` have rows to show
            start = datetime(2026, 3, day, 7, tzinfo=UTC)
            write_activity(path, start=start, duration_s=1800 + 600 * day, speed_mps=3.2)
        subprocess.run([STRIDECARE, "athlete", "add", "me"], env=env, check=True, capture_output=True)
        subprocess.run([STRIDECARE, "ingest", *map(str, files)], env=env, check=True, capture_output=True)
        commands = [(name, argv, env) for name, argv in COMMANDS.items()]
        if args.baseline is not None:
            before = {**env, "PYTHONPATH": str(args.baseline.resolve())}
            ours = [(name, argv) for name, argv in COMMANDS.items() if "stridecare" in name]
            commands += [(f"{name} (baseline)", argv, before) for name, argv in ours]
        samples: dict[str, list[float]] = {name: [] for name, _, _ in commands}
        for _ in range(1 + args.repeat):  # the first round writes bytecode and warms the page cache: not counted
            for name, argv, command_env in commands:
                samples[name].append(cpu_of(argv, command_env, home))
        load = os.getloadavg()[0]
        samples = {name: values[1:] for name, values in samples.items()}
    limit = statistics.median(samples["python -c 'import sqlalchemy, celery' (limit)"])
    width = max(len(name) for name in samples)
    print(f"{'command':{width}} {'CPU median':>10} {'÷ limit':>8} {'load':>5}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:{width}} {median:9.3f}s {median / limit:7.2f}× {load:5.2f}")


if __name__ == "__main__":
    main()
