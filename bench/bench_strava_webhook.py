"""Strava webhook intake under load: our web app (uvicorn, loopback) taking event POSTs from many clients,
against a bare Starlette app on uvicorn answering 200 to the same POSTs, measured in turns in the same run.

Run from the repository root: ``.venv/bin/python bench/bench_strava_webhook.py [--mode embedded|distributed|both]``.

* ``embedded``: ``stridecare run`` (SQLite database, SQLite broker, the worker, beat and web app in one process);
* ``distributed``: ``stridecare web`` on PostgreSQL with the broker on the local Redis, and one Celery worker
  process draining the events.

Each is its own interpreter (the load generator does not share its GIL), as is the bare app. Rounds of
``--events`` distinct event POSTs from ``--clients`` concurrent httpx clients go to the bare app and to
stridecare in turn; percentiles, the ratio of stridecare's p99 to the bare app's, and ``os.getloadavg()`` are
printed per round and over all rounds, and the bench checks that every event was stored once, and counts the
broker messages (drain nudges) the intake caused. Strava wants a 200 within 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from dataclasses import dataclass
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


# -- the bare app: what uvicorn and Starlette alone cost for the same POST ---------------------------------------


def bare_app() -> Any:
    """A Starlette app answering the event POST as stridecare does, without storing anything."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def receive(request: Request) -> JSONResponse:
        json.loads(await request.body())
        return JSONResponse({"status": "ok"})

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/strava/webhook", receive, methods=["POST"]), Route("/healthz", healthz)])


def serve_bare(port: int) -> None:
    """Serve :func:`bare_app` with the uvicorn settings stridecare's web app is served with."""
    import uvicorn

    from stridecare_app.web.server import uvicorn_config

    uvicorn.Server(uvicorn_config(bare_app(), "127.0.0.1", port, log_level="warning")).run()


@contextmanager
def bare_server() -> Iterator[str]:
    """The bare app in a process of its own; its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the bare app did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def child(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (its log kept in a file: a pipe nobody reads would block it), stopped on leaving."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


CELERY = [sys.executable, "-m", "celery", "-A", "workers.app"]
QUIET = ["--loglevel=WARNING"]


@contextmanager
def worker_process(env: dict[str, str], log_path: Path) -> Iterator[None]:
    """One Celery worker process as docker-compose runs it (prefork, two children): it drains the events
    table on the drain nudges and ingests the watcher's files. Its log (INFO: a line per task received) goes
    to ``log_path``."""
    args = [*CELERY, "worker", "--concurrency=2", "--loglevel=INFO"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*args, "--without-heartbeat", "--without-gossip", "--without-mingle"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def summary(latencies: list[float], errors: list[str]) -> dict[str, Any]:
    """Percentiles of a list of latencies (seconds) in ms, errors, and the 2 s count."""
    ms = [x * 1000 for x in latencies]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
        "over_2s": sum(1 for x in ms if x > 2000),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }


class Turns:
    """Rounds fired in turn at the bare app and at stridecare, with the load average beside each."""

    def __init__(self, bare_url: str, url: str, events: int, clients: int) -> None:
        self.bare_url, self.url, self.events, self.clients = bare_url, url, events, clients
        self.rounds: list[dict[str, Any]] = []
        self.all: dict[str, tuple[list[float], list[str]]] = {"bare": ([], []), "stridecare": ([], [])}
        self.sent = 0

    def round(self, owner_base: int, label: str = "") -> dict[str, Any]:
        """One bare round then one stridecare round; their figures and the ratio of the p99s."""
        row: dict[str, Any] = {"label": label}
        for name, url in (("bare", self.bare_url), ("stridecare", self.url)):
            load = os.getloadavg()[0]
            latencies, errors = asyncio.run(fire(url, self.events, self.clients, owner_base=owner_base))
            if name == "stridecare":
                self.sent += self.events
            self.all[name][0].extend(latencies)
            self.all[name][1].extend(errors)
            row[name] = summary(latencies, errors) | {"load": round(load, 2)}
        row["p99_ratio"] = round(row["stridecare"]["p99_ms"] / row["bare"]["p99_ms"], 2)
        self.rounds.append(row)
        return row

    def pooled(self) -> dict[str, Any]:
        bare, ours = summary(*self.all["bare"]), summary(*self.all["stridecare"])
        return {"bare": bare, "stridecare": ours, "p99_ratio": round(ours["p99_ms"] / bare["p99_ms"], 2)}


def line(label: str, row: dict[str, Any]) -> str:
    """One printed line: stridecare's figures, the bare app's, the ratio and the load."""
    s, b = row["stridecare"], row["bare"]
    return (
        f"  {label:<24} stridecare p50 {s['p50_ms']:6.1f} p99 {s['p99_ms']:7.1f} max {s['max_ms']:7.1f} ms "
        f"| bare p50 {b['p50_ms']:5.1f} p99 {b['p99_ms']:6.1f} ms | p99 {row['p99_ratio']:5.2f}x bare "
        f"| >2 s {s['over_2s']} errors {s['errors']} {s['error_kinds']} "
        f"| load {s.get('load', os.getloadavg()[0]):.2f}"
    )


def count_events(db_url: str) -> tuple[int, int]:
    """Events stored, and of them those the workers have processed."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM strava_events")).scalar_one()
            pending = conn.execute(
                text("SELECT count(*) FROM strava_events WHERE status IN ('pending', 'processing')")
            ).scalar_one()
    finally:
        engine.dispose()
    return int(stored), int(stored) - int(pending)


class NudgeCounter:
    """Counts the drain nudges the broker carried: on Redis, the tasks the worker's log says it received; on the
    SQLite queue, the messages sent, through a trigger into a table of its own (the worker deletes each message
    it takes)."""

    def __init__(self, broker: str, worker_log: Path) -> None:
        self.broker = broker
        self.worker_log = worker_log
        self._before = 0

    def _received(self) -> int:
        if not self.worker_log.exists():
            return 0
        text_ = self.worker_log.read_text(errors="replace")
        return sum(1 for row in text_.splitlines() if "stridecare.strava_drain[" in row and "eceived" in row)

    def start(self) -> None:
        if self.broker.startswith("redis"):
            self._before = self._received()
            return
        import sqlite3

        path = self.broker.removeprefix("sqla+sqlite:///")
        with sqlite3.connect(path, timeout=30) as lite:
            lite.execute("CREATE TABLE IF NOT EXISTS bench_sent (payload TEXT)")
            lite.execute(
                "CREATE TRIGGER IF NOT EXISTS bench_count AFTER INSERT ON kombu_message "
                "BEGIN INSERT INTO bench_sent VALUES (NEW.payload); END"
            )

    def stop(self) -> int:
        if self.broker.startswith("redis"):
            return self._received() - self._before
        import sqlite3

        path = self.broker.removeprefix("sqla+sqlite:///")
        with sqlite3.connect(path, timeout=30) as lite:
            row = lite.execute("SELECT count(*) FROM bench_sent WHERE payload LIKE '%stridecare.strava_drain%'")
            return int(row.fetchone()[0])


@dataclass(frozen=True)
class Served:
    """A running stridecare: where it answers, its database and broker, its environment, its worker's log."""

    base: str
    db_url: str
    broker: str
    env: dict[str, str]
    worker_log: Path


@contextmanager
def stridecare(mode: str, tmp: Path, redis_db: int, *, ingest: bool = False, **extra: str) -> Iterator[Served]:
    """stridecare serving in ``mode``: its base URL, database URL, broker URL and environment. Distributed
    with ``ingest``, the beat and the folder watcher run as well (embedded, ``stridecare run`` has both)."""
    pg_name = None
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
    home = tmp / "home"
    env.update(
        {
            "STRIDECARE_DATA_HOME": str(home),
            "STRIDECARE_ENCRYPTION_KEYS": FERNET_KEY,
            "STRIDECARE_SECRET_KEY": "bench-signing-key",
            "STRIDECARE_STRAVA_SUBSCRIPTION_ID": str(SUBSCRIPTION_ID),
            "STRIDECARE_LOG_LEVEL": "WARNING",
            "STRIDECARE_WEB_PORT": str(port),
            "STRIDECARE_DEFAULT_ATHLETE": "me",
        }
    )
    env.update(extra)
    base = f"http://127.0.0.1:{port}"
    try:
        if mode == "distributed":
            import redis

            broker = f"{REDIS}/{redis_db}"
            redis.Redis.from_url(broker).flushdb()
            db_url, pg_name = make_pg_database()
            env.update({"STRIDECARE_DATABASE_URL": db_url, "STRIDECARE_BROKER_URL": broker})
            stridecare_bin = str(Path(sys.executable).parent / "stridecare")
            subprocess.run(
                [stridecare_bin, "migrate"],
                cwd=ROOT,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            with contextlib.ExitStack() as stack:
                stack.enter_context(worker_process(env, tmp / "worker.log"))
                if ingest:
                    stack.enter_context(child([*CELERY, "beat", *QUIET, "-s", str(tmp / "beat-schedule")], env))
                    stack.enter_context(child([stridecare_bin, "watch"], env))
                stack.enter_context(
                    serving(["web", "--host", "127.0.0.1", "--port", f"{port}"], env, base + "/healthz")
                )
                yield Served(base, db_url, broker, env, tmp / "worker.log")
        else:
            db_url = f"sqlite:///{home}/stridecare.db"
            broker = f"sqla+sqlite:///{home}/broker.db"
            with serving(["run"], env, base + "/healthz", start_timeout=60, stop_timeout=30):
                yield Served(base, db_url, broker, env, tmp / "worker.log")
    finally:
        if pg_name:
            drop_pg_database(pg_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "distributed", "both"], default="both")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database number used (flushed)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    modes = ["embedded", "distributed"] if args.mode == "both" else [args.mode]
    reports = []
    with bare_server() as bare_base:
        for mode in modes:
            with (
                tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp,
                stridecare(mode, Path(tmp), args.redis_db) as served,
            ):
                turns = Turns(bare_base + "/strava/webhook", served.base + "/strava/webhook", args.events, args.clients)
                turns.events, turns.clients = 20, 5
                turns.round(owner_base=900)  # warm-up: connections, the Celery producer, first writes
                turns.events, turns.clients = args.events, args.clients
                turns.rounds.clear()
                turns.sent = 0
                turns.all = {"bare": ([], []), "stridecare": ([], [])}
                counter = NudgeCounter(served.broker, served.worker_log)
                counter.start()
                warm = count_events(served.db_url)[0]
                if not args.json:
                    print(f"{mode}: {args.events} event POSTs from {args.clients} clients a round, in turns")
                for r in range(args.rounds):
                    row = turns.round(owner_base=100 + 10 * r, label=f"round {r + 1}")
                    if not args.json:
                        print(line(row["label"], row))
                time.sleep(1.0)  # the last nudge's messages
                messages = counter.stop()
                stored, processed = count_events(served.db_url)
                pooled = turns.pooled()
                report = {
                    "mode": mode,
                    "events_per_round": args.events,
                    "clients": args.clients,
                    "rounds": turns.rounds,
                    "all": pooled,
                    "stored_events": stored - warm,
                    "sent_events": turns.sent,
                    "processed_when_load_ended": processed - warm,
                    "broker_messages_during_load": messages,
                }
                reports.append(report)
                if not args.json:
                    print(
                        line(
                            "all rounds",
                            pooled | {"stridecare": pooled["stridecare"] | {"load": os.getloadavg()[0]}},
                        )
                    )
                    print(
                        f"  stored {stored - warm} of {turns.sent} events sent, {processed - warm} processed when "
                        f"the load ended; {messages} broker messages (drain nudges) for them"
                    )
    if args.json:
        print(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
