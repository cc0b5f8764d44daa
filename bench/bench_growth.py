"""Cost per run as the history grows: Strava backfill, ``stridecare import`` and an inbox burst at several N.

Run from the repository root::

    .venv/bin/python bench/bench_growth.py --n 500 1000 2000 4000 [--only backfill import inbox] [--json]

Each row is a fresh data home (SQLite, the embedded default) and one athlete, measured from outside: the
command runs as a child process and its CPU time (user + system, from ``wait4``) is divided by N, so a cost that
grows faster than N shows as a rising ``CPU ms/run`` column.

* ``backfill``: ``stridecare strava backfill`` against the fake Strava API (``tests/fake_strava.py``, served in
  this process) holding N activities without streams, one every 20 hours, every tenth a ride.
* ``import``: ``stridecare import --workers 1`` of a folder of N small FIT files (30-minute runs, one record
  every 30 s, one a day), written once by ``tests/fitgen.py`` into a cache folder and reused.
* ``inbox``: ``stridecare run --no-web`` with the same N files renamed into its inbox newest first (each older
  file lands before runs already stored), timed until every run is stored.

Every child has a time limit (``--timeout``, default 600 s): a row that exceeds it is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BIN = Path(sys.executable).parent
FERNET_KEY = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="
STRAVA_ATHLETE = 4242
CACHE = Path(tempfile.gettempdir()) / "stridecare-bench-growth-fit"


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a stridecare child: only its own data home and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
    env.update(
        {
            "STRIDECARE_DATA_HOME": str(home),
            "STRIDECARE_ENCRYPTION_KEYS": FERNET_KEY,
            "STRIDECARE_SECRET_KEY": "bench-signing-key",
            "STRIDECARE_LOG_LEVEL": "WARNING",
            "STRIDECARE_DEFAULT_ATHLETE": "me",
        }
    )
    env.update(extra)
    return env


def run_child(
    args: list[str], env: dict[str, str], timeout: float, until: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Run a stridecare command; its wall and CPU seconds. With ``until``, stop it (SIGTERM) once that holds."""
    # The child's log goes to a file: a pipe nobody reads would block the child once its buffer is full.
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(BIN / "stridecare"), *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
        )
        timed_out = stopping = False
        wall = 0.0
        deadline = time.monotonic() + timeout
        while True:
            # wait4 reaps the child with its own CPU and that of the children it reaped (decoding processes).
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                wall = wall if stopping else time.perf_counter() - started
                break
            if not stopping and until is not None and until():
                wall = time.perf_counter() - started
                proc.send_signal(signal.SIGTERM)
                stopping = True
            elif not timed_out and time.monotonic() > deadline:
                wall = time.perf_counter() - started
                timed_out = stopping = True
                proc.kill()
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        stderr = log.read().decode(errors="replace")
    if proc.returncode not in (0, -signal.SIGTERM) and not timed_out and until is None:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "timed_out": timed_out}


def count_runs(home: Path) -> int:
    """Runs stored so far, read without taking the write lock."""
    import sqlite3

    db = home / "stridecare.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.Error:
        return 0


def prepare_home(home: Path) -> None:
    """Migrate the database and add the athlete, outside the measured command."""
    from stridecare.db.models import Athlete
    from stridecare.runtime import Runtime
    from stridecare.settings import Settings

    rt = Runtime.open(Settings(data_home=home, encryption_keys=[FERNET_KEY], secret_key="bench-signing-key"))
    try:
        with rt.db.transaction() as session:
            session.add(Athlete(name="me", timezone="UTC", channel_settings={"console": {"enabled": False}}))
    finally:
        rt.close()


# -- backfill --------------------------------------------------------------------------------------------------


def bench_backfill(n: int, timeout: float) -> dict[str, Any]:
    from fake_strava import FakeClock, Limits, connect_account, make_activity, running, strava_settings
    from sqlalchemy import select

    from stridecare.db.models import Athlete
    from stridecare.runtime import Runtime

    now = datetime.now(UTC).replace(microsecond=0)
    with (
        tempfile.TemporaryDirectory(prefix="sc-growth-") as tmp,
        running(clock=FakeClock(now), limits=Limits(overall=(10_000, 100_000), read=(10_000, 100_000))) as fake,
    ):
        home = Path(tmp)
        fake.add_athlete(STRAVA_ATHLETE)
        newest = now - timedelta(days=1)
        for i in range(n):
            sport = "Ride" if i % 10 == 9 else "Run"
            activity = make_activity(
                20_000_000 + i, newest - i * timedelta(hours=20), athlete_id=STRAVA_ATHLETE, sport_type=sport
            )
            fake.add_activity(STRAVA_ATHLETE, activity, streams=None)
        prepare_home(home)
        settings = strava_settings(home, fake, secret_key="bench-signing-key")
        rt = Runtime.open(settings)
        try:
            with rt.db.read() as session:
                athlete_id = session.scalars(select(Athlete.id).where(Athlete.name == "me")).one()
            connect_account(rt.db, settings, fake, athlete_id, now=now)
        finally:
            rt.close()
        env = child_env(
            home,
            STRIDECARE_STRAVA_CLIENT_ID=str(fake.client_id),
            STRIDECARE_STRAVA_CLIENT_SECRET=fake.client_secret,
            STRIDECARE_STRAVA_BASE_URL=fake.base_url,
        )
        result = run_child(["strava", "backfill", "--athlete", "me"], env, timeout)
        result["runs"] = count_runs(home)
        result["requests"] = fake.count()
    return result


# -- FIT files ---------------------------------------------------------------------------------------------------


def fit_files(n: int) -> list[Path]:
    """N distinct small FIT runs, one a day back from yesterday (cached across rows and invocations)."""
    from fitgen import write_activity

    CACHE.mkdir(parents=True, exist_ok=True)
    # Anchored to a fixed day so that the cache stays valid; the newest run is then in the past, which only
    # means no post-run prompt is due: the load, daily series and flags are computed all the same.
    newest = datetime(2026, 11, 30, 6, 30, tzinfo=UTC)
    paths = []
    for i in range(n):
        path = CACHE / f"run-{i:05d}.fit"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            write_activity(
                tmp,
                start=newest - timedelta(days=i),
                duration_s=1800,
                speed_mps=3.0 + (i % 7) * 0.1,
                cadence_rpm=84 + i % 5,
                sample_interval_s=30,
            )
            tmp.replace(path)
        paths.append(path)
    return paths


def bench_import(n: int, timeout: float, inspect: Callable[[Path], dict[str, Any]] | None = None) -> dict[str, Any]:
    """``stridecare import --workers 1`` of N files into a fresh data home; ``inspect(home)``, when given, adds
    its own figures of the imported home to the row."""
    files = fit_files(n)
    with tempfile.TemporaryDirectory(prefix="sc-growth-") as tmp:
        home = Path(tmp) / "home"
        folder = Path(tmp) / "archive"
        folder.mkdir()
        for path in files:
            shutil.copyfile(path, folder / path.name)
        prepare_home(home)
        result = run_child(["import", str(folder), "--athlete", "me", "--workers", "1"], child_env(home), timeout)
        result["runs"] = count_runs(home)
        if inspect is not None:
            result |= inspect(home)
    return result


def staged_inbox(tmp: Path, files: list[Path]) -> tuple[Path, Callable[[], None]]:
    """A prepared data home under ``tmp`` with an empty inbox and ``files`` copied beside it, and the function
    that renames them into the inbox, newest first.

    Files appear by rename (whole at once, as a sync client delivers them), while the runner is already watching.
    """
    home = tmp / "home"
    inbox = home / "inbox"
    inbox.mkdir(parents=True)
    staging = tmp / "staging"
    staging.mkdir()
    prepare_home(home)
    for path in files:
        shutil.copyfile(path, staging / path.name)

    def drop() -> None:
        for path in files:
            os.replace(staging / path.name, inbox / path.name)

    return home, drop


def bench_inbox(n: int, timeout: float, settled: Callable[[Path], bool] | None = None) -> dict[str, Any]:
    """N files renamed newest first into a running ``stridecare run --no-web``; timed until every run is stored,
    or until ``settled(home)`` holds when given."""
    files = fit_files(n)
    with tempfile.TemporaryDirectory(prefix="sc-growth-") as tmp:
        home, drop = staged_inbox(Path(tmp), files)
        env = child_env(home, STRIDECARE_WEB_PORT="0")
        dropped = False

        def all_stored() -> bool:
            nonlocal dropped
            if not dropped and (home / "stridecare.db").exists():
                time.sleep(1.0)  # let the watcher start
                drop()
                dropped = True
            if not dropped:
                return False
            return settled(home) if settled is not None else count_runs(home) >= n

        result = run_child(["run", "--no-web"], env, timeout, until=all_stored)
        result["runs"] = count_runs(home)
    return result


BENCHES: dict[str, Callable[[int, float], dict[str, Any]]] = {
    "backfill": bench_backfill,
    "import": bench_import,
    "inbox": bench_inbox,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=list(BENCHES))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed to one command")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for name in args.only:
        for n in args.n:
            result = BENCHES[name](n, args.timeout)
            row = {"work": name, "n": n, **result, "cpu_ms_per_run": 1000 * result["cpu_s"] / n}
            rows.append(row)
            if not args.json:
                flag = "  TIMED OUT" if result["timed_out"] else ""
                print(
                    f"{name:<9} N={n:>5}  wall {result['wall_s']:8.1f} s  CPU {result['cpu_s']:8.1f} s  "
                    f"CPU/run {row['cpu_ms_per_run']:7.1f} ms  runs stored {result['runs']}{flag}",
                    flush=True,
                )
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
