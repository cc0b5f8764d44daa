"""One scheduler at a time: the SQL lease behind ``workers.beat.LeaderScheduler``.

A unit test of ``stridecare.db.leases`` on SQLite and PostgreSQL, and two real ``celery beat`` processes on the
same database: only the lease holder schedules, so each weekly balance prompt is sent once, and when the leader
stops the other beat takes over.
"""

from __future__ import annotations

import re
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from channel_settings import channel_settings
from conftest import REDIS_URL, make_settings, require_redis
from factories import parsed_run, store_runs
from harness import Proc, WebhookReceiver, celery_beat, celery_worker, processes, settings_env, wait_for
from sqlalchemy import select, update

from stridecare.clock import write_clock_file
from stridecare.crypto import new_webhook_secret
from stridecare.db import leases
from stridecare.db.models import Athlete, Delivery, Lease, Prompt
from stridecare.runtime import Runtime
from workers import beat as beat_mod
from workers.app import make_app

T0 = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)  # a Saturday; the weekly balance prompt is due Sundays 18:00 UTC
SUNDAY_1 = datetime(2026, 3, 8, 18, 5, tzinfo=UTC)
SUNDAY_2 = datetime(2026, 3, 15, 18, 5, tzinfo=UTC)
LEADING = re.compile(r"beat (\S+): leading")


# -- the lease itself ----------------------------------------------------------------------------------------


def holder(rt: Runtime, name: str) -> tuple[str, datetime] | None:
    with rt.db.transaction() as s:
        lease = s.get(Lease, name)
        return (lease.owner, lease.expires_at) if lease else None


def test_lease_acquire_renew_expire_release(any_rt: Runtime) -> None:
    db = any_rt.db
    assert leases.acquire(db, "beat", "a", T0, 30)
    assert holder(any_rt, "beat") == ("a", T0 + timedelta(seconds=30))
    # Held: nobody else gets it, not even a moment before it expires.
    assert not leases.acquire(db, "beat", "b", T0 + timedelta(seconds=29), 30)
    # The holder renews, which moves the expiry.
    assert leases.acquire(db, "beat", "a", T0 + timedelta(seconds=20), 30)
    assert holder(any_rt, "beat") == ("a", T0 + timedelta(seconds=50))
    assert not leases.acquire(db, "beat", "b", T0 + timedelta(seconds=45), 30)
    # Leases are independent by name.
    assert leases.acquire(db, "other", "b", T0, 30)
    # Not renewed in time: it expires and another owner takes it; the old owner is then refused.
    assert leases.acquire(db, "beat", "b", T0 + timedelta(seconds=51), 30)
    assert holder(any_rt, "beat") == ("b", T0 + timedelta(seconds=81))
    assert not leases.acquire(db, "beat", "a", T0 + timedelta(seconds=52), 30)
    # Only the holder can release; after a release anyone takes it at once.
    leases.release(db, "beat", "a")
    assert holder(any_rt, "beat") == ("b", T0 + timedelta(seconds=81))
    leases.release(db, "beat", "b")
    assert holder(any_rt, "beat") is None
    assert leases.acquire(db, "beat", "a", T0 + timedelta(seconds=53), 30)
    assert holder(any_rt, "beat") == ("a", T0 + timedelta(seconds=83))


def test_a_sigterm_inside_the_lease_transaction_still_gives_the_lease_back(
    any_rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's SIGTERM handler closes the scheduler from wherever the beat is, then raises SystemExit. When that
    lands inside the lease's own transaction, close() must neither wait on the row lock that transaction holds
    (on PostgreSQL: forever, until the supervisor's SIGKILL leaves the lease held for its whole TTL) nor fail;
    the close() Celery makes after the unwinding gives the lease back."""
    app = make_app(any_rt.settings, runtime=any_rt)
    sched = beat_mod.LeaderScheduler(app=app, schedule_filename=str(tmp_path / "schedule"))
    now = datetime.now(UTC)
    assert leases.acquire(any_rt.db, beat_mod.LEASE, sched._owner, now, beat_mod.LEASE_TTL_S)
    sched._leader = True
    closed = threading.Event()

    def acquire_interrupted(db: Any, name: str, owner: str, at: datetime, ttl_s: float) -> bool:
        with db.transaction() as session:
            # The renewal's UPDATE takes the row lock (SQLite: the write lock) ...
            session.execute(update(Lease).where(Lease.name == name).values(expires_at=at + timedelta(seconds=ttl_s)))
            # ... and the signal arrives: the handler closes the scheduler in this same thread, then exits.
            closer = threading.Thread(target=lambda: (sched.close(), closed.set()), daemon=True)
            closer.start()
            closer.join(timeout=10)
            assert closed.is_set(), "close() inside the lease transaction hung on that transaction's own lock"
            raise SystemExit

    monkeypatch.setattr(beat_mod.leases, "acquire", acquire_interrupted)
    with pytest.raises(SystemExit):
        sched.tick()
    assert holder(any_rt, beat_mod.LEASE) is not None  # the interrupted transaction rolled back; still held
    sched.close()  # Celery's Service.start closes again once the SystemExit has unwound
    assert holder(any_rt, beat_mod.LEASE) is None
    # Another beat takes it at once, with no wait for the TTL.
    monkeypatch.undo()
    assert leases.acquire(any_rt.db, beat_mod.LEASE, "next-beat", datetime.now(UTC), beat_mod.LEASE_TTL_S)


# -- two real beats ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weekly(rt: Runtime) -> list[tuple[str, str]]:
    """(dedupe key, delivery status) of every weekly balance prompt's webhook delivery."""
    with rt.db.transaction() as s:
        rows = s.execute(
            select(Prompt.dedupe_key, Delivery.status)
            .join(Delivery, Delivery.prompt_id == Prompt.id)
            .where(Prompt.kind == "weekly_balance")
            .order_by(Prompt.dedupe_key)
        )
        return [(str(key), str(status)) for key, status in rows]


def leaders(beat: Proc) -> list[str]:
    """Owners this beat process logged as leading."""
    return LEADING.findall(beat.output())


def ticks_sent(beat: Proc) -> int:
    """How many ticks this beat scheduled."""
    return beat.output().count("Sending due task tick")


@pytest.mark.slow(longest=True)
def test_two_beats_send_each_weekly_prompt_once(tmp_path: Path, pg_url: str) -> None:
    require_redis()
    import redis

    broker = f"{REDIS_URL}/13"
    redis.Redis.from_url(broker).flushdb()
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, T0)
    secret = new_webhook_secret()
    hook = WebhookReceiver(secret=secret).start()
    settings = make_settings(
        tmp_path,
        database_url=pg_url,
        broker_url=broker,
        clock_file=clock,
        webhook_allowed_networks=["127.0.0.0/8"],
        web_port=free_port(),
        relay_interval_s=0.5,
    )
    rt = Runtime.open(settings)
    with rt.db.transaction() as s:
        s.add(
            Athlete(
                name="me",
                channel_settings=channel_settings(rt.vault, webhook=hook.url, webhook_secret=secret, console=False),
                timezone="UTC",
                balance_weekday=6,
                balance_time="18:00",
            )
        )
    # Weekly prompts begin with the first week with a run: a Wednesday's, too old at T0 for a prompt of its own.
    store_runs(rt.db, settings, "me", [parsed_run(T0 - timedelta(days=3))], T0)
    env = settings_env(settings)
    logs = tmp_path / "logs"
    worker = celery_worker("worker", env, logs)
    beat_a = celery_beat("beat_a", env, logs)
    beat_b = celery_beat("beat_b", env, logs)
    try:
        with processes(worker, beat_a, beat_b):
            # Both start at once against the same database: exactly one of them leads.
            wait_for(lambda: leaders(beat_a) or leaders(beat_b), timeout=60, what="a leading beat")
            first, second = (beat_a, beat_b) if leaders(beat_a) else (beat_b, beat_a)
            wait_for(lambda: "beat: Starting" in second.output(), timeout=30, what="the second beat running")
            wait_for(lambda: ticks_sent(first) >= 4, timeout=30, what="the leader scheduling ticks")

            write_clock_file(clock, SUNDAY_1)
            wait_for(lambda: len(hook.payloads()) == 1, timeout=30, what="the first weekly prompt")
            # Several more ticks of both beats: still one prompt, one request.
            ticks = ticks_sent(first)
            wait_for(lambda: ticks_sent(first) >= ticks + 6, timeout=30, what="more ticks")
            assert leaders(second) == [] and ticks_sent(second) == 0, "the standby beat scheduled"
            assert len(leaders(first)) == 1

            # The leader stops (and gives the lease back); the other takes over.
            first.stop()
            wait_for(lambda: leaders(second), timeout=30, what="the second beat taking over")
            wait_for(lambda: ticks_sent(second) >= 2, timeout=30, what="the new leader scheduling ticks")
            write_clock_file(clock, SUNDAY_2)
            wait_for(lambda: len(hook.payloads()) == 2, timeout=30, what="the second weekly prompt")
            ticks = ticks_sent(second)
            wait_for(lambda: ticks_sent(second) >= ticks + 6, timeout=30, what="more ticks")
    finally:
        hook.stop()
        redis.Redis.from_url(broker).flushdb()

    assert weekly(rt) == [("2026-W10", "sent"), ("2026-W11", "sent")]
    delivered = hook.delivered_ids()
    assert len(delivered) == len(set(delivered)) == 2
    assert all(r.verified for r in hook.requests)
    assert [p["data"]["kind"] for p in hook.payloads().values()] == ["weekly_balance", "weekly_balance"]
    # One leader at a time: each beat led once, the second only after the first had stopped.
    assert len(leaders(first)) == 1 and len(leaders(second)) == 1
    assert leaders(first) != leaders(second)
    rt.close()
