"""Fault tolerance of the distributed deployment, with real processes as docker-compose.yml runs them.

Two Celery workers on Redis and PostgreSQL, the folder watcher, the beat and the web app. While a batch of FIT
files is being ingested and delivered, a worker is SIGKILLed mid-ingest and another mid-delivery, Redis is
restarted with its data gone and PostgreSQL is restarted. Afterwards every run is stored once and every prompt
reaches a receiver that deduplicates on ``webhook-id`` exactly once, nothing missing — because SQL is the system
of record and the broker only says "look" (ARCHITECTURE.md).

Redis and PostgreSQL are private instances started here, so restarting them disturbs no other test.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from channel_settings import channel_settings
from conftest import make_settings
from factories import ingest_planned
from fitgen import write_activity
from harness import (
    Proc,
    WebhookReceiver,
    celery_beat,
    celery_worker,
    processes,
    settings_env,
    start,
    stridecare,
    wait_for,
)
from sqlalchemy import func, select

from stridecare.clock import write_clock_file
from stridecare.crypto import new_webhook_secret
from stridecare.db.models import Athlete, Delivery, ImportedFile, Prompt, Run
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from workers.queues import DELIVERY, QUEUES

pytestmark = pytest.mark.slow(longest=True)

# A Wednesday noon: no weekly balance prompt is due, and athletes without quiet hours get prompts at once.
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
# Two fresh runs per athlete on two different days: the planner gives one post-run prompt per athlete and day,
# so every file of the batch yields a prompt of its own.
RUN_STARTS = (NOW - timedelta(hours=22), NOW - timedelta(hours=4))


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- private servers -----------------------------------------------------------------------------------------


class PrivateRedis:
    """A throw-away ``redis-server`` without persistence: killing it loses every queued message."""

    def __init__(self, log_dir: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed on this machine")
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: Proc | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on the same port as before, empty."""
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = start("redis", [*args, "--daemonize", "no"], dict(os.environ), self.log_dir)
        wait_for(self._ping, timeout=15, interval=0.05, what="the private redis-server")

    def _ping(self) -> bool:
        import redis

        try:
            client = redis.Redis.from_url(self.url, socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def client(self) -> Any:
        """A redis-py client on the instance."""
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def restart_empty(self) -> None:
        """SIGKILL and start again: the data is gone (no RDB, no AOF)."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """Kill the server."""
        if self.proc is not None:
            self.proc.kill()
            self.proc = None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temporary directory, on a free port, trust authentication."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        found = shutil.which("pg_ctl")
        if bins:
            self.bin = Path(bins[-1]).parent
        elif found:
            self.bin = Path(found).parent
        else:
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed on this machine")
        self.port = free_port()
        # Not under pytest's tmp_path: the server may run as another user, who must reach the directory.
        self.dir = Path(tempfile.mkdtemp(prefix="sc-pg-"))
        self.data = self.dir / "data"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root: run them as the postgres user, who owns the directory.
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.dir, ignore_errors=True)
                pytest.skip("running as root and there is no 'postgres' user to run a private cluster as")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(self.data))

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self.prefix, str(self.bin / tool), *args], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {result.stdout}{result.stderr}")

    def _ctl(self, action: str, *extra: str) -> None:
        # fsync off: durability across a *clean* restart does not need it, and the test runs faster.
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        log = str(self.dir / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "-t", "60", *extra, action)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._ctl("start")

    def restart(self) -> None:
        """Stop (fast: open connections are cut, as in a real restart) and start again."""
        self._ctl("restart", "-m", "fast")

    def log(self) -> str:
        """The server's log."""
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def destroy(self) -> None:
        """Stop the server and delete the cluster."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):  # not running
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private Redis, killed afterwards."""
    server = PrivateRedis(tmp_path / "logs")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster, deleted afterwards."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


# -- a slow, deduplicating webhook receiver -------------------------------------------------------------------


@dataclass
class SlowReceiver(WebhookReceiver):
    """The harness receiver, which can answer slowly (so a worker can be killed while it waits for the answer)
    and tells which webhook-ids are being received right now."""

    delay_s: float = 1.0
    slow: threading.Event = field(default_factory=threading.Event)
    in_flight: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> SlowReceiver:
        """Listen like the harness receiver, with a delay before the request is read while ``slow`` is set."""
        super().start()
        assert self._server is not None
        base: Any = self._server.RequestHandlerClass
        receiver = self

        class Slow(base):  # type: ignore[misc]
            def do_POST(self) -> None:
                key = threading.get_ident()
                with receiver._lock:
                    receiver.in_flight[key] = self.headers.get("webhook-id", "")
                try:
                    if receiver.slow.is_set():
                        time.sleep(receiver.delay_s)
                    # Recorded as received even if the sender is gone by now: the receiver did process it.
                    super().do_POST()
                except OSError:
                    pass  # the sender died before reading the answer
                finally:
                    with receiver._lock:
                        receiver.in_flight.pop(key, None)

        self._server.RequestHandlerClass = Slow
        return self

    def busy_ids(self) -> list[str]:
        """webhook-ids of requests the receiver is handling now."""
        with self._lock:
            return list(self.in_flight.values())


# -- helpers ------------------------------------------------------------------------------------------------


def task_in_progress(proc: Proc, task: str) -> bool:
    """True when ``proc``'s log shows a ``task`` received and not finished (Celery logs both)."""
    received: set[str] = set()
    finished: set[str] = set()
    for line in proc.output().splitlines():
        marker = f"Task {task}["
        if marker not in line:
            continue
        task_id = line.split(marker, 1)[1].split("]", 1)[0]
        if line.rstrip().endswith("received"):
            received.add(task_id)
        elif " succeeded in " in line or " raised " in line or " failed" in line:
            finished.add(task_id)
    return bool(received - finished)


def seed_athletes(rt: Runtime, names: list[str], url: str, secret: str) -> None:
    """Athletes with a webhook (and no console), no quiet hours, UTC."""
    with rt.db.transaction() as s:
        for name in names:
            settings = channel_settings(rt.vault, webhook=url, webhook_secret=secret, console=False)
            s.add(Athlete(name=name, channel_settings=settings))


def _write_run(path: Path, start_at: datetime, minutes: int, speed: float) -> None:
    write_activity(path, start=start_at, duration_s=minutes * 60, speed_mps=speed, sample_interval_s=2)


def stage_batch(staging: Path, names: list[str], minutes: int) -> list[tuple[Path, str]]:
    """Two distinct fresh runs per athlete, written outside the inboxes: (file, athlete)."""
    staging.mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, str]] = []
    # Writing FIT files is slow pure Python: use every core.
    with ProcessPoolExecutor() as pool:
        jobs = []
        for i, name in enumerate(names):
            for j, day_start in enumerate(RUN_STARTS):
                path = staging / f"{name}-{j}.fit"
                speed = 3.0 + 0.1 * ((i + j) % 3)
                jobs.append(pool.submit(_write_run, path, day_start + timedelta(minutes=7 * i), minutes, speed))
                out.append((path, name))
        for job in jobs:
            job.result(timeout=120)
    return out


@dataclass(frozen=True)
class Stored:
    files: int
    runs: int
    source_keys: int
    post_run_ids: frozenset[str]
    deliveries: dict[str, int]


def stored(rt: Runtime) -> Stored:
    """What the database holds now."""
    with rt.db.transaction() as s:
        files = s.scalar(select(func.count()).select_from(ImportedFile).where(ImportedFile.status == "ingested"))
        runs = s.scalar(select(func.count()).select_from(Run))
        keys = s.scalar(select(func.count(func.distinct(Run.source_key))))
        ids = frozenset(s.scalars(select(Prompt.id).where(Prompt.kind == "post_run")))
        rows = s.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        states = {str(status): int(count) for status, count in rows}
    return Stored(int(files or 0), int(runs or 0), int(keys or 0), ids, states)


def safely(rt: Runtime) -> Stored | None:
    """``stored`` that tolerates the database being restarted right now."""
    try:
        return stored(rt)
    except Exception:
        return None


def received_prompt_ids(hook: WebhookReceiver) -> set[str]:
    return {str(p["data"]["prompt_id"]) for p in hook.payloads().values()}


def fault_settings(tmp_path: Path, names: list[str], pg: str, broker: str, clock: Path) -> Settings:
    """Fast timings so that recovery happens within seconds, not the production minutes."""
    return make_settings(
        tmp_path,
        database_url=pg,
        broker_url=broker,
        clock_file=clock,
        inboxes=[f"{n}={tmp_path / 'inbox' / n}" for n in names],
        webhook_allowed_networks=["127.0.0.0/8"],
        webhook_timeout_s=5.0,
        # Longer than one send attempt (timeout 5 s), so a live claim is never taken over.
        delivery_claim_s=8.0,
        redispatch_after_s=3.0,
        relay_interval_s=0.5,
        # A replan lost with Redis is finished by the tick after 5 s rather than the production 30 s.
        replan_stall_s=5.0,
        settle_seconds=0.3,
        rescan_interval_s=1.0,
        web_port=free_port(),
    )


# -- A: everything fails at once -----------------------------------------------------------------------------


def test_kills_and_restarts_lose_nothing_and_double_nothing(
    tmp_path: Path, private_redis: PrivateRedis, private_pg: PrivatePostgres
) -> None:
    names = [f"a{i}" for i in range(7)]
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, NOW)
    settings = fault_settings(tmp_path, names, private_pg.url, private_redis.url, clock)
    rt = Runtime.open(settings)
    secret = new_webhook_secret()
    hook = SlowReceiver(secret=secret).start()
    seed_athletes(rt, names, hook.url, secret)
    batch = stage_batch(tmp_path / "staging", names, minutes=60)
    n = len(batch)
    env = settings_env(settings)
    logs = tmp_path / "logs"
    w1 = celery_worker("worker1", env, logs)
    w2 = celery_worker("worker2", env, logs)
    procs = [
        w1,
        w2,
        celery_beat("beat", env, logs),
        stridecare("watcher", ["watch"], env, logs),
        stridecare("web", ["web"], env, logs),
    ]
    try:
        with ExitStack() as stack:
            # Processes started later join the stack: every one is stopped, and shown when the test fails.
            stack.enter_context(processes(*procs))
            for w in (w1, w2):
                wait_for(partial(_ready, w), timeout=60, what=f"{w.name} ready")
            inboxes = dict(settings.inbox_map())
            for path, athlete in batch:
                inboxes[athlete].mkdir(parents=True, exist_ok=True)
                path.rename(inboxes[athlete] / path.name)

            # 1. SIGKILL worker1 while it ingests a file.
            mid_ingest = partial(task_in_progress, w1, "stridecare.ingest_file")
            wait_for(mid_ingest, timeout=60, interval=0.02, what="worker1 mid-ingest")
            w1.kill()
            at_first_kill = stored(rt)
            assert at_first_kill.files < n, "the kill came too late to interrupt the batch"

            # 2. SIGKILL worker2 while the receiver holds one of its deliveries (sent, answer not yet read). It is
            # the only worker left, so whatever the receiver holds now is worker2's.
            hook.slow.set()
            wait_for(
                lambda: hook.busy_ids() and task_in_progress(w2, "stridecare.deliver"),
                timeout=90,
                interval=0.05,
                what="worker2 mid-delivery",
            )
            cut_off = hook.busy_ids()
            w2.kill()
            hook.slow.clear()

            # Files not stored by now are offered again by the watcher after the restarts below; when the workers
            # stored every file before the kills, what worker1b gets first is a delivery or the beat's tick.
            offered_again = "Task stridecare.ingest_file[" if stored(rt).files < n else "Task stridecare."

            # 3. Redis restarts empty: every queued ingest and delivery message is gone.
            before = private_redis.client()
            queued = sum(int(before.llen(q)) for q in QUEUES)
            run_id = before.info("server")["run_id"]
            private_redis.restart_empty()
            # A new server (the watcher and the beat may have queued new messages on it already).
            assert private_redis.client().info("server")["run_id"] != run_id

            # 4. worker1 comes back, and PostgreSQL restarts under it (and the watcher, beat and web app) while it
            # works through what the watcher and the beat offer again; then worker2 comes back.
            w1b = celery_worker("worker1b", env, logs)
            stack.enter_context(processes(w1b))
            wait_for(
                lambda: offered_again in w1b.output(),
                timeout=60,
                interval=0.02,
                what="worker1b working on what is offered again",
            )
            private_pg.restart()
            stack.enter_context(processes(celery_worker("worker2b", env, logs)))

            def all_arrived() -> bool:
                now = safely(rt)
                return (
                    now is not None
                    and now.files == n
                    and len(now.post_run_ids) == n
                    and received_prompt_ids(hook) == set(now.post_run_ids)
                    and now.deliveries == {"sent": n}
                )

            recovering_since = time.monotonic()
            wait_for(all_arrived, timeout=120, interval=0.25, what="every run stored and every prompt received")
            recovery_s = time.monotonic() - recovering_since
            # The web app came through the database restart too.
            web_url = f"http://127.0.0.1:{settings.web_port}/healthz"
            wait_for(lambda: _healthy(web_url), timeout=20, what="the web app healthy again")
            # Nothing more arrives once everything is sent: no late duplicate with a new id.
            time.sleep(2 * settings.redispatch_after_s)
    finally:
        hook.stop()

    final = stored(rt)
    assert (final.files, final.runs, final.source_keys) == (n, n, n)
    assert len(final.post_run_ids) == n
    # The deduplicating receiver saw each prompt exactly once per webhook-id, and none is missing.
    payloads = hook.payloads()
    assert len(payloads) == n
    assert received_prompt_ids(hook) == set(final.post_run_ids)
    assert all(r.verified for r in hook.requests)
    # The delivery cut off by the kill was sent again with the same webhook-id (the receiver deduplicates it).
    delivered = hook.delivered_ids()
    assert cut_off and all(delivered.count(i) >= 2 for i in cut_off), (cut_off, delivered)
    assert set(delivered) == set(payloads)
    print(
        f"files {n}, ingested at first kill {at_first_kill.files}, messages lost with redis {queued}, "
        f"webhook requests {len(delivered)} for {len(payloads)} prompts, recovered in {recovery_s:.1f} s"
    )
    rt.close()


def _ready(worker: Proc) -> bool:
    return "ready." in worker.output()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- C: Redis loses its data before anyone consumed the messages ------------------------------------------------


def test_flushed_broker_loses_no_delivery(tmp_path: Path, private_redis: PrivateRedis, pg_url: str) -> None:
    names = ["b0", "b1"]
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, NOW)
    settings = fault_settings(tmp_path, names, pg_url, private_redis.url, clock)
    rt = Runtime.open(settings)
    secret = new_webhook_secret()
    hook = WebhookReceiver(secret=secret).start()
    seed_athletes(rt, names, hook.url, secret)
    # Prompts and their outbox rows, written as a worker's ingest writes them.
    for path, athlete in stage_batch(tmp_path / "staging", names, minutes=20):
        assert ingest_planned(rt.db, settings, athlete, path, rt.now()).status == "ingested"
    prompt_ids = stored(rt).post_run_ids
    assert len(prompt_ids) == 4

    # The deliveries are handed to the broker (and marked dispatched), then the broker loses them.
    from delivery.outbox import due_delivery_ids
    from workers.app import make_app

    deliver = make_app(settings).tasks["stridecare.deliver"]
    dispatched = due_delivery_ids(rt)
    assert len(dispatched) == 4
    for delivery_id in dispatched:
        deliver.delay(delivery_id)
    redis = private_redis.client()
    assert redis.llen(DELIVERY) == 4
    redis.flushall()
    assert redis.dbsize() == 0

    env = settings_env(settings)
    logs = tmp_path / "logs"
    worker = celery_worker("worker", env, logs)
    beat = celery_beat("beat", env, logs)
    try:
        with processes(worker, beat):
            # Only the beat's tick can bring them back: nothing is queued any more.
            wait_for(lambda: received_prompt_ids(hook) == set(prompt_ids), timeout=60, what="every delivery")
            wait_for(lambda: stored(rt).deliveries == {"sent": 4}, timeout=15, what="every delivery recorded")
            assert "stridecare.tick" in beat.output()
    finally:
        hook.stop()
    delivered = hook.delivered_ids()
    assert len(delivered) == len(set(delivered)) == 4
    assert all(r.verified for r in hook.requests)
    rt.close()
