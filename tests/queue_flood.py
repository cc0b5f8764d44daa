"""A flood of queued Strava event tasks, put straight into the broker (SQLite queue or Redis), and how many of it
are still queued: what tests/test_queues.py and bench/bench_queue_fairness.py hold a dropped file's prompt
against.

Sending 16,000 tasks one by one through Celery costs a commit each on the SQLite queue (about 80 s on this
machine); the messages are made by Celery as usual but written in one transaction (one Redis pipeline).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import redis
from kombu.transport.memory import Channel as MemoryChannel

from stridecare.settings import Settings
from workers.app import make_app
from workers.queues import EVENTS
from workers.strava_tasks import STRAVA_EVENT_TASK

# Event ids no event has: each task finds nothing to claim, as a forged flood's events that were already
# answered do, and costs a query or two.
FIRST_FLOOD_ID = 10**9


@contextmanager
def _captured() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every message the memory transport would store, kept here instead (in the form every virtual transport
    stores: Redis and the SQL queue alike)."""
    kept: list[tuple[str, dict[str, Any]]] = []

    def put(_self: Any, queue: str, message: dict[str, Any], **_kw: Any) -> None:
        kept.append((queue, message))

    with mock.patch.object(MemoryChannel, "_put", put):
        yield kept


def _messages(settings: Settings, n: int, first_id: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` Strava event task messages as Celery makes them for the SQLite queue, with their queue."""
    memory = settings.model_copy(update={"broker_url": "memory://"})
    app = make_app(memory)
    app.conf.broker_url = "memory://"
    app.conf.broker_transport = None
    with _captured() as kept, app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(STRAVA_EVENT_TASK, args=[first_id + i], producer=producer)
    return kept


def flood(settings: Settings, n: int, first_id: int = FIRST_FLOOD_ID) -> None:
    """Queue ``n`` Strava event tasks on ``settings``' broker (its SQLite queue or Redis) at once."""
    kept = _messages(settings, n, first_id)
    url = settings.effective_broker_url
    if url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(url)
        with client.pipeline(transaction=False) as pipe:
            for queue, message in kept:
                pipe.lpush(queue, json.dumps(message))
            pipe.execute()
        client.close()
        return
    with _broker_db(settings) as conn:
        queue_ids = {name: _queue_id(conn, name) for name in {q for q, _m in kept}}
        # As kombu writes a message: no timestamp (its column is set on update only), so the id is the order.
        conn.executemany(
            "INSERT INTO kombu_message (visible, timestamp, payload, version, queue_id) VALUES (1, NULL, ?, 1, ?)",
            [(json.dumps(message), queue_ids[queue]) for queue, message in kept],
        )


def queued(settings: Settings, queue: str) -> int:
    """How many messages ``queue`` holds on ``settings``' broker."""
    url = settings.effective_broker_url
    if url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(url)
        try:
            return int(client.llen(queue))
        finally:
            client.close()
    with _broker_db(settings) as conn:
        row = conn.execute(
            "SELECT count(*) FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id WHERE q.name = ?", (queue,)
        ).fetchone()
    return int(row[0])


def purge(settings: Settings, queue: str) -> None:
    """Empty ``queue`` on ``settings``' broker (messages a worker already holds are not in it)."""
    url = settings.effective_broker_url
    if url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(url)
        client.delete(queue)
        client.close()
        return
    with _broker_db(settings) as conn:
        conn.execute(
            "DELETE FROM kombu_message WHERE queue_id IN (SELECT id FROM kombu_queue WHERE name = ?)", (queue,)
        )


@contextmanager
def _broker_db(settings: Settings) -> Iterator[sqlite3.Connection]:
    """The SQLite queue's file, its tables made by kombu first (as a worker's first connection makes them)."""
    path = Path(settings.effective_broker_url.removeprefix("sqla+sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with make_app(settings).connection_for_write() as connection:
        connection.default_channel.queue_declare(EVENTS)  # creates kombu's tables, as a worker's start does
    conn = sqlite3.connect(path, timeout=60)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def _queue_id(conn: sqlite3.Connection, name: str) -> int:
    conn.execute("INSERT OR IGNORE INTO kombu_queue (name) VALUES (?)", (name,))
    return int(conn.execute("SELECT id FROM kombu_queue WHERE name = ?", (name,)).fetchone()[0])
