"""Strava event POST latency while stridecare ingests a burst of real FIT files, against a bare Starlette app on
uvicorn answering the same POSTs, measured in turns in the same run.

Run from the repository root::

    .venv/bin/python bench/bench_web_latency.py [--mode embedded|distributed|both] [--files 400] [--events 2000]
        [--clients 50] [--corpus ../shared/corpus/fit] [--json]

* ``embedded``: ``stridecare run`` (worker, beat, watcher and web app in one process; SQLite database and queue);
* ``distributed``: PostgreSQL and Redis, with ``stridecare web``, one Celery worker (two prefork children),
  ``celery beat`` and ``stridecare watch`` as separate processes, as docker-compose runs them.

The files are real device runs from the corpus, each copy moved in time by whole days (``bench/fit_shift.py``) so
that every file is a new run. Rounds of ``--events`` distinct event POSTs from ``--clients`` concurrent clients go
to the bare app and to stridecare in turn, ``--idle-rounds`` of them idle; then the files are renamed into the
inbox newest first and the turns go on until every run is stored. Every line prints stridecare's figures, the
bare app's, the ratio of the p99s and ``os.getloadavg()``. ``/healthz`` (a read) is sampled during stridecare's
rounds under ingest. Strava wants a 200 within 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_import_ratio import device_runs, write_files  # noqa: E402
from bench_strava_webhook import Turns, bare_server, line, stridecare, summary  # noqa: E402
from fit_corpus import DEFAULT_CORPUS  # noqa: E402


def count_runs(db_url: str) -> int:
    """Runs stored so far."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM runs")).scalar_one())
    except Exception:
        return 0
    finally:
        engine.dispose()


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


class HealthSampler:
    """``/healthz`` sampled every 0.1 s in a thread of its own while it is on."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []

    @contextlib.contextmanager
    def on(self) -> Any:
        import threading

        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        result: list[float] = []

        def run() -> None:
            result.extend(loop.run_until_complete(sample_health(self.url, stop)))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=30)
            loop.close()
            self.samples.extend(result)


def bench(mode: str, args: argparse.Namespace, base_files: list[bytes], bare_base: str) -> dict[str, Any]:
    """One mode: idle turns, then turns while the files are ingested; the report."""
    with tempfile.TemporaryDirectory(prefix="sc-weblat-") as tmp_name:
        tmp = Path(tmp_name)
        staged = write_files(tmp / "staging", base_files, args.files)
        inbox = tmp / "home" / "inbox"
        inbox.mkdir(parents=True)
        with stridecare(mode, tmp, args.redis_db, ingest=True) as served:
            base, db_url = served.base, served.db_url
            turns = Turns(bare_base + "/strava/webhook", base + "/strava/webhook", 20, 5)
            turns.round(owner_base=900)  # warm-up
            turns.events, turns.clients = args.events, args.clients
            idle = Turns(turns.bare_url, turns.url, args.events, args.clients)

            def say(text: str) -> None:
                if not args.json:
                    print(text, flush=True)

            say(f"{mode}: {args.events} POSTs from {args.clients} clients a round, bare app and stridecare by turns")
            for r in range(args.idle_rounds):
                say(line(f"idle, round {r + 1}", idle.round(owner_base=100 + 10 * r)))
            busy = Turns(turns.bare_url, turns.url, args.events, args.clients)
            health = HealthSampler(base + "/healthz")
            for path in reversed(staged):  # newest first: fit_shift moved copy i forward by i + 1 days
                os.replace(path, inbox / path.name)
            dropped = time.perf_counter()
            r = 0
            while True:
                with health.on():
                    row = busy.round(owner_base=500 + 10 * r)
                stored = count_runs(db_url)
                say(line(f"ingesting, round {r + 1}", row) + f" | runs stored {stored}")
                r += 1
                if stored >= args.files or time.perf_counter() - dropped > 900:
                    break
            ingest_s = time.perf_counter() - dropped
            stored = count_runs(db_url)
    report = {
        "mode": mode,
        "files": args.files,
        "events_per_round": args.events,
        "clients": args.clients,
        "idle": idle.pooled(),
        "idle_rounds": idle.rounds,
        "under_ingest": busy.pooled(),
        "ingest_rounds": busy.rounds,
        "healthz_under_ingest": summary(health.samples, []),
        "runs_stored_when_load_ended": stored,
        "ingest_seconds": round(ingest_s, 1),
    }
    if not args.json:
        print(line("idle, all rounds", report["idle"]))
        print(line("ingesting, all rounds", report["under_ingest"]))
        h = report["healthz_under_ingest"]
        print(f"  /healthz under ingest     n={h['n']} p50 {h['p50_ms']} ms p99 {h['p99_ms']} ms max {h['max_ms']} ms")
        print(f"  {args.files} files: {stored} runs stored {ingest_s:.1f} s after the drop, {r} rounds under ingest")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "distributed", "both"], default="both")
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--idle-rounds", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database number used (flushed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base_files = device_runs(args.corpus)
    if not base_files:
        sys.exit(f"no device runs found in {args.corpus}")
    if not args.json:
        print(f"{len(base_files)} real device runs from {args.corpus}, moved in time into {args.files} files")
    modes = ["embedded", "distributed"] if args.mode == "both" else [args.mode]
    with bare_server() as bare_base:
        reports = [bench(mode, args, base_files, bare_base) for mode in modes]
    if args.json:
        print(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
