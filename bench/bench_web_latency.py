"""Strava event POST latency of the embedded default while it ingests a burst of inbox files.

Run from the repository root::

    .venv/bin/python bench/bench_web_latency.py [--files 100] [--events 2000] [--clients 50] [--json]

It starts ``stridecare run`` (Celery worker on the SQLite broker, beat, watcher and web app in one process, one
SQLite database) in a fresh data home, measures ``--events`` distinct event POSTs to ``/strava/webhook`` from
``--clients`` concurrent clients once idle, then renames ``--files`` FIT runs (``bench_growth``'s cached files)
into the inbox newest first and fires the same load again, round after round, until they are all stored.
Strava wants a 200 within 2 s. ``/healthz`` is sampled during the load as well (a read that must not wait for
the worker's writes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_growth import child_env, count_runs, fit_files, staged_inbox  # noqa: E402
from bench_strava_webhook import SUBSCRIPTION_ID, fire, free_port, percentile, serving  # noqa: E402


def summary(latencies: list[float], errors: list[str]) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1),
        "over_2s": sum(1 for x in ms if x > 2000),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }


async def sample_health(url: str, stop: asyncio.Event) -> list[float]:
    out: list[float] = []
    async with httpx.AsyncClient(timeout=10.0) as client:
        while not stop.is_set():
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await client.get(url)
            out.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)
    return out


async def load(base: str, events: int, clients: int, owner_base: int) -> tuple[list[float], list[str], list[float]]:
    stop = asyncio.Event()
    health = asyncio.create_task(sample_health(base + "/healthz", stop))
    latencies, errors = await fire(base + "/strava/webhook", events, clients, owner_base=owner_base)
    stop.set()
    return latencies, errors, await health


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = fit_files(args.files)
    with tempfile.TemporaryDirectory(prefix="sc-weblat-") as tmp:
        home, drop = staged_inbox(Path(tmp), files)
        port = free_port()
        env = child_env(home, STRIDECARE_WEB_PORT=str(port), STRIDECARE_STRAVA_SUBSCRIPTION_ID=str(SUBSCRIPTION_ID))
        base = f"http://127.0.0.1:{port}"
        with serving(["run"], env, base + "/healthz", start_timeout=60, stop_timeout=30):
            asyncio.run(load(base, 20, 5, owner_base=900))  # warm-up
            idle = asyncio.run(load(base, args.events, args.clients, owner_base=100))
            drop()
            started = time.perf_counter()
            # Rounds of the same load until the burst is stored, so that every POST measured here competes
            # with ingest work: the last round may end a little after the last file.
            busy: tuple[list[float], list[str], list[float]] = ([], [], [])
            rounds = 0
            while True:
                latencies, errors, health = asyncio.run(
                    load(base, args.events, args.clients, owner_base=500 + 10 * rounds)
                )
                rounds += 1
                busy[0].extend(latencies)
                busy[1].extend(errors)
                busy[2].extend(health)
                stored_during = count_runs(home)
                if stored_during >= args.files or time.perf_counter() - started > 900:
                    break
            ingest_s = time.perf_counter() - started
    report = {
        "files": args.files,
        "events": args.events,
        "clients": args.clients,
        "idle": summary(idle[0], idle[1]),
        "under_ingest": summary(busy[0], busy[1]),
        "healthz_under_ingest": summary(busy[2], []),
        "load_rounds": rounds,
        "runs_stored_when_load_ended": stored_during,
        "ingest_seconds": round(ingest_s, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"stridecare run (SQLite), {args.events} event POSTs from {args.clients} clients")
    for label in ("idle", "under_ingest", "healthz_under_ingest"):
        s = report[label]
        assert isinstance(s, dict)
        print(
            f"  {label:<22} n={s['n']:>5}  p50 {s['p50_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms  "
            f"max {s['max_ms']:8.1f} ms  >2 s {s['over_2s']:>4}  errors {s['errors']} {s['error_kinds']}"
        )
    print(
        f"  {args.files} inbox files: {stored_during} stored when the load ended ({rounds} rounds of {args.events} "
        f"events), {ingest_s:.1f} s from the drop"
    )


if __name__ == "__main__":
    main()
