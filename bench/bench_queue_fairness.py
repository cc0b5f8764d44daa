"""A dropped file's prompt with 16,000 Strava event tasks queued, against the same with none queued.

With real processes as they run in each deployment: ``stridecare run`` (embedded: SQLite database and queue)
and a Celery worker (two processes, every queue, as docker-compose.yml runs it) with the watcher on the local
Redis and PostgreSQL (a database created for the run and dropped afterwards). Each round drops one fresh run
(each to its own athlete, so each gets a post-run prompt) twice: once with the events queue topped up to
``--flood`` tasks (tests/queue_flood.py writes them straight into the broker) and once with it emptied, in
alternating order. The delay is from the file's rename into the inbox to its prompt's delivery recorded as
sent. Each figure has the one-minute load average beside it, and the flooded p95 is given as a ratio of the
quiet one measured in the same run.

Run from the repository root: ``.venv/bin/python bench/bench_queue_fairness.py [--rounds 10] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench_latency import FERNET_KEY, pct, pg_database, redis_db  # noqa: E402
from fitgen import write_activity  # noqa: E402
from harness import Proc, celery_worker, processes, settings_env, stridecare, wait_for  # noqa: E402
from queue_flood import flood, purge, queued  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from stridecare.db.models import Delivery  # noqa: E402
from stridecare.runtime import Runtime  # noqa: E402
from stridecare.settings import Settings  # noqa: E402
from workers.queues import EVENTS  # noqa: E402

COMMAND = "python bench/bench_queue_fairness.py"


def sent(rt: Runtime) -> int:
    with rt.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent")) or 0)


def stage(folder: Path, count: int) -> list[Path]:
    """``count`` fresh 30-minute runs (ended within the last hour, so each gets a post-run prompt)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    paths = []
    for i in range(count):
        path = folder / f"run{i:03d}.fit"
        write_activity(path, start=now - timedelta(minutes=60) + timedelta(seconds=i), duration_s=1800)
        paths.append(path)
    return paths


def measure(mode: str, rounds: int, size: int, work: Path, warmup: int) -> dict[str, Any]:
    """``rounds`` drops with the flood queued and ``rounds`` without, alternating, after ``warmup`` drops not
    counted (each worker process starts its decode server with its first file); delays and load."""
    names = [f"a{i:03d}" for i in range(2 * rounds + warmup)]
    home = work / mode
    files = stage(home / "staging", len(names))
    with ExitStack() as stack:
        extra: dict[str, Any] = {}
        if mode == "distributed":
            extra["database_url"] = stack.enter_context(pg_database())
            extra["broker_url"] = stack.enter_context(redis_db(15))
        settings = Settings(
            data_home=home / "home",
            inboxes=[f"{n}={home / 'inbox' / n}" for n in names],
            encryption_keys=[FERNET_KEY],  # type: ignore[list-item]
            secret_key="bench-signing-key",  # type: ignore[arg-type]
            **extra,
        )
        rt = Runtime.open(settings)
        stack.callback(rt.close)
        env = settings_env(settings)
        logs = home / "logs"
        flood(settings, size)
        procs: list[Proc]
        if mode == "distributed":
            procs = [celery_worker("worker", env, logs, concurrency=2), stridecare("watcher", ["watch"], env, logs)]
        else:
            procs = [stridecare("run", ["run", "--no-web"], env, logs)]
        stack.enter_context(processes(*procs))
        wait_for(lambda: queued(settings, EVENTS) < size, timeout=120, what="the worker taking events")
        time.sleep(2.0)  # the watcher's first scan
        inboxes = dict(settings.inbox_map())
        results: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
        next_id = 2 * 10**9
        for name in names[2 * rounds :]:
            before = sent(rt)
            path = files[names.index(name)]
            inboxes[name].mkdir(parents=True, exist_ok=True)
            path.rename(inboxes[name] / path.name)
            wait_for(lambda b=before: sent(rt) > b, timeout=300, interval=0.02, what=f"warm-up prompt {name}")
        for i in range(rounds):
            for flooded in (True, False) if i % 2 == 0 else (False, True):
                if flooded:
                    missing = size - queued(settings, EVENTS)
                    flood(settings, missing, first_id=next_id)
                    next_id += missing
                else:
                    purge(settings, EVENTS)
                name = names[len(results[True]) + len(results[False])]
                before = sent(rt)
                path = files[names.index(name)]
                inboxes[name].mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                path.rename(inboxes[name] / path.name)
                wait_for(lambda b=before: sent(rt) > b, timeout=300, interval=0.02, what=f"prompt {name}")
                delay = time.perf_counter() - t0
                results[flooded].append((delay, os.getloadavg()[0], queued(settings, EVENTS)))
    out: dict[str, Any] = {"mode": mode, "flood": size, "rounds": rounds}
    for flooded, label in ((True, "flooded"), (False, "quiet")):
        delays = [d for d, _l, _q in results[flooded]]
        out[label] = {
            "p50_s": round(pct(delays, 50), 2),
            "p95_s": round(pct(delays, 95), 2),
            "max_s": round(max(delays), 2),
            "load_1min": round(sum(load for _d, load, _q in results[flooded]) / len(delays), 2),
            "delays_s": [round(d, 2) for d in delays],
        }
    out["flooded"]["events_left_min"] = min(q for _d, _l, q in results[True])
    out["p95_ratio_flooded_to_quiet"] = round(out["flooded"]["p95_s"] / out["quiet"]["p95_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="drops with the flood (and as many without)")
    parser.add_argument("--flood", type=int, default=16_000, help="Strava event tasks kept queued")
    parser.add_argument("--warmup", type=int, default=2, help="drops before measuring, not counted")
    parser.add_argument("--mode", choices=["embedded", "distributed", "both"], default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-queues-{uuid.uuid4().hex[:6]}"
    modes = ["embedded", "distributed"] if args.mode == "both" else [args.mode]
    report = [measure(mode, args.rounds, args.flood, work, args.warmup) for mode in modes]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{COMMAND}: a dropped file's prompt with {args.flood:,} Strava event tasks queued")
    for r in report:
        for label in ("flooded", "quiet"):
            f = r[label]
            extra = f", events still queued ≥ {f['events_left_min']:,}" if label == "flooded" else ""
            print(
                f"  {r['mode']:<11} {label:<7} n={r['rounds']} p50 {f['p50_s']:.2f} s  p95 {f['p95_s']:.2f} s  "
                f"max {f['max_s']:.2f} s  (load {f['load_1min']:.2f}){extra}"
            )
        print(f"  {r['mode']:<11} p95 flooded / quiet: {r['p95_ratio_flooded_to_quiet']:.2f}")


if __name__ == "__main__":
    main()
