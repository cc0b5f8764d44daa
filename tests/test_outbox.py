"""The outbox relay against real receivers: retries on the SQL schedule with one webhook-id, Retry-After, 410,
quiet hours, "done" links and one-click unsubscribe, and status/prompts JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from channel_settings import channel_settings
from conftest import make_settings, runtime_on
from factories import ingest_planned
from fitgen import write_activity
from harness import WebhookReceiver
from sqlalchemy import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from recommender.messages import relay_pending
from stridecare.clock import write_clock_file
from stridecare.crypto import new_webhook_secret
from stridecare.db.models import Athlete, Completion, Delivery, DeliveryAttempt, Prompt
from stridecare.links import athlete_key, done_url, unsubscribe_url
from stridecare.plugins import channel_options
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app

START = datetime(2026, 5, 4, 6, 0, tzinfo=UTC)  # a Monday, 08:00 in Berlin


@pytest.fixture
def clocked(tmp_path: Path) -> tuple[Runtime, Path]:
    """A runtime on a database of its own, for the command line (which opens the database itself)."""
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, START)
    rt = Runtime.open(make_settings(tmp_path, clock_file=clock, webhook_allowed_networks=["127.0.0.0/8"]))
    return rt, clock


@pytest.fixture
def tx_clocked(tx_rt: Runtime, tmp_path: Path) -> tuple[Runtime, Path]:
    """A runtime on the session database, rolled back at the end: the relay runs in this process."""
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, START)
    return runtime_on(tx_rt.db, tmp_path, clock_file=clock, webhook_allowed_networks=["127.0.0.0/8"]), clock


def add_athlete(rt: Runtime, hook: WebhookReceiver, **extra: object) -> None:
    with rt.db.transaction() as s:
        s.add(
            Athlete(
                name="me",
                channel_settings=channel_settings(
                    rt.vault, webhook=hook.url, webhook_secret=hook.secret or "", console=False
                ),
                timezone="Europe/Berlin",
                **extra,
            )
        )


def drop_run(rt: Runtime, tmp_path: Path, start: datetime, minutes: int = 40, name: str = "run.fit") -> None:
    path = tmp_path / name
    write_activity(path, start=start, duration_s=minutes * 60, speed_mps=3.0, cadence_rpm=85, sample_interval_s=5)
    report = ingest_planned(rt.db, rt.settings, "me", path, rt.now())
    assert report.status == "ingested"


def attempts(rt: Runtime) -> list[DeliveryAttempt]:
    with rt.db.transaction() as s:
        return list(s.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id)))


def delivery(rt: Runtime) -> Delivery:
    with rt.db.transaction() as s:
        return s.scalars(select(Delivery)).one()


def test_500_three_times_then_200_is_four_attempts_with_one_webhook_id(
    tx_clocked: tuple[Runtime, Path], tmp_path: Path
) -> None:
    rt, clock = tx_clocked
    hook = WebhookReceiver(secret=new_webhook_secret(), script=[500, 500, 500, 200]).start()
    try:
        add_athlete(rt, hook)
        write_clock_file(clock, START + timedelta(minutes=45))
        drop_run(rt, tmp_path, START)
        assert relay_pending(rt) == 1
        # Retries wait in SQL: nothing is due until the schedule says so, then one attempt per step.
        for _ in range(3):
            assert relay_pending(rt) == 0
            due = delivery(rt).next_attempt_at
            write_clock_file(clock, due)
            assert relay_pending(rt) == 1
        assert relay_pending(rt) == 0
    finally:
        hook.stop()
    assert [r.status for r in hook.requests] == [500, 500, 500, 200]
    assert len({r.headers["webhook-id"] for r in hook.requests}) == 1
    assert all(r.verified for r in hook.requests)
    d = delivery(rt)
    assert d.status == "sent" and d.attempts == 4
    assert [a.ok for a in attempts(rt)] == [False, False, False, True]


def test_retry_after_is_honoured_and_410_disables_the_endpoint(
    tx_clocked: tuple[Runtime, Path], tmp_path: Path
) -> None:
    rt, clock = tx_clocked
    hook = WebhookReceiver(secret=new_webhook_secret(), script=[429, 410]).start()
    try:
        add_athlete(rt, hook)
        write_clock_file(clock, START + timedelta(minutes=45))
        drop_run(rt, tmp_path, START)
        # A 429 with Retry-After: 600 s pushes the next attempt past the 5 s step of the schedule.
        hook_retry_after(hook, 600)
        relay_pending(rt)
        now = rt.now()
        assert delivery(rt).next_attempt_at >= now + timedelta(seconds=599)
        write_clock_file(clock, now + timedelta(seconds=300))
        assert relay_pending(rt) == 0
        write_clock_file(clock, now + timedelta(seconds=601))
        assert relay_pending(rt) == 1  # answered 410
        with rt.db.transaction() as s:
            athlete = s.scalars(select(Athlete)).one()
            assert channel_options(athlete, "webhook").get("disabled_at")
        assert delivery(rt).status == "failed"
        # The next run makes no webhook delivery at all.
        write_clock_file(clock, START + timedelta(days=1, minutes=45))
        drop_run(rt, tmp_path, START + timedelta(days=1), name="next.fit")
        with rt.db.transaction() as s:
            assert [d.channel for d in s.scalars(select(Delivery))] == ["webhook"]
    finally:
        hook.stop()
    assert len(hook.requests) == 2


def hook_retry_after(hook: WebhookReceiver, seconds: int) -> None:
    """Make the receiver's next 429 carry Retry-After (the harness answers with bare status codes)."""
    server = hook._server
    assert server is not None
    handler = server.RequestHandlerClass
    original_end_headers = handler.end_headers

    def end_headers(self: object) -> None:
        if hook.requests and hook.requests[-1].status == 429:
            handler.send_header(self, "Retry-After", str(seconds))  # type: ignore[arg-type]
        original_end_headers(self)  # type: ignore[arg-type]

    handler.end_headers = end_headers  # type: ignore[method-assign]


def test_quiet_hours_defer_a_prompt_and_never_drop_it(tx_clocked: tuple[Runtime, Path], tmp_path: Path) -> None:
    rt, clock = tx_clocked
    hook = WebhookReceiver(secret=new_webhook_secret()).start()
    try:
        add_athlete(rt, hook, quiet_start="22:00", quiet_end="07:00")
        late = datetime(2026, 5, 4, 20, 0, tzinfo=UTC)  # 22:00 in Berlin: the run ends inside quiet hours
        write_clock_file(clock, late + timedelta(minutes=42))
        drop_run(rt, tmp_path, late)
        assert relay_pending(rt) == 0
        write_clock_file(clock, datetime(2026, 5, 5, 4, 59, tzinfo=UTC))  # 06:59 local
        assert relay_pending(rt) == 0
        write_clock_file(clock, datetime(2026, 5, 5, 5, 0, tzinfo=UTC))  # 07:00 local
        assert relay_pending(rt) == 1
    finally:
        hook.stop()
    assert len(hook.delivered_ids()) == 1


def test_done_link_records_completion_and_balance_progresses(tmp_path: Path) -> None:
    rt = Runtime.open(make_settings(tmp_path))
    with rt.db.transaction() as s:
        athlete = Athlete(name="me", timezone="UTC")
        s.add(athlete)
        s.flush()
        for week in range(3):
            s.add(
                Prompt(
                    athlete_id=athlete.id,
                    kind="weekly_balance",
                    dedupe_key=f"2026-W{10 + week}",
                    local_day=START.date(),
                    routines=["balance"],
                    facts={"balance_level": 0},
                )
            )
        athlete_id = athlete.id
    with rt.db.transaction() as s:
        prompt_ids = [p.id for p in s.scalars(select(Prompt).order_by(Prompt.dedupe_key))]
    client = TestClient(create_app(rt), base_url="http://127.0.0.1:8080")
    with rt.db.read() as s:
        key = athlete_key(rt.link_key, s.get(Athlete, athlete_id).link_secret)  # type: ignore[union-attr]
    base = rt.settings.effective_public_url
    # A forged signature records nothing; a GET (what mail scanners do) only asks.
    assert client.post(f"/done/{prompt_ids[0]}?sig=forged").status_code == 403
    first = done_url(base, key, prompt_ids[0]).removeprefix(base)
    assert "Yes, done" in client.get(first).text
    with rt.db.transaction() as s:
        assert s.scalars(select(Completion)).all() == []
    assert client.post(first).status_code == 200
    assert client.post(first).status_code == 200  # twice is harmless
    runner = CliRunner()
    from stridecare_app.cli.main import app

    env = {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
    }
    for pid in prompt_ids[1:]:
        result = runner.invoke(app, ["done", pid], env=env)
        assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["done", "nope"], env=env).exit_code == 2
    with rt.db.transaction() as s:
        assert len(s.scalars(select(Completion)).all()) == 3
        # Three completed sessions at eyes-open move balance to the next level.
        assert s.get(Athlete, athlete_id).balance_level == 1  # type: ignore[union-attr]


def test_one_click_unsubscribe(tx_rt: Runtime) -> None:
    rt = tx_rt
    with rt.db.transaction() as s:
        athlete = Athlete(name="me", channel_settings=channel_settings(email="me@example.org"), timezone="UTC")
        s.add(athlete)
        s.flush()
        athlete_id = athlete.id
    client = TestClient(create_app(rt), follow_redirects=False, base_url="http://127.0.0.1:8080")
    with rt.db.read() as s:
        key = athlete_key(rt.link_key, s.get(Athlete, athlete_id).link_secret)  # type: ignore[union-attr]
    url = unsubscribe_url(rt.settings.effective_public_url, key, athlete_id)
    path = url.removeprefix(rt.settings.effective_public_url)
    assert client.post(path.replace("sig=", "sig=x")).status_code == 403
    response = client.post(
        path, content=b"List-Unsubscribe=One-Click", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200  # answered directly, no redirect (RFC 8058)
    with rt.db.transaction() as s:
        assert channel_options(s.get(Athlete, athlete_id), "email").get("unsubscribed_at")  # type: ignore[arg-type]


def test_status_and_prompts_json(clocked: tuple[Runtime, Path], tmp_path: Path) -> None:
    rt, clock = clocked
    hook = WebhookReceiver(secret=new_webhook_secret()).start()
    try:
        add_athlete(rt, hook)
        for day in range(30):
            start = START + timedelta(days=day)
            write_clock_file(clock, start + timedelta(minutes=45))
            drop_run(rt, tmp_path, start, minutes=40, name=f"r{day}.fit")
    finally:
        hook.stop()
    from stridecare_app.cli.main import app

    env = {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_CLOCK_FILE": str(clock),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
    }
    result = CliRunner().invoke(app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    for key in ("acute_load", "chronic_load", "acwr", "flags"):
        assert key in status
    # A steady 40-minute run every day: both averages near one run's load, the ratio near 1, shown after 28 days.
    one_run = status["recent_runs"][0]["load"]
    assert status["acute_load"] == pytest.approx(one_run, rel=0.02)
    assert status["acwr"] == pytest.approx(1.0, abs=0.02)
    prompts = json.loads(CliRunner().invoke(app, ["prompts", "--json", "--limit", "100"], env=env).stdout)
    assert len([p for p in prompts if p["kind"] == "post_run"]) == 30
    assert all(p["reasons"] and p["rule"] for p in prompts)
