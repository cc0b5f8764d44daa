"""A Strava event is acknowledged at the cost of one durable append: events that arrive together share one
commit, the 200 follows the commit (a process killed right after answering loses nothing), the broker carries
no message per event (the events table is the queue; a drain takes it), and a drain killed half-way takes up
its batch again without doubling anything. On SQLite and PostgreSQL, through real servers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import uvicorn
from conftest import make_settings
from factories import drain_and_plan
from fake_strava import (
    FakeClock,
    FakeStrava,
    add_stridecare_athlete,
    connect_account,
    fake_strava_runtime,
    make_activity,
    running,
)
from harness import wait_for
from sqlalchemy import Connection, event, func, select
from starlette.applications import Starlette

import ingest.strava.events as events_module
from ingest.strava.events import CLAIM_TTL, drain, parse_event, store_event
from stridecare.clock import write_clock_file
from stridecare.db.models import Prompt, Run, StravaEvent
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app
from stridecare_app.web.server import uvicorn_config

ROOT = Path(__file__).resolve().parents[1]
SUB_ID = 3131
STRAVA_ID = 8282
FERNET_KEY = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def body(object_id: int, owner: int = 4400, aspect: str = "create") -> dict[str, Any]:
    """A push event body as Strava sends it."""
    return {
        "object_type": "activity",
        "object_id": object_id,
        "aspect_type": aspect,
        "owner_id": owner,
        "subscription_id": SUB_ID,
        "event_time": 1_765_000_000 + object_id,
        "updates": {},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(web_app: Starlette) -> Iterator[str]:
    """``web_app`` under uvicorn (as ``stridecare web`` serves it) on a free port; its base URL."""
    server = uvicorn.Server(uvicorn_config(web_app, "127.0.0.1", free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="event-ack-web", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, interval=0.01, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def _post_all(
    url: str, bodies: list[dict[str, Any]], clients: int, on_answer: Callable[[int, int], None] | None = None
) -> dict[int, int]:
    """POST every body from ``clients`` concurrent connections; object id → HTTP status (0: no answer)."""
    answers: dict[int, int] = {}
    todo = list(bodies)

    async def client_loop() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            while todo:
                item = todo.pop()
                try:
                    status = (await client.post(url, json=item)).status_code
                except httpx.HTTPError:
                    status = 0
                answers[item["object_id"]] = status
                if on_answer is not None:
                    on_answer(item["object_id"], status)

    await asyncio.gather(*(client_loop() for _ in range(clients)))
    return answers


@contextmanager
def writes_held(rt: Runtime) -> Iterator[None]:
    """Another connection holds off every insert into the events table for the block (SQLite's write lock, a
    PostgreSQL table lock): events that arrive meanwhile wait for the appender together."""
    if rt.db.engine.dialect.name == "sqlite":
        path = rt.db.engine.url.database
        assert path
        lite = sqlite3.connect(path, isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lite.execute("COMMIT")
            lite.close()
    else:
        url = rt.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url) as pg:
            pg.execute("LOCK TABLE strava_events IN SHARE ROW EXCLUSIVE MODE")
            yield
            pg.commit()


def post_together(rt: Runtime, url: str, n: int, first_id: int) -> dict[int, int]:
    """``n`` distinct events POSTed from ``n`` connections at once while the events table is held, released
    once every request has been sent: the appender finds them waiting together."""
    bodies = [body(first_id + i) for i in range(n)]
    sent = threading.Semaphore(0)
    result: dict[int, int] = {}

    async def fire() -> None:
        async def hook(_request: httpx.Request) -> None:
            sent.release()

        answers: dict[int, int] = {}

        async def one(item: dict[str, Any]) -> None:
            async with httpx.AsyncClient(timeout=60, event_hooks={"request": [hook]}) as client:
                answers[item["object_id"]] = (await client.post(url, json=item)).status_code

        await asyncio.gather(*(one(b) for b in bodies))
        result.update(answers)

    with writes_held(rt):
        firing = threading.Thread(target=lambda: asyncio.run(fire()))
        firing.start()
        for _ in range(n):
            assert sent.acquire(timeout=30)
    firing.join(timeout=60)
    assert not firing.is_alive()
    return result


@contextmanager
def commits_counted(rt: Runtime) -> Iterator[list[int]]:
    """Counts the transactions committed on ``rt``'s engine (one entry per commit)."""
    commits: list[int] = []

    def on_commit(_conn: Connection) -> None:
        commits.append(1)

    event.listen(rt.db.engine, "commit", on_commit)
    try:
        yield commits
    finally:
        event.remove(rt.db.engine, "commit", on_commit)


@pytest.fixture(params=BACKENDS)
def web_rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime with a Strava subscription on SQLite (with the embedded SQLite broker) or on PostgreSQL (with
    Redis as the broker)."""
    extra: dict[str, Any] = {"strava_subscription_id": SUB_ID}
    if request.param == "postgres":
        extra["database_url"] = request.getfixturevalue("pg_url")
        extra["broker_url"] = request.getfixturevalue("redis_db")
    runtime = Runtime.open(make_settings(tmp_path, **extra))
    yield runtime
    runtime.close()


def stored_ids(rt: Runtime) -> list[int]:
    with rt.db.read() as session:
        return sorted(p["object_id"] for p in session.scalars(select(StravaEvent.payload)))


# -- group commit ----------------------------------------------------------------------------------------------


def test_events_that_arrive_together_share_a_commit_and_one_drain_nudge(web_rt: Runtime) -> None:
    nudges: list[int] = []
    n = 40
    with commits_counted(web_rt) as commits, serving(create_app(web_rt, enqueue=nudges.append)) as base:
        answers = post_together(web_rt, base + "/strava/webhook", n, first_id=1000)
    assert set(answers.values()) == {200}
    assert stored_ids(web_rt) == list(range(1000, 1000 + n))
    # Fewer transactions than events, and the workers told once per transaction, not once per event.
    assert 1 <= len(commits) < n
    assert 1 <= len(nudges) <= len(commits)
    with web_rt.db.read() as session:
        assert max(nudges) == session.scalar(select(func.max(StravaEvent.id)))


def broker_messages(rt: Runtime) -> list[str]:
    """Every message on the broker (nobody consumes them here): the SQLite queue's rows, or Redis's lists."""
    url = rt.settings.effective_broker_url
    if url.startswith("redis"):
        client = redis.Redis.from_url(url, decode_responses=False)
        out: list[str] = []
        for key in client.scan_iter():
            if client.type(key) == b"list":
                out += [m.decode() if isinstance(m, bytes) else str(m) for m in client.lrange(key, 0, -1)]
        client.close()
        return out
    path = url.removeprefix("sqla+sqlite:///")
    if not Path(path).exists():
        return []
    with sqlite3.connect(path) as lite:
        tables = {row[0] for row in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "kombu_message" not in tables:
            return []
        return [str(row[0]) for row in lite.execute("SELECT payload FROM kombu_message")]


def test_the_ack_path_puts_no_broker_message_per_event(web_rt: Runtime) -> None:
    n = 40
    # The web app's own nudge: Celery on the runtime's broker (SQLite file, or Redis).
    with commits_counted(web_rt) as commits, serving(create_app(web_rt)) as base:
        answers = post_together(web_rt, base + "/strava/webhook", n, first_id=2000)
        assert set(answers.values()) == {200}
        wait_for(lambda: broker_messages(web_rt), timeout=30, what="the drain nudge on the broker")
    messages = broker_messages(web_rt)
    assert stored_ids(web_rt) == list(range(2000, 2000 + n))
    # At most one message per commit, each a drain nudge that names no event.
    assert 1 <= len(messages) <= len(commits) < n
    assert all("stridecare.strava_drain" in m and "stridecare.strava_event" not in m for m in messages)


# -- a process killed right after it answered ------------------------------------------------------------------


def _runner_env(tmp_path: Path, port: int, clock: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
    env.update(
        {
            "STRIDECARE_DATA_HOME": str(tmp_path / "home"),
            "STRIDECARE_ENCRYPTION_KEYS": FERNET_KEY,
            "STRIDECARE_SECRET_KEY": "test-signing-key",
            "STRIDECARE_WEB_PORT": str(port),
            "STRIDECARE_STRAVA_SUBSCRIPTION_ID": str(SUB_ID),
            # A client id: the beat's tick looks after Strava events only when Strava is set up.
            "STRIDECARE_STRAVA_CLIENT_ID": "4711",
            "STRIDECARE_RELAY_INTERVAL_S": "0.5",
            "STRIDECARE_CLOCK_FILE": str(clock),
            "STRIDECARE_INBOXES": str(tmp_path / "inbox"),
        }
    )
    env.update(extra)
    return env


@contextmanager
def runner(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``stridecare run`` in a session of its own (so that a kill takes its children too), once it answers."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "stridecare"), "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{env['STRIDECARE_WEB_PORT']}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.1, what="stridecare run to answer")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_stridecare_run_killed_right_after_answering_loses_no_event(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    extra: dict[str, str] = {}
    if backend == "postgres":
        extra["STRIDECARE_DATABASE_URL"] = request.getfixturevalue("pg_url")
        extra["STRIDECARE_BROKER_URL"] = request.getfixturevalue("redis_db")
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, datetime.now(UTC))
    port = free_port()
    env = _runner_env(tmp_path, port, clock, extra)
    log = tmp_path / "run.log"
    url = f"http://127.0.0.1:{port}/strava/webhook"
    bodies = [body(5000 + i, owner=4400 + i % 7) for i in range(400)]
    answered: list[int] = []
    with runner(env, log) as proc:
        killed = threading.Event()

        def on_answer(object_id: int, status: int) -> None:
            if status == 200:
                answered.append(object_id)
            if len(answered) >= 150 and not killed.is_set():
                # Right after answering, with requests still in flight: no shutdown, no flush, nothing.
                os.killpg(proc.pid, signal.SIGKILL)
                killed.set()

        answers = asyncio.run(_post_all(url, bodies, 30, on_answer))
        proc.wait(timeout=10)
    assert killed.is_set()
    assert 150 <= len(answered) < len(bodies), "the kill came after every answer: nothing was in flight"
    assert set(answers.values()) <= {200, 0}

    db_url = env.get("STRIDECARE_DATABASE_URL", f"sqlite:///{tmp_path / 'home' / 'stridecare.db'}")
    rt = Runtime.open(make_settings(tmp_path, database_url=db_url), migrate=False)
    try:
        stored = stored_ids(rt)
        assert set(answered) <= set(stored), "an event answered 200 is not in the events table"
        assert len(stored) == len(set(stored))
        # Restarted (with the clock past the lease of anything the killed worker had claimed), the beat's tick
        # finds every event still due and a drain takes them: none is left pending or claimed.
        write_clock_file(clock, datetime.now(UTC) + CLAIM_TTL + timedelta(minutes=1))

        def unfinished() -> int:
            with rt.db.read() as session:
                return int(
                    session.scalar(
                        select(func.count())
                        .select_from(StravaEvent)
                        .where(StravaEvent.status.in_(("pending", "processing")))
                    )
                    or 0
                )

        with runner(env, log):
            wait_for(lambda: unfinished() == 0, timeout=90, interval=0.2, what="every stored event processed")
        with rt.db.read() as session:
            rows = session.execute(select(StravaEvent.payload["object_id"].as_integer(), StravaEvent.status)).all()
        # No account is connected for these owners: each event was looked at once and ignored.
        assert {status for _, status in rows} == {"ignored"}
        assert set(answered) <= {object_id for object_id, _ in rows}
    finally:
        rt.close()


# -- a drain killed half-way through its batch -----------------------------------------------------------------


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs, no handler catches it."""


@pytest.fixture
def fake() -> Iterator[FakeStrava]:
    with running(clock=FakeClock(datetime.now(UTC).replace(microsecond=0))) as f:
        f.add_athlete(STRAVA_ID)
        yield f


@pytest.fixture(params=BACKENDS)
def srt(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeStrava) -> Iterator[Runtime]:
    extra: dict[str, Any] = {}
    if request.param == "postgres":
        extra["database_url"] = request.getfixturevalue("pg_url")
    runtime = fake_strava_runtime(tmp_path, fake, SUB_ID, **extra)
    yield runtime
    runtime.close()


def test_a_drain_killed_mid_batch_takes_it_up_again_without_duplicates(
    srt: Runtime, fake: FakeStrava, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect_account(srt.db, srt.settings, fake, add_stridecare_athlete(srt.db, "me"), srt.now())
    activities = []
    for n in range(3):
        activity = make_activity(660001 + n, fake.clock.now() - timedelta(hours=3 + n), athlete_id=STRAVA_ID)
        fake.add_activity(STRAVA_ID, activity)
        activities.append(activity)
        store_event(srt, parse_event(body(660001 + n, owner=STRAVA_ID)))
    assert drain_and_plan(srt) == ["done"]  # one list answered all three creates
    with srt.db.read() as session:
        assert session.scalar(select(func.count()).select_from(StravaEvent).where(StravaEvent.status != "done")) == 0
        prompts_before = session.scalar(select(func.count()).select_from(Prompt))
    assert prompts_before

    # The athlete renames the three runs: three updates, one batch; the drain dies while it reads the second
    # activity from Strava (the first is done: its run and its status committed together).
    for n, activity in enumerate(activities):
        activity["name"] = f"Renamed {n}"
        store_event(srt, parse_event(body(660001 + n, owner=STRAVA_ID, aspect="update")))
    real_fetch = events_module._fetch
    fetches: list[int] = []

    def fetch_then_die(*args: Any, **kwargs: Any) -> Any:
        if fetches:
            raise Killed
        fetches.append(1)
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(events_module, "_fetch", fetch_then_die)
    with pytest.raises(Killed):
        drain(srt)
    monkeypatch.setattr(events_module, "_fetch", real_fetch)

    def update_statuses() -> list[str]:
        with srt.db.read() as session:
            return list(
                session.scalars(
                    select(StravaEvent.status)
                    .where(StravaEvent.payload["aspect_type"].as_string() == "update")
                    .order_by(StravaEvent.id)
                )
            )

    assert update_statuses() == ["done", "processing", "processing"]
    # Their claim is live: another drain (a redelivered nudge, a second worker) does not take them meanwhile.
    assert drain(srt) == (0, False)
    fetched = fake.count("GET /api/v3/activities/{id}")

    # Once the dead drain's claim lapses, the next drain (the tick asks for one) takes up the rest.
    fake.clock.advance(CLAIM_TTL.total_seconds() + 1)
    assert srt.settings.clock_file is not None
    write_clock_file(srt.settings.clock_file, fake.clock.now())
    assert drain_and_plan(srt) == ["done", "done"]
    assert update_statuses() == ["done", "done", "done"]
    assert fake.count("GET /api/v3/activities/{id}") == fetched + 2  # the second and the third, once each
    with srt.db.read() as session:
        runs = list(session.scalars(select(Run).order_by(Run.source_key)))
        assert [(r.source_key, r.name) for r in runs] == [(str(660001 + n), f"Renamed {n}") for n in range(3)]
        assert session.scalar(select(func.count()).select_from(Prompt)) == prompts_before
    # Nothing further is due: a drain now finds nothing.
    assert drain(srt) == (0, False)
