"""Strava webhook intake under load: our web app (uvicorn, loopback) taking event POSTs from many clients.

Run from the repository root: ``.venv/bin/python bench/bench_strava_webhook.py [--db sqlite|postgres]``.
It starts ``stridecare web`` as a subprocess (its own interpreter, so the load generator does not share its
GIL) with the broker on the local Redis, so every new event is really enqueued as a Celery task. Then it
fires ``--events`` distinct event POSTs from ``--clients`` concurrent httpx clients and reports latency
percentiles and errors, and checks that every event was stored once and enqueued once. Strava wants a 200
within 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FERNET_KEY = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="
SUBSCRIPTION_ID = 4711
REDIS = os.environ.get("STRIDECARE_TEST_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN = os.environ.get("STRIDECARE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(
    args: list[str], env: dict[str, str], health_url: str, *, start_timeout: float = 30.0, stop_timeout: float = 15.0
) -> Iterator[None]:
    """``stridecare ARGS`` as a child process, entered once ``health_url`` answers 200, stopped on leaving."""
    # The server's log goes to a file: a pipe nobody reads would block the server once its buffer is full.
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "stridecare"), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    if httpx.get(health_url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    detail = log.read().decode(errors="replace")[-2000:]
                    raise SystemExit(f"stridecare {args[0]} did not start: {detail}")
                time.sleep(0.1)
            yield
        finally:
            server.terminate()
            try:
                server.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                server.kill()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def make_pg_database() -> tuple[str, str]:
    import psycopg

    name = f"sc_bench_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name


def drop_pg_database(name: str) -> None:
    import psycopg

    admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def fire(url: str, events: int, clients: int, owner_base: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    next_index = 0
    now = int(time.time())

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < events:
            i = next_index
            next_index += 1
            body = {
                "object_type": "activity",
                "object_id": 10_000_000 + i,
                "aspect_type": "create",
                "owner_id": owner_base + i % 10,
                "subscription_id": SUBSCRIPTION_ID,
                "event_time": now + i,
                "updates": {},
            }
            started = time.perf_counter()
            try:
                resp = await client.post(url, json=body)
                if resp.status_code != 200:
                    errors.append(f"HTTP {resp.status_code}")
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
            latencies.append(time.perf_counter() - started)

    # One connection per simulated client (Strava opens its own connections).
    async with asyncio.TaskGroup() as group:
        for _ in range(clients):
            client = httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=1))
            group.create_task(_with_client(client, client_loop))
    return latencies, errors


async def _with_client(client: httpx.AsyncClient, loop: Any) -> None:
    async with client:
        await loop(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database number used (flushed)")
    args = parser.parse_args()

    import redis

    broker = f"{REDIS}/{args.redis_db}"
    r = redis.Redis.from_url(broker)
    r.flushdb()
    pg_name = None
    with tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        if args.db == "postgres":
            db_url, pg_name = make_pg_database()
        else:
            db_url = f"sqlite:///{tmp}/bench.db"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
        env.update(
            {
                "STRIDECARE_DATA_HOME": tmp,
                "STRIDECARE_DATABASE_URL": db_url,
                "STRIDECARE_BROKER_URL": broker,
                "STRIDECARE_ENCRYPTION_KEYS": FERNET_KEY,
                "STRIDECARE_SECRET_KEY": "bench-signing-key",
                "STRIDECARE_STRAVA_SUBSCRIPTION_ID": str(SUBSCRIPTION_ID),
                "STRIDECARE_LOG_LEVEL": "WARNING",
            }
        )
        base = f"http://127.0.0.1:{port}"
        with serving(["web", "--host", "127.0.0.1", "--port", f"{port}"], env, base + "/healthz"):
            url = base + "/strava/webhook"
            # Warm-up: connections, the Celery producer, SQLite's first writes.
            asyncio.run(fire(url, 20, 5, owner_base=900))
            r.flushdb()
            started = time.perf_counter()
            latencies, errors = asyncio.run(fire(url, args.events, args.clients, owner_base=100))
            elapsed = time.perf_counter() - started
        from sqlalchemy import create_engine, text

        engine = create_engine(db_url)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM strava_events")).scalar_one()
        engine.dispose()
        queued = r.llen("celery")
        r.flushdb()
        if pg_name:
            drop_pg_database(pg_name)
    ms = [x * 1000 for x in latencies]
    report = {
        "db": args.db,
        "events": args.events,
        "clients": args.clients,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(args.events / elapsed, 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
        "over_2s": sum(1 for x in ms if x > 2000),
        "stored_events": int(stored) - 20,  # minus the warm-up
        "enqueued_tasks": int(queued),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
