"""End-to-end latency, throughput and worker memory of the distributed deployment (and the embedded one).

Measures, with real processes as docker-compose.yml runs them (Celery worker, beat, watcher, web) on the local
Redis and PostgreSQL (a database created for the run and dropped afterwards):

1. FIT file landing (rename into the inbox) → signed webhook received, p50/p95 over ``--files`` files dropped one
   at a time, next to each file's bare parse time (``FitSource().decode``): is p95 ≤ parse + 1 s? Once with the
   default settings, once with a short settle time, and for ``stridecare run`` (embedded, SQLite) with defaults.
2. Strava push event (POST to our ``/strava/webhook``, activity served by tests/fake_strava.py) → webhook
   received, p50/p95.
3. Runs per second with one, two and three worker processes (``--throughput-files`` dropped at once, time until
   all are stored).
4. Peak memory (VmHWM) of each worker process (Celery main process and its pool child) after (3).

Run from the repository root: ``.venv/bin/python bench/bench_latency.py [--files 30] [--json]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fitgen import write_activity  # noqa: E402
from harness import (  # noqa: E402
    Proc,
    WebhookReceiver,
    celery_beat,
    celery_worker,
    processes,
    settings_env,
    stridecare,
    wait_for,
)
from sqlalchemy import func, select  # noqa: E402

from stridecare.crypto import new_webhook_secret  # noqa: E402
from stridecare.db.models import Athlete, ImportedFile  # noqa: E402
from stridecare.runtime import Runtime  # noqa: E402
from stridecare.settings import Settings  # noqa: E402

REDIS = os.environ.get("STRIDECARE_TEST_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN = os.environ.get("STRIDECARE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FERNET_KEY = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="
COMMAND = "python bench/bench_latency.py"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))]


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards."""
    import psycopg

    name = f"sc_bench_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_db(number: int) -> Iterator[str]:
    """A Redis database number of our own, flushed before and after."""
    import redis

    url = f"{REDIS}/{number}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def make_settings(home: Path, names: list[str], **values: Any) -> Settings:
    base: dict[str, Any] = {
        "data_home": home / "home",
        "inboxes": [f"{n}={home / 'inbox' / n}" for n in names],
        "encryption_keys": [FERNET_KEY],
        "secret_key": "bench-signing-key",
        "webhook_allowed_networks": ["127.0.0.0/8"],
        "web_port": free_port(),
    }
    base.update(values)
    return Settings(**base)


def _hook_only(rt: Runtime, url: str, secret: str) -> dict[str, Any]:
    """Channel settings (stridecare.plugins' stored form): the webhook, and the console off."""
    return {"webhook": {"url": url, "secret": rt.vault.encrypt(secret)}, "console": {"enabled": False}}


def seed(rt: Runtime, names: list[str], hook: WebhookReceiver, secret: str) -> None:
    """One athlete per file: the planner gives one post-run prompt per athlete and day."""
    with rt.db.transaction() as s:
        for name in names:
            s.add(Athlete(name=name, channel_settings=_hook_only(rt, hook.url, secret)))


def stage(folder: Path, count: int, minutes: int) -> list[Path]:
    """``count`` fresh runs (ended within the last hour, so each gets a post-run prompt)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    paths = []
    for i in range(count):
        path = folder / f"run{i:03d}.fit"
        start = now - timedelta(minutes=minutes + 30) + timedelta(seconds=i)
        write_activity(path, start=start, duration_s=minutes * 60, speed_mps=3.0 + 0.05 * (i % 5))
        paths.append(path)
    return paths


def parse_time(path: Path) -> float:
    """Bare decode of one file, as the worker does it (hash included)."""
    from ingest.fit import FitSource

    t0 = time.perf_counter()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    FitSource().decode(path, digest)
    return time.perf_counter() - t0


def ingested(rt: Runtime) -> int:
    with rt.db.transaction() as s:
        query = select(func.count()).select_from(ImportedFile).where(ImportedFile.status == "ingested")
        return int(s.scalar(query) or 0)


def _says_ready(proc: Proc) -> bool:
    # `stridecare run` logs its own way: its worker banner lists the tasks once it is consuming.
    return "ready." in proc.output() or (proc.name == "run" and "[tasks]" in proc.output())


def _received(hook: WebhookReceiver, at_least: int) -> bool:
    return len(hook.payloads()) >= at_least


def _ready(procs: list[Proc], settings: Settings, embedded: bool) -> None:
    # The Celery workers (or the one embedded process) print "ready." once they consume.
    for p in procs:
        if p.name.startswith("worker") or embedded:
            wait_for(partial(_says_ready, p), timeout=60, what=f"{p.name} ready")
    time.sleep(1.5)  # the watcher's first rescan


def fit_latency(mode: str, count: int, minutes: int, settle: float, relay: float, work: Path) -> dict[str, Any]:
    """Drop files one at a time; for each, the time from the rename to the webhook, and its bare parse time."""
    names = [f"f{i:03d}" for i in range(count)]
    secret = new_webhook_secret()
    hook = WebhookReceiver(secret=secret).start()
    home = work / f"fit-{mode}-{settle}"
    files = stage(home / "staging", count, minutes)
    parse = [parse_time(p) for p in files]
    with ExitStack() as stack:
        extra: dict[str, Any] = {"settle_seconds": settle, "relay_interval_s": relay}
        if mode == "celery":
            extra["database_url"] = stack.enter_context(pg_database())
            extra["broker_url"] = stack.enter_context(redis_db(14))
        settings = make_settings(home, names, **extra)
        rt = Runtime.open(settings)
        seed(rt, names, hook, secret)
        env = settings_env(settings)
        logs = home / "logs"
        if mode == "celery":
            procs = [
                celery_worker("worker", env, logs),
                celery_beat("beat", env, logs),
                stridecare("watcher", ["watch"], env, logs),
            ]
        else:
            procs = [stridecare("run", ["run"], env, logs)]
        stack.enter_context(processes(*procs))
        stack.callback(hook.stop)
        _ready(procs, settings, mode == "embedded")
        inboxes = dict(settings.inbox_map())
        latencies: list[float] = []
        for i, (name, path) in enumerate(zip(names, files, strict=True)):
            inboxes[name].mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            path.rename(inboxes[name] / path.name)
            wait_for(partial(_received, hook, i + 1), timeout=60, interval=0.005, what=f"webhook {i}")
            latencies.append(time.perf_counter() - t0)
        rt.close()
    return summary(f"FIT→webhook, {mode}, settle {settle} s, relay {relay} s", latencies, parse)


def summary(label: str, latencies: list[float], parse: list[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "what": label,
        "n": len(latencies),
        "p50_s": round(pct(latencies, 50), 3),
        "p95_s": round(pct(latencies, 95), 3),
        "max_s": round(max(latencies), 3),
    }
    if parse:
        out["parse_p50_s"] = round(pct(parse, 50), 3)
        out["parse_p95_s"] = round(pct(parse, 95), 3)
        out["p95_within_parse_plus_1s"] = pct(latencies, 95) <= pct(parse, 95) + 1.0
    return out


def strava_latency(count: int, settle: float, relay: float, work: Path) -> dict[str, Any]:
    """POST a push event per new activity to our web app; time until the prompt's webhook arrives."""
    import httpx
    from fake_strava import FakeClock, add_stridecare_athlete, connect_account, make_activity, running

    names = [f"s{i:03d}" for i in range(count)]
    secret = new_webhook_secret()
    hook = WebhookReceiver(secret=secret).start()
    home = work / "strava"
    with ExitStack() as stack:
        fake = stack.enter_context(running(clock=FakeClock(datetime.now(UTC).replace(microsecond=0))))
        settings = make_settings(
            home,
            names[:1],
            database_url=stack.enter_context(pg_database()),
            broker_url=stack.enter_context(redis_db(15)),
            settle_seconds=settle,
            relay_interval_s=relay,
            strava_client_id=str(fake.client_id),
            strava_client_secret=fake.client_secret,
            strava_base_url=fake.base_url,
            strava_verify_token="bench-verify",
            strava_subscription_id=1001,
        )
        rt = Runtime.open(settings)
        for i, name in enumerate(names):
            strava_id = 7000 + i
            fake.add_athlete(strava_id)
            fake.authorize_athlete_id = strava_id  # who logs in at the fake's authorize page
            athlete_id = add_stridecare_athlete(rt.db, name)
            connect_account(rt.db, settings, fake, athlete_id, rt.now())
            with rt.db.transaction() as s:
                athlete = s.get(Athlete, athlete_id)
                assert athlete is not None
                athlete.channel_settings = _hook_only(rt, hook.url, secret)
        env = settings_env(settings)
        logs = home / "logs"
        procs = [
            celery_worker("worker", env, logs),
            celery_beat("beat", env, logs),
            stridecare("web", ["web"], env, logs),
        ]
        stack.enter_context(processes(*procs))
        stack.callback(hook.stop)
        _ready(procs, settings, False)
        url = f"http://127.0.0.1:{settings.web_port}/strava/webhook"
        wait_for(lambda: _up(f"http://127.0.0.1:{settings.web_port}/healthz"), timeout=30, what="web app")
        # Let the beat's first backfills (history import of each new account) finish before timing.
        time.sleep(5)
        before = len(hook.payloads())
        latencies: list[float] = []
        for i in range(count):
            activity_id = 9_100_000 + i
            started = fake.clock.now() - timedelta(hours=1)
            fake.add_activity(7000 + i, make_activity(activity_id, started, athlete_id=7000 + i))
            body = {
                "object_type": "activity",
                "object_id": activity_id,
                "aspect_type": "create",
                "owner_id": 7000 + i,
                "subscription_id": 1001,
                "event_time": int(time.time()),
                "updates": {},
            }
            t0 = time.perf_counter()
            resp = httpx.post(url, json=body, timeout=10)
            assert resp.status_code == 200, resp.text
            target = before + i + 1
            wait_for(partial(_received, hook, target), timeout=60, interval=0.005, what=f"strava {i}")
            latencies.append(time.perf_counter() - t0)
        rt.close()
    return summary("Strava push event→webhook, 1 worker", latencies)


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_pids(proc: Proc) -> list[int]:
    """The Celery main process and its pool children."""
    pids = [proc.popen.pid]
    children = Path(f"/proc/{proc.popen.pid}/task/{proc.popen.pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    return pids


def throughput(workers: int, count: int, minutes: int, work: Path, files: list[Path]) -> dict[str, Any]:
    """Drop ``count`` files at once; runs per second until all are stored; peak memory of each worker."""
    home = work / f"tp-{workers}"
    with ExitStack() as stack:
        settings = make_settings(
            home,
            ["me"],
            database_url=stack.enter_context(pg_database()),
            broker_url=stack.enter_context(redis_db(14)),
            settle_seconds=0.2,
            relay_interval_s=1.0,
        )
        rt = Runtime.open(settings)
        env = settings_env(settings)
        logs = home / "logs"
        ws = [celery_worker(f"worker{i}", env, logs) for i in range(workers)]
        procs = [*ws, celery_beat("beat", env, logs), stridecare("watcher", ["watch"], env, logs)]
        stack.enter_context(processes(*procs))
        _ready(procs, settings, False)
        inbox = settings.inbox_map()[0][1]
        inbox.mkdir(parents=True, exist_ok=True)
        staging = home / "staging"
        staging.mkdir(parents=True)
        copies = []
        for i, src in enumerate(files[:count]):
            dst = staging / f"tp{i:03d}.fit"
            shutil.copy(src, dst)
            copies.append(dst)
        t0 = time.perf_counter()
        for path in copies:
            path.rename(inbox / path.name)
        wait_for(lambda: ingested(rt) == count, timeout=600, interval=0.05, what="every file stored")
        elapsed = time.perf_counter() - t0
        memory = [round(vm_hwm_mb(pid), 1) for w in ws for pid in worker_pids(w)]
        rt.close()
    return {
        "what": f"throughput, {workers} worker(s) × concurrency 1",
        "files": count,
        "elapsed_s": round(elapsed, 2),
        "runs_per_s": round(count / elapsed, 2),
        "worker_vmhwm_mb": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=30, help="files per latency series")
    parser.add_argument("--minutes", type=int, default=45, help="duration of each generated run")
    parser.add_argument("--strava-events", type=int, default=10)
    parser.add_argument("--throughput-files", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sc-latency-") as tmp:
        work = Path(tmp)
        series: list[Callable[[], dict[str, Any]]] = [
            lambda: fit_latency("celery", args.files, args.minutes, 2.0, 5.0, work),
            lambda: fit_latency("celery", args.files, args.minutes, 0.2, 5.0, work),
            lambda: fit_latency("embedded", args.files, args.minutes, 2.0, 5.0, work),
            lambda: strava_latency(args.strava_events, 2.0, 5.0, work),
        ]
        for run in series:
            results.append(run())
            print(json.dumps(results[-1]), flush=True)
        files = stage(work / "tp-source", args.throughput_files, args.minutes)
        for workers in (1, 2, 3):
            results.append(throughput(workers, args.throughput_files, args.minutes, work, files))
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"\ncommand: .venv/bin/{COMMAND} --files {args.files} --minutes {args.minutes} "
        f"--strava-events {args.strava_events} --throughput-files {args.throughput_files}"
    )
    print(f"cpus: {os.cpu_count()}")
    for r in results:
        print(" | ".join(f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
