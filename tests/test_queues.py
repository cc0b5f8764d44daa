"""Queues by kind of work: a dropped file's prompt does not wait for a flood of Strava events, embedded (the
SQLite queue, taken by priority) and distributed (a real Celery worker on Redis and PostgreSQL, queues in
turn); and one athlete's burst of files does not hold back another athlete's run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import make_settings, set_weekly_schedule
from fitgen import write_activity
from harness import celery_worker, processes, settings_env, stridecare, wait_for
from kombu import Connection, Consumer, Exchange, Producer, Queue
from queue_flood import flood, queued
from sqlalchemy import select

from ingest.watch import Candidate
from stridecare.db.models import Delivery
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.runner import make_watcher
from workers.app import make_app
from workers.queues import (
    BACKLOG,
    CONNECTORS,
    DEFAULT,
    DELIVERY,
    EVENTS,
    FILES,
    PLANNING,
    PRIORITY,
    QUEUES,
    ROUND_ROBIN_EVERY,
    BurstLanes,
)
from workers.tasks import _replan_queue

FLOOD = 16_000


# -- routes ------------------------------------------------------------------------------------------------


def test_each_kind_of_task_has_its_queue(settings: Settings) -> None:
    app = make_app(settings)

    def queue_of(name: str) -> str:
        return str(app.amqp.router.route({}, name)["queue"].name)

    expected = {
        "stridecare.deliver": DELIVERY,
        "stridecare.dispatch_due": DELIVERY,
        "stridecare.replan": PLANNING,
        "stridecare.tick": PLANNING,
        "stridecare.ingest_file": FILES,
        "stridecare.retry_file": FILES,
        "stridecare.connector_poll": CONNECTORS,
        "stridecare.connectors_due": CONNECTORS,
        "stridecare.strava_event": EVENTS,
        "stridecare.strava_backfill": EVENTS,
        # Any Strava task, named or not yet: the events table's drain nudge goes with the events.
        "stridecare.strava_drain": EVENTS,
    }
    assert {name: queue_of(name) for name in expected} == expected
    # No stridecare task is left on Celery's default queue.
    ours = [name for name in app.tasks if name.startswith("stridecare.")]
    assert ours and all(queue_of(name) != DEFAULT for name in ours), {n: queue_of(n) for n in ours}


def test_a_worker_without_q_consumes_every_queue(settings: Settings) -> None:
    app = make_app(settings)
    assert set(app.amqp.queues) == set(QUEUES)
    assert set(QUEUES) == {DELIVERY, PLANNING, FILES, BACKLOG, CONNECTORS, EVENTS, DEFAULT}
    assert PRIORITY[-1] == EVENTS and PRIORITY[:3] == (DELIVERY, PLANNING, FILES)


# -- the SQLite queue takes by priority ----------------------------------------------------------------------


def _sql_connection(settings: Settings) -> Connection:
    app = make_app(settings)
    return app.connection_for_write()


def _publish(conn: Connection, counts: dict[str, int]) -> None:
    producer = Producer(conn.default_channel)
    for name, n in counts.items():
        queue = Queue(name, Exchange(name), routing_key=name)
        for i in range(n):
            producer.publish({"queue": name, "i": i}, exchange=queue.exchange, routing_key=name, declare=[queue])


def _take(conn: Connection, queues: list[str], n: int) -> list[tuple[str, int]]:
    """The first ``n`` messages a consumer of ``queues`` is handed, as (queue, index)."""
    taken: list[tuple[str, int]] = []

    def got(body: dict[str, Any], message: Any) -> None:
        taken.append((body["queue"], body["i"]))
        message.ack()

    consumer = Consumer(
        conn.default_channel, [Queue(q, Exchange(q), routing_key=q) for q in queues], callbacks=[got], prefetch_count=1
    )
    with consumer:
        while len(taken) < n:
            conn.drain_events(timeout=10)
    return taken


def test_the_sqlite_queue_takes_delivery_planning_and_files_before_queued_events(settings: Settings) -> None:
    settings.data_home.mkdir(parents=True, exist_ok=True)
    with _sql_connection(settings) as conn:
        # Events first in time, then one message of each other kind.
        _publish(conn, {EVENTS: 50})
        _publish(conn, {BACKLOG: 1, FILES: 1, CONNECTORS: 1, PLANNING: 1, DELIVERY: 1})
        taken = _take(conn, list(QUEUES), 6)
    assert [q for q, _i in taken[:5]] == [DELIVERY, PLANNING, FILES, CONNECTORS, BACKLOG]
    assert taken[5] == (EVENTS, 0)  # each queue in its own order


def test_the_sqlite_queue_gives_events_one_take_in_eight_while_files_keep_coming(settings: Settings) -> None:
    settings.data_home.mkdir(parents=True, exist_ok=True)
    with _sql_connection(settings) as conn:
        _publish(conn, {EVENTS: 40, FILES: 40})
        taken = _take(conn, list(QUEUES), 4 * ROUND_ROBIN_EVERY)
    events = [i for q, i in taken if q == EVENTS]
    files = [i for q, i in taken if q == FILES]
    assert events == [0, 1, 2, 3]  # slowed down, never stopped, and in order
    assert files == list(range(len(files)))


def test_the_sqlite_queue_keeps_a_slot_for_files_while_an_event_runs_long(settings: Settings) -> None:
    settings.data_home.mkdir(parents=True, exist_ok=True)
    held: list[Any] = []

    def got(body: dict[str, Any], message: Any) -> None:
        held.append((body["queue"], message))  # running: acknowledged only when the test says it finished

    with _sql_connection(settings) as conn:
        _publish(conn, {EVENTS: 5})
        queues = [Queue(q, Exchange(q), routing_key=q) for q in QUEUES]
        with Consumer(conn.default_channel, queues, callbacks=[got], prefetch_count=2):
            conn.drain_events(timeout=10)
            assert [q for q, _m in held] == [EVENTS]
            # A second event would take the worker's last slot: it is not handed out while the first runs.
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.6)
            _publish(conn, {FILES: 1})
            conn.drain_events(timeout=10)
            assert [q for q, _m in held] == [EVENTS, FILES]
            held[0][1].ack()  # the long event ends
            held[1][1].ack()
            conn.drain_events(timeout=10)
            assert [q for q, _m in held] == [EVENTS, FILES, EVENTS]


# -- between athletes --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_athletes_burst_goes_to_the_backlog_after_its_first_files() -> None:
    clock = Clock()
    lanes = BurstLanes(window_s=60, clock=clock)
    assert [lanes.lane("anna") for _ in range(6)] == [FILES] * 4 + [BACKLOG] * 2
    assert lanes.split("anna", 100) == (0, 100)
    assert lanes.lane("ben") == FILES  # another athlete's run is not behind anna's burst
    clock.t += 61
    assert lanes.split("anna", 10) == (4, 6)  # a fresh run after a quiet minute is first again


def test_a_backlog_files_replan_waits_behind_its_burst_and_a_fresh_files_goes_to_planning() -> None:
    def task(queue: str | None) -> Any:
        return SimpleNamespace(request=SimpleNamespace(delivery_info={"routing_key": queue} if queue else None))

    # A replan jumping ahead of its own burst's files would run once each time it caught up with the stores.
    assert _replan_queue(task(BACKLOG)) == BACKLOG
    assert _replan_queue(task(FILES)) is None  # the route: planning
    assert _replan_queue(task(None)) is None


def test_the_watcher_puts_one_athletes_big_drop_behind_another_athletes_run(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    settings = make_settings(tmp_path, inboxes=[f"anna={tmp_path / 'anna'}", f"ben={tmp_path / 'ben'}"])
    rt = Runtime.open(settings)
    try:
        watcher = make_watcher(rt, use_broker=True, celery=make_app(settings, rt), group_files=True)
        assert watcher.submit_group is not None
        write_activity(tmp_path / "one.fit", start=now - timedelta(hours=1), duration_s=600)
        anna = [Candidate("anna", tmp_path / f"a{i}.fit", tmp_path / "anna") for i in range(40)]
        watcher.submit_group(anna[:16])
        watcher.submit_group(anna[16:32])
        watcher.submit(Candidate("ben", tmp_path / "one.fit", tmp_path / "ben"))
        watcher.submit_group(anna[32:])
        with _sql_connection(settings) as conn:
            counts = {q: queued(settings, q) for q in (FILES, BACKLOG)}
            # anna's first four files in one message, then ben's run; the rest of anna's burst in three.
            assert counts == {FILES: 2, BACKLOG: 3}
            first = _take_tasks(conn, 2)
        assert [(args[0], 1 + len(args[3]) if len(args) > 3 else 1) for args in first] == [("anna", 4), ("ben", 1)]
    finally:
        rt.close()


def _take_tasks(conn: Connection, n: int) -> list[list[Any]]:
    """The args of the first ``n`` task messages a consumer of every queue is handed."""
    taken: list[list[Any]] = []

    def got(body: Any, message: Any) -> None:
        taken.append(list(body[0]))
        message.ack()

    with Consumer(
        conn.default_channel, [Queue(q, Exchange(q), routing_key=q) for q in QUEUES], callbacks=[got], prefetch_count=1
    ):
        while len(taken) < n:
            conn.drain_events(timeout=10)
    return taken


# -- end to end: a dropped file's prompt with 16,000 Strava events queued ------------------------------------------


def _prompt_sent(rt: Runtime) -> bool:
    with rt.db.read() as session:
        return session.scalar(select(Delivery.id).where(Delivery.status == "sent").limit(1)) is not None


def _drop_fresh_run(inbox: Path) -> None:
    staging = inbox.parent / "staging"
    staging.mkdir(exist_ok=True)
    write_activity(staging / "fresh.fit", start=datetime.now(UTC) - timedelta(hours=1), duration_s=1800)
    (staging / "fresh.fit").rename(inbox / "fresh.fit")


def _prompt_overtakes_the_flood(settings: Settings, start: Any) -> None:
    """Queue the flood, start the processes, drop a fresh run; its prompt is sent while most of the flood is
    still queued (one queue in FIFO order would send it only after the whole flood)."""
    set_weekly_schedule(settings, "me")
    rt = Runtime.open(settings)
    try:
        inbox = settings.inbox_map()[0][1]
        inbox.mkdir(parents=True)
        flood(settings, FLOOD)
        assert queued(settings, EVENTS) == FLOOD
        procs = start(settings_env(settings), settings.data_home.parent / "logs")
        with processes(*procs):
            # The workers are taking events: the flood is being worked through, not waiting for a start.
            wait_for(lambda: queued(settings, EVENTS) < FLOOD, timeout=90, what="the worker taking events")
            _drop_fresh_run(inbox)
            wait_for(lambda: _prompt_sent(rt), timeout=60, interval=0.2, what="the dropped file's prompt sent")
            left = queued(settings, EVENTS)
        assert left > FLOOD // 2, f"only {left} of {FLOOD} events were still queued when the prompt was sent"
    finally:
        rt.close()


@pytest.mark.slow
def test_embedded_a_dropped_files_prompt_overtakes_16000_queued_strava_events(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.effective_broker_url.startswith("sqla+sqlite:///")

    def start(env: dict[str, str], logs: Path) -> list[Any]:
        return [stridecare("run", ["run", "--no-web"], env, logs)]

    _prompt_overtakes_the_flood(settings, start)


@pytest.mark.slow
def test_distributed_a_dropped_files_prompt_overtakes_16000_queued_strava_events(
    tmp_path: Path, redis_db: str, pg_url: str
) -> None:
    settings = make_settings(tmp_path, broker_url=redis_db, database_url=pg_url)

    def start(env: dict[str, str], logs: Path) -> list[Any]:
        # As docker-compose.yml runs them: a worker on every queue (two processes) and the watcher.
        return [celery_worker("worker", env, logs, concurrency=2), stridecare("watcher", ["watch"], env, logs)]

    _prompt_overtakes_the_flood(settings, start)
