"""A forged Strava event flood: what it costs in API calls, and how long a real run sent during it takes to arrive.

Run from the repository root: ``.venv/bin/python bench/bench_strava_flood.py [--interval 120] [--events 150]``.

Everything runs on the wall clock: the fake Strava (tests/fake_strava.py, loopback, Strava's default limits of
100 reads per 15 minutes) serves one connected athlete; our web app (uvicorn on loopback) takes the events; two
worker threads process what it enqueues (as a Celery worker of concurrency 2 would) and a beat thread runs the
periodic sweep every ``relay_interval_s`` (5 s, the default). ``--events`` unsigned ``create`` events for
activity ids that do not exist are POSTed by 8 concurrent clients; half-way through, the athlete saves a real
run and Strava sends its ``create`` event. Reported: Strava API requests by endpoint until every event is
finished, the list requests' spacing, and the seconds from the real event's POST to its run being stored.
The issue's measurement before this change: 97–98 API calls and 1,131 s for the real run ("Strava budget:
blocked after a 429").
"""

from __future__ import annotations

import argparse
import itertools
import json
import queue
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_strava import FakeClock, add_stridecare_athlete, connect_account, make_activity, running  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from ingest.strava.events import process_event, sweep  # noqa: E402
from recommender.planner import replan  # noqa: E402
from stridecare.db.models import Run, StravaEvent  # noqa: E402
from stridecare.runtime import Runtime  # noqa: E402
from stridecare.settings import Settings  # noqa: E402
from stridecare_app.web.app import create_app  # noqa: E402

FERNET_KEY = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="
STRAVA_ID = 8180
SUB_ID = 1001
REAL_ID = 4_000_001


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def measure(interval_s: int, events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, running(clock=FakeClock(datetime.now(UTC))) as fake:
        fake.add_athlete(STRAVA_ID)
        port = free_port()
        settings = Settings(
            data_home=Path(tmp) / "home",
            encryption_keys=[FERNET_KEY],
            secret_key="bench-signing-key",
            web_port=port,
            strava_client_id=str(fake.client_id),
            strava_client_secret=fake.client_secret,
            strava_base_url=fake.base_url,
            strava_subscription_id=SUB_ID,
            strava_list_interval_s=interval_s,
        )
        rt = Runtime.open(settings)
        connect_account(rt.db, rt.settings, fake, add_stridecare_athlete(rt.db, "me"), rt.now())
        broker: queue.Queue[int | None] = queue.Queue()
        stop = threading.Event()

        def worker() -> None:
            while (event_id := broker.get()) is not None:
                outcome = process_event(rt, event_id)
                if outcome.replan_athlete is not None:  # as the event task ends
                    replan(rt.db, rt.settings, outcome.replan_athlete, rt.now())

        def beat() -> None:
            while not stop.wait(rt.settings.relay_interval_s):
                sweep(rt, enqueue_event=broker.put, enqueue_backfill=lambda _id: None)

        def wall_clock() -> None:
            # The fake's request log and windows on the wall clock too, so the list requests' spacing is real.
            while not stop.wait(0.05):
                fake.clock.set(datetime.now(UTC))

        server = uvicorn.Server(
            uvicorn.Config(create_app(rt, enqueue=broker.put), host="127.0.0.1", port=port, log_level="warning")
        )
        threads = [threading.Thread(target=server.run, daemon=True)]
        threads += [threading.Thread(target=worker, daemon=True) for _ in range(2)]
        threads.append(threading.Thread(target=beat, daemon=True))
        threads.append(threading.Thread(target=wall_clock, daemon=True))
        for t in threads:
            t.start()
        url = f"http://127.0.0.1:{port}/strava/webhook"
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        fake.reset_counts()

        def post(object_id: int) -> float:
            body = {
                "object_type": "activity",
                "object_id": object_id,
                "aspect_type": "create",
                "owner_id": STRAVA_ID,
                "subscription_id": SUB_ID,
                "event_time": int(time.time()),
                "updates": {},
            }
            started = time.perf_counter()
            httpx.post(url, json=body, timeout=10).raise_for_status()
            return time.perf_counter() - started

        forged = [9_000_000 + n for n in range(events)]
        latencies: list[float] = []
        flood_start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            latencies += pool.map(post, forged[: events // 2])
            fake.add_activity(
                STRAVA_ID, make_activity(REAL_ID, fake.clock.now() - timedelta(minutes=40), athlete_id=STRAVA_ID)
            )
            real_sent = time.monotonic()
            latencies.append(post(REAL_ID))
            latencies += pool.map(post, forged[events // 2 :])
        flood_s = time.monotonic() - flood_start
        real_arrived: float | None = None
        finished: float | None = None
        while time.monotonic() < real_sent + 3 * interval_s + 60:
            with rt.db.read() as s:
                stored = s.scalar(select(func.count()).select_from(Run).where(Run.source_key == str(REAL_ID)))
                open_events = s.scalar(
                    select(func.count())
                    .select_from(StravaEvent)
                    .where(StravaEvent.status.not_in(("done", "ignored", "failed")))
                )
            if stored and real_arrived is None:
                real_arrived = time.monotonic()
            if stored and not open_events:
                finished = time.monotonic()
                break
            time.sleep(0.2)
        stop.set()
        for _ in range(2):
            broker.put(None)
        server.should_exit = True
        with fake.lock:
            lists = [r.at for r in fake.requests if r.endpoint == "GET /api/v3/athlete/activities"]
        counts = dict(fake.counts())
        rt.close()
    latencies.sort()
    return {
        "interval_s": interval_s,
        "forged_events": events,
        "api_requests": sum(counts.values()),
        "api_requests_by_endpoint": counts,
        "429s": 0 if "429" not in json.dumps(counts) else -1,
        "list_requests_spacing_s": [round((b - a).total_seconds(), 1) for a, b in itertools.pairwise(lists)],
        "flood_post_s": round(flood_s, 2),
        "webhook_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "webhook_max_ms": round(1000 * latencies[-1], 1),
        "real_run_arrival_s": round(real_arrived - real_sent, 1) if real_arrived is not None else None,
        "all_events_finished_s": round(finished - flood_start, 1) if finished is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=int, nargs="+", default=[120], help="strava_list_interval_s values")
    parser.add_argument("--events", type=int, default=150)
    args = parser.parse_args()
    results = [measure(interval, args.events) for interval in args.interval]
    print(json.dumps(results, indent=2))
    for r in results:
        print(
            f"interval {r['interval_s']} s: {r['forged_events']} forged events cost {r['api_requests']} API requests "
            f"({r['api_requests_by_endpoint']}); the real run arrived {r['real_run_arrival_s']} s after its event "
            f"(before: 97-98 requests, 1,131 s)"
        )


if __name__ == "__main__":
    main()
