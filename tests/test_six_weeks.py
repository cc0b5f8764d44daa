"""Six weeks of runs, end to end: each FIT file dropped as it happens (the test drives the clock), prompts
received by a real SMTP server and a real HTTP receiver that verifies every signature — on the embedded
default and on real Celery worker and beat processes with Redis. Then the same six weeks imported at once."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from channel_settings import channel_settings
from conftest import make_settings, require_redis
from fitgen import write_activity
from harness import (
    Proc,
    SmtpSink,
    WebhookReceiver,
    celery_beat,
    celery_worker,
    processes,
    settings_env,
    stridecare,
    wait_for,
)
from sqlalchemy import select

from delivery.email import email_message_id
from stridecare.clock import write_clock_file
from stridecare.crypto import new_webhook_secret
from stridecare.db.models import Athlete, Delivery, Prompt, Run
from stridecare.runtime import Runtime

pytestmark = pytest.mark.slow(longest=True)
TZ = ZoneInfo("Europe/Berlin")
FIRST_MONDAY = datetime(2026, 3, 2, tzinfo=TZ)  # a Monday; the weekly balance prompt is due Sundays 18:00


@dataclass(frozen=True)
class PlannedRun:
    start: datetime  # aware, local
    minutes: int
    speed: float

    @property
    def distance_m(self) -> float:
        return self.minutes * 60 * self.speed

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.minutes)


def plan() -> list[PlannedRun]:
    """Three runs a week; the Saturday run grows, with a spike in week 5 and a 100-minute long run in week 6."""
    runs: list[PlannedRun] = []
    saturday_minutes = [50, 54, 54, 60, 75, 100]
    for week in range(6):
        monday = FIRST_MONDAY + timedelta(weeks=week)
        runs.append(PlannedRun(monday + timedelta(days=1, hours=7), 40, 3.0))
        runs.append(PlannedRun(monday + timedelta(days=3, hours=7), 45, 3.1))
        runs.append(PlannedRun(monday + timedelta(days=5, hours=9), saturday_minutes[week], 3.0))
    return runs


def spike_expected(runs: list[PlannedRun], i: int) -> bool:
    """The design's caution rule, computed independently: > 1.10 × the longest of the 30 local days ending with
    the run's day, once the athlete has 28 days of history before it."""
    day = runs[i].start.date()
    if (day - runs[0].start.date()).days < 28:
        return False
    window = [r for r in runs[:i] if (day - r.start.date()).days < 30]
    return len(window) >= 3 and round(runs[i].distance_m / max(r.distance_m for r in window), 2) > 1.10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post_runs(rt: Runtime) -> dict[int, Prompt]:
    with rt.db.transaction() as s:
        return {p.run_id: p for p in s.scalars(select(Prompt).where(Prompt.kind == "post_run")) if p.run_id}


def emails_by_kind(rt: Runtime, messages: list[Any]) -> dict[str, list[Any]]:
    """The received emails grouped by the kind of prompt each carries (its Message-ID names the prompt)."""
    with rt.db.transaction() as s:
        kinds = {
            email_message_id(d.message_id): kind
            for d, kind in s.execute(select(Delivery, Prompt.kind).join(Prompt, Delivery.prompt_id == Prompt.id))
        }
    grouped: dict[str, list[Any]] = {}
    for message in messages:
        grouped.setdefault(kinds.get(str(message["Message-ID"]), "unknown"), []).append(message)
    return grouped


def routine_payloads(hook: WebhookReceiver) -> int:
    """Post-run and weekly balance payloads: the digest, which goes to every channel on Mondays, apart."""
    return sum(1 for p in hook.payloads().values() if p["data"]["kind"] in ("post_run", "weekly_balance"))


def routine_emails(rt: Runtime, messages: list[Any]) -> int:
    """Post-run and weekly balance emails: the digest that goes out on Mondays is counted apart."""
    grouped = emails_by_kind(rt, messages)
    return len(grouped.get("post_run", [])) + len(grouped.get("weekly_balance", []))


@pytest.mark.parametrize("mode", ["embedded", "redis"])
def test_six_weeks_of_runs_as_they_happen(mode: str, tmp_path: Path) -> None:
    broker: dict[str, object] = {}
    if mode == "redis":
        require_redis()
        import redis

        redis.Redis.from_url("redis://127.0.0.1:6379/10").flushdb()
        broker["broker_url"] = "redis://127.0.0.1:6379/10"
    smtp = SmtpSink().start()
    secret = new_webhook_secret()
    hook = WebhookReceiver(secret=secret).start()
    clock = tmp_path / "clock.txt"
    runs = plan()
    write_clock_file(clock, runs[0].start - timedelta(days=1))
    settings = make_settings(
        tmp_path,
        clock_file=clock,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_security="none",
        webhook_allowed_networks=["127.0.0.0/8"],
        web_port=free_port(),
        relay_interval_s=0.5,
        settle_seconds=0.3,
        **broker,
    )
    rt = Runtime.open(settings)
    with rt.db.transaction() as s:
        s.add(
            Athlete(
                name="me",
                channel_settings=channel_settings(
                    rt.vault, email="runner@example.org", webhook=hook.url, webhook_secret=secret, console=False
                ),
                timezone="Europe/Berlin",
                balance_weekday=6,
                balance_time="18:00",
                quiet_start="22:00",
                quiet_end="06:00",
            )
        )
    env = settings_env(settings)
    inbox = settings.inbox_map()[0][1]
    inbox.mkdir(parents=True)
    logs = tmp_path / "logs"
    procs: list[Proc]
    if mode == "embedded":
        procs = [stridecare("run", ["run"], env, logs)]
    else:
        procs = [
            celery_worker("worker", env, logs, concurrency=2),
            celery_beat("beat", env, logs),
            stridecare("watcher", ["watch"], env, logs),
        ]
    staging = tmp_path / "staging"
    staging.mkdir()
    weekly_seen = 0
    try:
        with processes(*procs):
            for i, run in enumerate(runs):
                # Sundays 18:00 pass between Saturday's run and next Tuesday's: the weekly prompt comes then.
                if i and run.start.weekday() == 1:
                    write_clock_file(clock, (run.start - timedelta(days=2)).replace(hour=18, minute=5))
                    weekly_seen += 1
                    wait_for(
                        lambda: routine_payloads(hook) == i + weekly_seen,
                        timeout=30,
                        what=f"weekly balance prompt {weekly_seen}",
                    )
                write_clock_file(clock, run.end + timedelta(minutes=3))
                tmp = staging / f"run{i:02d}.fit"
                write_activity(
                    tmp,
                    start=run.start.astimezone(UTC),
                    duration_s=run.minutes * 60,
                    speed_mps=run.speed,
                    cadence_rpm=84 + i % 3,
                    utc_offset_s=3600,
                    sample_interval_s=4,
                )
                tmp.rename(inbox / tmp.name)
                wait_for(
                    lambda: routine_payloads(hook) == i + 1 + weekly_seen,
                    timeout=30,
                    what=f"the prompt for run {i}",
                )
                wait_for(
                    lambda: routine_emails(rt, smtp.messages) == i + 1 + weekly_seen, timeout=30, what=f"email {i}"
                )
            # The last Sunday of the six weeks.
            write_clock_file(clock, (runs[-1].start + timedelta(days=1)).replace(hour=18, minute=5))
            weekly_seen += 1
            wait_for(lambda: routine_payloads(hook) == len(runs) + weekly_seen, timeout=30, what="last weekly")
            wait_for(
                lambda: routine_emails(rt, smtp.messages) == len(runs) + weekly_seen, timeout=30, what="last email"
            )
    finally:
        hook.stop()
        smtp.stop()

    # Exactly one post-run prompt per run, each delivered once on each channel, every signature valid.
    prompts = post_runs(rt)
    with rt.db.transaction() as s:
        stored = list(s.scalars(select(Run).order_by(Run.start_time)))
        weekly = list(s.scalars(select(Prompt).where(Prompt.kind == "weekly_balance")))
    assert len(stored) == len(runs) == len(prompts)
    assert all(r.verified for r in hook.requests)
    assert len(hook.delivered_ids()) == len(set(hook.delivered_ids()))
    payloads = list(hook.payloads().values())
    assert len([p for p in payloads if p["data"]["kind"] != "digest"]) == len(runs) + 6
    post_run_payloads = [p for p in payloads if p["data"]["kind"] == "post_run"]
    assert len(post_run_payloads) == len(runs)
    assert {p["data"]["prompt_id"] for p in post_run_payloads} == {p.id for p in prompts.values()}
    # The weekly balance prompt arrives once a week, on Sunday evening local time.
    assert len(weekly) == 6 and len({p.dedupe_key for p in weekly}) == 6
    assert all(p.routines == ["balance"] for p in weekly)
    # Long runs carry the roll-out; the spike run carries the caution flag; every prompt carries the disclaimer.
    for i, (planned, run) in enumerate(zip(runs, stored, strict=True)):
        prompt = prompts[run.id]
        if planned.minutes >= 90:
            assert "roll_out" in prompt.routines, (i, prompt.routines, prompt.reasons)
        flags = [f["name"] for f in prompt.facts["flags"]]
        assert ("spike_caution" in flags or "spike_high" in flags) == spike_expected(runs, i), (i, flags)
        assert prompt.rule and prompt.facts["run"]["id"] == run.id
    assert any(spike_expected(runs, i) for i in range(len(runs)))
    # Every email is a prompt of ours; the digest arrives at most once per week.
    grouped = emails_by_kind(rt, smtp.messages)
    assert set(grouped) <= {"post_run", "weekly_balance", "digest"}, set(grouped)
    assert len(grouped["post_run"]) == len(runs) and len(grouped["weekly_balance"]) == 6
    digest_ids = [m["Message-ID"] for m in grouped.get("digest", [])]
    assert len(digest_ids) == len(set(digest_ids)) <= 7
    for message in grouped["post_run"] + grouped["weekly_balance"]:
        body = message.get_body(preferencelist=("plain",)).get_content()
        assert "not medical advice" in body
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    long_payload = next(p for p in post_run_payloads if p["data"]["run"]["duration_s"] >= 90 * 60)
    assert "roll_out" in [r["key"] for r in long_payload["data"]["routines"]]
    assert any("long run" in reason for reason in long_payload["data"]["reasons"])

    # The same six weeks imported at once afterwards: the same load, and no post-run prompt.
    files = sorted(inbox.glob("*.fit"))
    assert len(files) == len(runs)
    later = make_settings(tmp_path / "later", clock_file=clock)
    rt2 = Runtime.open(later)
    proc = stridecare("import", ["import", str(inbox), "--json"], settings_env(later), logs)
    proc.popen.wait(timeout=300)
    assert proc.popen.returncode == 0, proc.output()[-3000:]
    reports = [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]
    assert [r["status"] for r in reports] == ["ingested"] * len(runs)
    with rt2.db.transaction() as s:
        again = list(s.scalars(select(Run).order_by(Run.start_time)))
        assert s.scalars(select(Prompt).where(Prompt.kind == "post_run")).all() == []
        loads_again = [r.load.load for r in again if r.load]
    with rt.db.transaction() as s:
        loads_live = [r.load.load for r in s.scalars(select(Run).order_by(Run.start_time)) if r.load]
    assert loads_again == pytest.approx(loads_live, rel=1e-9)
