"""Connectors: a first sync of a whole intervals.icu history, and how long a new run takes to become a prompt.

Against the fake intervals.icu of tests/fake_intervals.py on loopback, serving real FIT files (10-minute runs at
1 Hz, every other one gzip'ed, one activity in ten a ride and one in ten a Strava stub, as a real account mixes
them):

1. **First sync of N activities** (``--sizes``, default 1,000 and 4,000): requests made (listing and files),
   wall time, CPU per stored run (this process plus its decode server and the sandboxed children it reaped)
   for the pull itself
   (``sync_account``, what `stridecare sync` and the beat's task call) and for the replan that follows, and the
   ratio of CPU per run between the sizes (1.0 = linear).
2. **Appearance → prompt with `stridecare sync`**: an activity appears at the fake, `stridecare sync` runs as a
   process, the time until its prompt is in the outbox (``--repeat`` times).
3. **Appearance → prompt with the default schedule**: the pipeline measured in `stridecare run` (embedded worker
   and beat) with a 2 s poll interval, plus the wait for the next pull under the default 15-minute schedule with
   its jitter, drawn for uniformly random appearance times (Monte Carlo over the poller's own jitter).

Run from the repository root: ``.venv/bin/python bench/bench_connectors.py [--sizes 1000 4000] [--json]``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import resource
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_intervals import FakeActivity, FakeIntervals, running  # noqa: E402
from fitgen import CACHE_ENV, write_activity  # noqa: E402
from harness import processes, settings_env, stridecare, wait_for  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from ingest import sandbox  # noqa: E402
from ingest.connectors.intervals import credentials_json  # noqa: E402
from ingest.connectors.ledger import connect, jittered  # noqa: E402
from ingest.connectors.poller import sync_account  # noqa: E402
from recommender.planner import replan  # noqa: E402
from stridecare.db.models import Prompt, Run  # noqa: E402
from stridecare.runtime import Runtime  # noqa: E402
from stridecare.settings import Settings  # noqa: E402

FERNET_KEY = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="
BASE = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)


def _settings(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_home": home, "encryption_keys": [FERNET_KEY], "secret_key": "bench"}
    values.update(overrides)
    return Settings(**values)


def _write(args: tuple[str, int]) -> str:
    path, i = args
    write_activity(path, start=BASE - timedelta(hours=9 * i), duration_s=600, speed_mps=3.0 + (i % 7) * 0.1)
    return path


def make_history(fake: FakeIntervals, folder: Path, n: int) -> int:
    """``n`` activities at the fake; returns how many are runs with a file."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"a{i}.fit"), i) for i in range(n) if i % 10 not in (3, 7)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_write, jobs, chunksize=32))
    for i in range(n):
        start = BASE - timedelta(hours=9 * i)
        if i % 10 == 3:
            fake.add("i1", FakeActivity(f"r{i}", start, sport="Ride"))
        elif i % 10 == 7:
            fake.add("i1", FakeActivity(f"s{i}", start, strava_stub=True))
        else:
            path = folder / f"a{i}.fit"
            fake.add("i1", FakeActivity(f"a{i}", start, gzipped=i % 2 == 0, make_file=path.read_bytes))
    return len(jobs)


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def first_sync(n: int, work: Path) -> dict[str, Any]:
    """One first sync of ``n`` activities into a fresh SQLite database."""
    with running() as fake:
        fake.add_account("i1", "key")
        runs = make_history(fake, work / f"src{n}", n)
        for activity in fake.accounts["i1"].activities.values():
            activity.original()  # built before timing: the fake's gzip is not ours to measure
        rt = Runtime.open(_settings(work / f"home{n}", intervals_base_url=fake.url))
        account = connect(rt.db, rt.settings, "me", "intervals", "i1", credentials_json("key", "i1"), rt.now())
        cpu0, t0 = _cpu(), time.perf_counter()
        result = sync_account(rt.db, rt.settings, account, rt.now)
        # The decode server's CPU (and its reaped children's) counts for this process once it has ended.
        sandbox._server.close()
        cpu1, t1 = _cpu(), time.perf_counter()
        replan(rt.db, rt.settings, result.athlete_id, rt.now())
        cpu2, t2 = _cpu(), time.perf_counter()
        with rt.db.read() as s:
            stored = int(s.scalar(select(func.count()).select_from(Run)) or 0)
        rt.close()
        return {
            "activities": n,
            "runs": runs,
            "stored": stored,
            "requests": dict(fake.requests),
            "pull_wall_s": round(t1 - t0, 1),
            "pull_cpu_ms_per_run": round((cpu1 - cpu0) / runs * 1000, 1),
            "replan_wall_s": round(t2 - t1, 1),
            "replan_cpu_ms_per_run": round((cpu2 - cpu1) / runs * 1000, 2),
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prompts(rt: Runtime) -> int:
    with rt.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Prompt)) or 0)


def latency_sync(work: Path, repeat: int) -> list[float]:
    """Appearance at the fake → prompt in the outbox, by `stridecare sync` run as a process each time."""
    out = []
    with running() as fake:
        fake.add_account("i1", "key")
        settings = _settings(work / "home-sync", intervals_base_url=fake.url)
        rt = Runtime.open(settings)
        connect(rt.db, settings, "me", "intervals", "i1", credentials_json("key", "i1"), rt.now())
        env = settings_env(settings)
        for i in range(repeat):
            before = _prompts(rt)
            fake.accounts["i1"].activities.clear()
            rt_now = datetime.now(UTC)
            path = work / f"sync{i}.fit"
            write_activity(path, start=rt_now - timedelta(minutes=40), duration_s=1800, speed_mps=3.0 + 0.1 * i)
            activity = FakeActivity(f"n{i}", rt_now - timedelta(minutes=40), make_file=path.read_bytes)
            activity.original()
            t0 = time.perf_counter()
            fake.add("i1", activity)
            proc = stridecare(f"sync{i}", ["sync"], env, work / "logs")
            proc.popen.wait(timeout=300)
            wait_for(lambda before=before: _prompts(rt) > before, timeout=60, what="the prompt")
            out.append(time.perf_counter() - t0)
            with rt.db.transaction() as s:
                forget_runs_only(s, int(s.scalar(select(Run.athlete_id)) or 0))
        rt.close()
    return out


def forget_runs_only(session: Any, athlete_id: int) -> None:
    """Start the next round from an athlete without runs (else the day's second run gets no prompt); the
    account and its ledger stay."""
    from sqlalchemy import delete

    from stridecare.db.models import DailyLoad, Delivery, DeliveryAttempt, RunLoad, RunSamples

    runs = select(Run.id).where(Run.athlete_id == athlete_id).scalar_subquery()
    prompts = select(Prompt.id).where(Prompt.athlete_id == athlete_id).scalar_subquery()
    deliveries = select(Delivery.id).where(Delivery.prompt_id.in_(prompts)).scalar_subquery()
    session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(Delivery).where(Delivery.prompt_id.in_(prompts)))
    session.execute(delete(Prompt).where(Prompt.athlete_id == athlete_id))
    session.execute(delete(RunSamples).where(RunSamples.run_id.in_(runs)))
    session.execute(delete(RunLoad).where(RunLoad.run_id.in_(runs)))
    session.execute(delete(Run).where(Run.athlete_id == athlete_id))
    session.execute(delete(DailyLoad).where(DailyLoad.athlete_id == athlete_id))


def latency_beat(work: Path, repeat: int) -> list[float]:
    """Appearance → prompt in `stridecare run` with a 2 s poll interval: the pipeline behind the schedule."""
    out = []
    with running() as fake:
        fake.add_account("i1", "key")
        settings = _settings(
            work / "home-beat", intervals_base_url=fake.url, connector_poll_interval_s=2.0, web_port=_free_port()
        )
        rt = Runtime.open(settings)
        connect(rt.db, settings, "me", "intervals", "i1", credentials_json("key", "i1"), rt.now())
        worker = stridecare("run", ["run"], settings_env(settings), work / "logs")
        with processes(worker):
            for i in range(repeat):
                before = _prompts(rt)
                path = work / f"beat{i}.fit"
                now = datetime.now(UTC)
                write_activity(path, start=now - timedelta(minutes=40), duration_s=1800, speed_mps=3.0 + 0.1 * i)
                activity = FakeActivity(f"b{i}", now - timedelta(minutes=40), make_file=path.read_bytes)
                activity.original()
                t0 = time.perf_counter()
                fake.add("i1", activity)
                wait_for(lambda before=before: _prompts(rt) > before, timeout=120, interval=0.05, what="prompt")
                out.append(time.perf_counter() - t0)
                with rt.db.transaction() as s:
                    forget_runs_only(s, int(s.scalar(select(Run.athlete_id)) or 0))
        rt.close()
    return out


def schedule_wait(samples: int = 20000, interval_s: float = 900.0, beat_s: float = 60.0) -> dict[str, float]:
    """Wait from a random appearance to the next pull under the default schedule: pulls every ``interval_s``
    give or take a fifth (the poller's ``jittered``), each noticed by the beat's check every ``beat_s``."""
    rng = random.Random(7)
    waits = []
    t = 0.0
    pulls = []
    while t < samples * interval_s / 10:
        t += jittered(interval_s, rng) + rng.uniform(0, beat_s)
        pulls.append(t)
    horizon = pulls[-1]
    for _ in range(samples):
        at = rng.uniform(0, horizon - 2 * interval_s)
        waits.append(_next(pulls, at) - at)
    waits.sort()
    return {
        "p50_s": round(waits[len(waits) // 2], 0),
        "p95_s": round(waits[int(len(waits) * 0.95)], 0),
        "max_s": round(waits[-1], 0),
    }


def _next(pulls: list[float], at: float) -> float:
    return pulls[bisect.bisect_left(pulls, at)]


def _pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_s": round(statistics.median(ordered), 2),
        "p95_s": round(ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.95) - 1)], 2),  # nearest rank
        "max_s": round(ordered[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000], help="activities per first sync")
    parser.add_argument("--repeat", type=int, default=5, help="appearances timed per latency measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-connectors-") as tmp:
        work = Path(tmp)
        # Generated FIT files are kept between runs (outside the repository): the encoder is slow.
        os.environ.setdefault(CACHE_ENV, str(Path(tempfile.gettempdir()) / "stridecare-bench-fitgen"))
        Path(os.environ[CACHE_ENV]).mkdir(parents=True, exist_ok=True)
        syncs = [first_sync(n, work) for n in args.sizes]
        report["first_sync"] = syncs
        if len(syncs) > 1:
            report["cpu_per_run_ratio"] = round(syncs[-1]["pull_cpu_ms_per_run"] / syncs[0]["pull_cpu_ms_per_run"], 2)
        report["sync_command"] = _pcts(latency_sync(work, args.repeat))
        pipeline = _pcts(latency_beat(work, args.repeat))
        report["beat_pipeline_2s_schedule"] = pipeline
        wait = schedule_wait()
        report["default_schedule"] = {
            "wait_for_pull": wait,
            "p50_s": round(wait["p50_s"] + pipeline["p50_s"], 0),
            "p95_s": round(wait["p95_s"] + pipeline["p95_s"], 0),
            "max_s": round(wait["max_s"] + pipeline["max_s"], 0),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("first sync from the fake intervals.icu")
    print("| activities | runs | requests (list + files) | pull wall | pull CPU/run | replan CPU/run |")
    print("|---|---|---|---|---|---|")
    for s in report["first_sync"]:
        req = s["requests"]
        print(
            f"| {s['activities']:,} | {s['runs']:,} | {req.get('list', 0)} + {req.get('file', 0):,} | "
            f"{s['pull_wall_s']} s | {s['pull_cpu_ms_per_run']} ms | {s['replan_cpu_ms_per_run']} ms |"
        )
    if "cpu_per_run_ratio" in report:
        print(f"CPU per run, largest / smallest size: {report['cpu_per_run_ratio']} (1.0 = linear)")
    print(f"appearance → prompt with `stridecare sync`: {report['sync_command']}")
    print(f"appearance → prompt in `stridecare run`, 2 s schedule (the pipeline): {pipeline}")
    print(f"appearance → prompt with the default schedule (15 min ± 20 %): {report['default_schedule']}")


if __name__ == "__main__":
    main()
