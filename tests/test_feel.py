"""How do your feet feel? The one-tap 0–10 score offered by every post-run prompt, end to end.

A real FIT file is imported and planned; its prompt goes out through a real SMTP server (aiosmtpd), a
signed-webhook receiver, Apprise's json:// push to a loopback receiver and the console log. The link for one
score is taken from the email as it arrived and opened in the web app; the POST stores the score for the
athlete's day. Then the rules: a high score (or three rising ones) makes the next prompt gentler and says to
see a clinician; and the score is exported, forgotten, drawn under the load chart and shown on the run page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from channel_settings import channel_settings
from conftest import make_settings
from factories import ingest_planned
from fitgen import write_activity
from harness import SmtpSink, WebhookReceiver
from sqlalchemy import select
from typer.testing import CliRunner
from webclient import admin, browser

from recommender.data_rights import export_tables, forget_athlete
from recommender.feel import CLINICIAN, GENTLE_ROUTINES, gentle_reasons, parse_where, record_feel
from recommender.messages import relay_pending
from recommender.routines import WELLNESS_DISCLAIMER
from stridecare.clock import write_clock_file
from stridecare.crypto import new_webhook_secret
from stridecare.db.models import Athlete, FeelScore, Prompt
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app
from stridecare_app.web.app import create_app

START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
FEEL_LINK = re.compile(r"(http://\S+/feel/([0-9a-f]+)\?sig=[\w-]+)&score=(\d+)")


@dataclass
class World:
    rt: Runtime
    clock: Path
    sink: SmtpSink
    hook: WebhookReceiver
    push: WebhookReceiver
    tmp: Path


def _run(world: World, name: str, start: datetime) -> str:
    """Import one 40-minute run starting at ``start``, plan it and send its prompt; the prompt's id."""
    arrived = start + timedelta(minutes=50)
    write_clock_file(world.clock, arrived)
    fit = world.tmp / f"{name}.fit"
    write_activity(fit, start=start, duration_s=2400, speed_mps=3.0, cadence_rpm=85, sample_interval_s=5)
    assert ingest_planned(world.rt.db, world.rt.settings, "me", fit, arrived).status == "ingested"
    relay_pending(world.rt)
    with world.rt.db.read() as s:
        return s.scalars(select(Prompt.id).where(Prompt.kind == "post_run").order_by(Prompt.created_at.desc())).first()  # type: ignore[return-value]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    sink, hook, push = SmtpSink().start(), WebhookReceiver().start(), WebhookReceiver().start()
    hook.secret = new_webhook_secret()
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, START)
    rt = Runtime.open(
        make_settings(
            tmp_path,
            clock_file=clock,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_security="none",
            webhook_allowed_networks=["127.0.0.0/8"],
            public_url="http://127.0.0.1:8080",
        )
    )
    try:
        with rt.db.transaction() as s:
            s.add(
                Athlete(
                    name="me",
                    timezone="Europe/Berlin",
                    channel_settings=channel_settings(
                        rt.vault,
                        email="me@example.org",
                        webhook=hook.url,
                        webhook_secret=hook.secret,
                        push=push.url.replace("http://", "json://"),
                    ),
                )
            )
        yield World(rt, clock, sink, hook, push, tmp_path)
    finally:
        rt.close()
        sink.stop()
        hook.stop()
        push.stop()


def _text_part(message: Any) -> str:
    return str(message.get_body(preferencelist=("plain",)).get_content())


def _html_part(message: Any) -> str:
    return str(message.get_body(preferencelist=("html",)).get_content())


def test_every_channel_offers_the_score_and_the_link_from_a_real_email_records_it(world: World) -> None:
    prompt_id = _run(world, "first", START)
    # Email: text and HTML both carry a link per score, 0 to 10, and still the wellness line.
    (mail,) = world.sink.messages
    text, html = _text_part(mail), _html_part(mail)
    links = {int(m.group(3)): m.group(0) for m in FEEL_LINK.finditer(text)}
    assert sorted(links) == list(range(11))
    assert all(m.group(2) == prompt_id for m in FEEL_LINK.finditer(text))
    assert "How do your feet feel?" in text and WELLNESS_DISCLAIMER.split(".")[0] in text
    assert [int(x) for x in re.findall(r'data-score="(\d+)"', html)] == list(range(11))
    assert "Achilles" in html
    # Webhook: the same links and the places, in the signed payload.
    (payload,) = [json.loads(r.body) for r in world.hook.requests if r.verified]
    feel = payload["data"]["feel"]
    assert [x["score"] for x in feel["links"]] == list(range(11)) and "big toe" in feel["where"]
    assert feel["links"][6]["url"] == links[6].replace("&amp;", "&")
    # Push: the one line asks, and links to the run page, which offers the same one-tap scores.
    (pushed,) = [json.loads(r.body) for r in world.push.requests]
    assert "How do your feet feel, 0–10?" in pushed["message"]
    # Console: the log's text carries the links too.
    logged = [json.loads(line) for line in (world.rt.settings.data_home / "prompts.log").read_text().splitlines()]
    assert any("/feel/" in entry["text"] for entry in logged if entry["prompt_id"] == prompt_id)

    client = browser(create_app(world.rt))
    path = links[6].removeprefix(world.rt.settings.effective_public_url)
    asked = client.get(path)
    assert asked.status_code == 200 and 'value="6" checked' in asked.text
    with world.rt.db.read() as s:
        assert s.scalars(select(FeelScore)).first() is None  # a GET (a mail scanner) records nothing
    # A tampered signature or another prompt's id is refused alike.
    forged = path.replace("sig=", "sig=x")
    assert client.post(forged.split("&")[0], data={"score": "6"}).status_code == 403
    # A bad score is refused with a plain message and nothing stored.
    bad = client.post(path.split("&")[0], data={"score": "11"})
    assert bad.status_code == 400 and "0 (none) to 10 (worst)" in bad.text
    done = client.post(path.split("&")[0], data={"score": "6", "where": "heel"})
    assert done.status_code == 200 and "6/10 (heel)" in done.text and CLINICIAN in done.text
    with world.rt.db.read() as s:
        (row,) = s.scalars(select(FeelScore)).all()
        prompt = s.get(Prompt, prompt_id)
        assert prompt is not None
        assert (row.score, row.location, row.day, row.run_id) == (6, "heel", prompt.local_day, prompt.run_id)
    # Answering again the same day replaces the day's score.
    client.post(path.split("&")[0], data={"score": "2"})
    with world.rt.db.read() as s:
        assert [(r.score, r.location) for r in s.scalars(select(FeelScore))] == [(2, None)]


def test_a_high_score_makes_the_next_prompt_gentler_and_says_to_see_a_clinician(world: World) -> None:
    first = _run(world, "first", START)
    with world.rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete)).one()
        record_feel(s, athlete, 7, "Achilles", START + timedelta(hours=2), prompt_id=first[:8])
    second = _run(world, "second", START + timedelta(days=2))
    with world.rt.db.read() as s:
        prompt = s.get(Prompt, second)
        assert prompt is not None
        assert prompt.routines and set(prompt.routines) <= set(GENTLE_ROUTINES)
        assert "7/10 (Achilles)" in prompt.reasons[0] and CLINICIAN in prompt.reasons
        assert prompt.facts["gentler"] is True
    mail = world.sink.messages[-1]
    text = _text_part(mail)
    assert "roll-out and mobility only" in text and "see a clinician" in text
    assert WELLNESS_DISCLAIMER.split(".")[0] in text  # still wellness advice, never a promise
    # Three weeks on, the old score no longer decides: the next prompt is a normal one.
    third = _run(world, "third", START + timedelta(days=21))
    with world.rt.db.read() as s:
        prompt = s.get(Prompt, third)
        assert prompt is not None and "gentler" not in prompt.facts


def test_the_rules_high_or_three_rising_scores() -> None:
    day = date(2026, 12, 10)

    def at(*scores: int) -> list[tuple[date, int, str | None]]:
        return [(day - timedelta(days=len(scores) - 1 - i), s, None) for i, s in enumerate(scores)]

    assert gentle_reasons(at(1, 2), day) == []
    assert gentle_reasons(at(3, 2, 1), day) == []
    assert gentle_reasons(at(3, 3, 3), day) == []
    rising = gentle_reasons(at(0, 1, 2), day)
    assert "0 → 1 → 2" in rising[0] and rising[-1] == CLINICIAN
    high = gentle_reasons(at(4), day)
    assert "4/10" in high[0] and high[-1] == CLINICIAN
    # Only the last two weeks count.
    assert gentle_reasons([(day - timedelta(days=20), 9, "heel")], day) == []
    assert parse_where("Big-Toe") == "big_toe" and parse_where(None) is None
    with pytest.raises(ValueError, match="where must be one of"):
        parse_where("knee")


def _cli(world: World, args: list[str]) -> Any:
    env = {
        "STRIDECARE_DATA_HOME": str(world.rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": world.rt.settings.encryption_keys[0].get_secret_value(),
        "STRIDECARE_CLOCK_FILE": str(world.clock),
    }
    return CliRunner().invoke(app, args, env=env)


def test_the_command_line_scores_a_prompt_by_prefix_or_today(world: World) -> None:
    prompt_id = _run(world, "first", START)
    result = _cli(world, ["feel", prompt_id[:8], "5", "--where", "big toe"])
    assert result.exit_code == 0, result.output
    assert "recorded 5/10 (big toe) for me" in result.output and "gentler" in result.output
    bad = _cli(world, ["feel", "12"])
    assert bad.exit_code == 2 and "0 (none) to 10 (worst)" in bad.output
    where = _cli(world, ["feel", "3", "--where", "knee"])
    assert where.exit_code == 2 and "where must be one of" in where.output
    unknown = _cli(world, ["feel", "ffffffff", "3"])
    assert unknown.exit_code == 2 and "no prompt" in unknown.output
    write_clock_file(world.clock, START + timedelta(days=1, hours=3))
    today = _cli(world, ["feel", "1"])
    assert today.exit_code == 0, today.output
    with world.rt.db.read() as s:
        assert [(r.day.isoformat(), r.score) for r in s.scalars(select(FeelScore).order_by(FeelScore.day))] == [
            ("2026-12-01", 5),
            ("2026-12-02", 1),
        ]


def test_scores_show_on_the_dashboard_and_run_page_and_are_exported_and_forgotten(world: World) -> None:
    prompt_id = _run(world, "first", START)
    web = create_app(world.rt)
    with world.rt.db.read() as s:
        prompt = s.get(Prompt, prompt_id)
        assert prompt is not None
        run_id = prompt.run_id
    client = admin(web, world.rt)
    # Before an answer, the run page offers the one-tap scores (signed links to the same page as the email's).
    page = client.get(f"/dashboard/me/runs/{run_id}").text
    assert 'id="feel-ask"' in page and len(re.findall(r'class="feel-link"', page)) == 11
    assert _cli(world, ["feel", prompt_id[:8], "6", "--where", "heel"]).exit_code == 0
    page = client.get(f"/dashboard/me/runs/{run_id}").text
    assert 'id="feel-score" data-high="yes"' in page and "6/10 (heel)" in page
    dash = client.get("/dashboard/me?range=6w").text
    strip = dash.split('id="feel-strip"', 1)[1]
    assert dash.index('id="feel-strip"') > dash.index('id="load-chart"')
    assert 'data-day="2026-12-01" data-score="6"' in strip and CLINICIAN in strip
    with world.rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete)).one()
        names, rows = export_tables(s, athlete)["feel_scores"]
        assert "score" in names and [(r["day"], r["score"], r["location"]) for r in rows] == [("2026-12-01", 6, "heel")]
        forgotten = forget_athlete(s, athlete)
        assert forgotten.counts["feel_scores"] == 1
    with world.rt.db.read() as s:
        assert s.scalars(select(FeelScore)).first() is None
