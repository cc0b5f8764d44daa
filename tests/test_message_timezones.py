"""Dates and times in every message are the athlete's, for athletes in Pacific/Auckland, Asia/Tokyo and
America/Los_Angeles, whose local day differs from the UTC day of the run: the prompt's text (email and console),
the webhook payload, the push notification, the time a quiet-hours hold ends, and the weekly digest.

One real pipeline per zone: a FIT file stored and planned, the prompt held by quiet hours and released, then the
weekly digest; delivered through a real SMTP server, a signed-webhook receiver, Apprise's json:// push to a
loopback receiver, and the console's prompts.log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from channel_settings import channel_settings
from conftest import make_settings
from factories import ingest_planned
from fitgen import write_activity
from harness import SmtpSink, WebhookReceiver
from sqlalchemy import select
from typer.testing import CliRunner

from recommender.digest import weekly_digests
from recommender.messages import relay_pending
from recommender.silence import outcomes_for_runs
from stridecare.clock import write_clock_file
from stridecare.crypto import new_webhook_secret
from stridecare.db.models import Athlete, Prompt, Run
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app
from workers.announce import prompt_line

# Each run starts on a different calendar day than its UTC day: Monday 7 December in Auckland and Tokyo is
# still Sunday in UTC; Sunday 6 December in Los Angeles is already Monday in UTC.
CASES = {
    "Pacific/Auckland": (datetime(2026, 12, 6, 22, 28, tzinfo=UTC), date(2026, 12, 7), "Mon 7 Dec"),
    "Asia/Tokyo": (datetime(2026, 12, 6, 22, 28, tzinfo=UTC), date(2026, 12, 7), "Mon 7 Dec"),
    "America/Los_Angeles": (datetime(2026, 12, 7, 3, 0, tzinfo=UTC), date(2026, 12, 6), "Sun 6 Dec"),
}
MINUTES = 40


@dataclass
class Delivered:
    """Everything one zone's athlete received, and the facts to check it against."""

    zone: ZoneInfo
    run_day: date
    day_text: str
    held_until: datetime
    console_line: str
    prompts_output: str
    emails: list[Any]
    webhooks: list[dict[str, Any]]
    pushes: list[dict[str, Any]]
    logged: list[dict[str, Any]]
    prompt_id: str
    digest_id: str


def _post_run(items: list[dict[str, Any]], key: str, prompt_id: str) -> dict[str, Any]:
    (found,) = [i for i in items if i[key] == prompt_id]
    return found


@pytest.fixture(scope="module", params=sorted(CASES))
def delivered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivered]:
    zone_name: str = request.param
    zone = ZoneInfo(zone_name)
    start, run_day, day_text = CASES[zone_name]
    tmp = tmp_path_factory.mktemp(zone_name.replace("/", "_"))
    sink, hook, push = SmtpSink().start(), WebhookReceiver().start(), WebhookReceiver().start()
    secret = new_webhook_secret()
    hook.secret = secret
    arrived = start + timedelta(minutes=MINUTES + 10)
    clock = tmp / "clock.txt"
    write_clock_file(clock, arrived)
    rt = Runtime.open(
        make_settings(
            tmp,
            clock_file=clock,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_security="none",
            webhook_allowed_networks=["127.0.0.0/8"],
        )
    )
    # Quiet from the top of the local hour the run arrives in, for two hours: the prompt is held.
    local = arrived.astimezone(zone)
    quiet_from = local.replace(minute=0, second=0, microsecond=0)
    quiet_to = quiet_from + timedelta(hours=2)
    try:
        with rt.db.transaction() as s:
            s.add(
                Athlete(
                    name="me",
                    timezone=zone_name,
                    quiet_start=f"{quiet_from:%H:%M}",
                    quiet_end=f"{quiet_to:%H:%M}",
                    channel_settings=channel_settings(
                        rt.vault,
                        email="me@example.org",
                        webhook=hook.url,
                        webhook_secret=secret,
                        push=push.url.replace("http://", "json://"),
                    ),
                )
            )
        # An older run in the week before, for the digest (history: no prompt of its own).
        older = tmp / "older.fit"
        write_activity(older, start=start - timedelta(days=4, hours=2), duration_s=1800, speed_mps=3.0)
        assert ingest_planned(rt.db, rt.settings, "me", older, arrived).status == "ingested"
        fit = tmp / "run.fit"
        write_activity(fit, start=start, duration_s=MINUTES * 60, speed_mps=3.0, cadence_rpm=85, sample_interval_s=5)
        assert ingest_planned(rt.db, rt.settings, "me", fit, arrived).status == "ingested"
        with rt.db.read() as s:
            prompt = s.scalars(select(Prompt).where(Prompt.kind == "post_run")).one()
            prompt_id, due = prompt.id, prompt.due_at
            run_id = s.scalars(select(Run.id).where(Run.id == prompt.run_id)).one()
            (outcome,) = outcomes_for_runs(s, rt.settings, [run_id])
        assert relay_pending(rt) == 0  # held
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STRIDECARE_DATA_HOME", str(rt.settings.data_home))
            mp.setenv("STRIDECARE_ENCRYPTION_KEYS", rt.settings.encryption_keys[0].get_secret_value())
            mp.setenv("STRIDECARE_CLOCK_FILE", str(clock))
            listed = CliRunner().invoke(app, ["prompts", "--athlete", "me"])
        assert listed.exit_code == 0, listed.output
        write_clock_file(clock, due)
        relay_pending(rt)
        # The digest: on Monday 7 December after 08:00 local (the default), once the hold has passed.
        monday = datetime(2026, 12, 7, 8, 5, tzinfo=zone).astimezone(UTC)
        write_clock_file(clock, max(monday, due + timedelta(minutes=5)))
        assert weekly_digests(rt) == 1
        relay_pending(rt)
        with rt.db.read() as s:
            digest_id = s.scalars(select(Prompt.id).where(Prompt.kind == "digest")).one()
        logged = [json.loads(line) for line in (rt.settings.data_home / "prompts.log").read_text().splitlines()]
        yield Delivered(
            zone=zone,
            run_day=run_day,
            day_text=day_text,
            held_until=due,
            console_line=prompt_line(outcome),
            prompts_output=listed.stdout,
            emails=list(sink.messages),
            webhooks=[json.loads(r.body) for r in hook.requests if r.verified],
            pushes=[json.loads(r.body) for r in push.requests],
            logged=logged,
            prompt_id=prompt_id,
            digest_id=digest_id,
        )
    finally:
        rt.close()
        sink.stop()
        hook.stop()
        push.stop()


def test_prompt_text_names_the_athletes_day(delivered: Delivered) -> None:
    mails = [m for m in delivered.emails if "foot care after your" in str(m["Subject"])]
    assert len(mails) == 1
    text = mails[0].get_body(preferencelist=("plain",)).get_content()
    html = mails[0].get_body(preferencelist=("html",)).get_content()
    assert f"After your run on {delivered.day_text} (" in text
    assert f"After your run on {delivered.day_text} (" in html
    console = _post_run(delivered.logged, "prompt_id", delivered.prompt_id)
    assert f"After your run on {delivered.day_text} (" in console["text"]


def test_webhook_payload_dates_are_the_athletes(delivered: Delivered) -> None:
    data = next(p["data"] for p in delivered.webhooks if p["data"]["prompt_id"] == delivered.prompt_id)
    assert data["timezone"] == delivered.zone.key
    run = data["run"]
    assert run["date"] == delivered.run_day.isoformat()
    local_start = datetime.fromisoformat(run["start_time_local"])
    utc_start = datetime.fromisoformat(run["start_time"].replace("Z", "+00:00"))
    assert local_start == utc_start and local_start.utcoffset() == utc_start.astimezone(delivered.zone).utcoffset()
    assert local_start.date() == delivered.run_day != utc_start.date()
    created_local = datetime.fromisoformat(data["created_at_local"])
    assert created_local.utcoffset() == created_local.astimezone(delivered.zone).utcoffset()


def test_push_notification_names_the_athletes_day(delivered: Delivered) -> None:
    post_run = [p for p in delivered.pushes if "foot care after your" in p["title"]]
    assert len(post_run) == 1
    line, link = post_run[0]["message"].split("\n")
    assert line.startswith(f"{delivered.day_text}: ")
    assert "/dashboard/me/runs/" in link


def test_held_until_is_the_athletes_time(delivered: Delivered) -> None:
    local = delivered.held_until.astimezone(delivered.zone)
    data = next(p["data"] for p in delivered.webhooks if p["data"]["prompt_id"] == delivered.prompt_id)
    assert datetime.fromisoformat(data["held_until_local"]) == delivered.held_until
    assert data["held_until_local"].startswith(f"{local:%Y-%m-%dT%H:%M}")
    assert local.minute == 0  # the quiet hours end at the top of a local hour
    assert f"held for quiet hours until {local:%Y-%m-%d %H:%M} {local.tzname()}" in delivered.console_line
    day = f"{local:%a} {local.day} {local:%b}"
    assert f"held for quiet hours until {day} {local:%H:%M} {local.tzname()}" in delivered.prompts_output


def test_digest_dates_are_the_athletes(delivered: Delivered) -> None:
    # The week before the local Monday 7 December: Monday 30 November to Sunday 6 December, in every zone.
    period = "30 Nov – 6 Dec"
    (mail,) = [m for m in delivered.emails if "your week in running" in str(m["Subject"])]
    assert period in str(mail["Subject"])
    console = _post_run(delivered.logged, "prompt_id", delivered.digest_id)
    assert f"Your week in running, {period}:" in console["text"]
    data = next(p["data"] for p in delivered.webhooks if p["data"]["prompt_id"] == delivered.digest_id)
    assert data["timezone"] == delivered.zone.key
    assert (data["totals"]["first_day"], data["totals"]["last_day"]) == ("2026-11-30", "2026-12-06")
    created_local = datetime.fromisoformat(data["created_at_local"])
    assert created_local.utcoffset() == created_local.astimezone(delivered.zone).utcoffset()
    assert created_local.astimezone(delivered.zone).date() == date(2026, 12, 7)
    (push,) = [p for p in delivered.pushes if "your week in running" in p["title"]]
    line, link = push["message"].split("\n")
    assert "run" in line and "km" in line and "/dashboard/me?t=" in link
