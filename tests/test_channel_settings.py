"""Every channel's per-athlete settings live in ``athletes.channel_settings``, one schema per channel: the command
line writes through the schema (a bad value is a plain message and stores nothing), the channels read only
there, an unsubscribe and a 410 mark their channel and a fresh setting clears the mark, export shows them
without secrets, and forget removes them with the athlete."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from delivery.email import EmailChannel
from delivery.push import PushChannel
from delivery.webhook import WebhookChannel
from recommender.data_rights import WITHHELD, export_athlete, forget_athlete
from stridecare.db.models import Athlete
from stridecare.plugins import (
    InvalidChannelSettings,
    channel_classes,
    channel_options,
    patch_channel_options,
    store_channel_settings,
)
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.cli.main import app

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _athlete(rt: Runtime) -> Athlete:
    with rt.db.read() as s:
        athlete = s.scalars(select(Athlete).where(Athlete.name == "ann")).one()
        s.expunge(athlete)
        return athlete


@pytest.fixture
def cli_rt(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("STRIDECARE_SMTP_HOST", "mail.example.org")
    assert CliRunner().invoke(app, ["athlete", "add", "ann"]).exit_code == 0
    from stridecare.settings import load_settings

    return Runtime.open(load_settings())


def test_athlete_set_writes_every_channel_into_the_one_place(cli_rt: Runtime) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["athlete", "set", "ann", "--email", "ann@example.org", "--webhook", "https://hooks.example.org/ann"],
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.split("webhook secret (shown once, verify signatures with it): ")[1].split()[0]
    assert runner.invoke(app, ["athlete", "set", "ann", "--channel", "console.enabled=false"]).exit_code == 0
    athlete = _athlete(cli_rt)
    stored = athlete.channel_settings
    assert stored["email"] == {"address": "ann@example.org"}
    assert stored["webhook"]["url"] == "https://hooks.example.org/ann"
    assert secret not in json.dumps(stored)  # the signing secret is stored encrypted
    assert cli_rt.vault.decrypt(stored["webhook"]["secret"]) == secret
    assert stored["console"] == {"enabled": False}
    settings = cli_rt.settings
    assert EmailChannel(settings).wants(athlete) and WebhookChannel(settings).wants(athlete)
    assert not channel_classes()["console"](settings).wants(athlete)
    listed = json.loads(runner.invoke(app, ["athlete", "list", "--json"]).stdout)
    assert listed[0]["email"] == "ann@example.org" and listed[0]["console"] is False
    assert runner.invoke(app, ["athlete", "list"]).stdout.split()[2:] == ["email,", "webhook_url"]

    # Setting the webhook again keeps its secret; removing it removes the channel, secret and all.
    assert runner.invoke(app, ["athlete", "set", "ann", "--webhook", "https://hooks.example.org/v2"]).exit_code == 0
    assert cli_rt.vault.decrypt(_athlete(cli_rt).channel_settings["webhook"]["secret"]) == secret
    assert runner.invoke(app, ["athlete", "set", "ann", "--webhook", "", "--email", ""]).exit_code == 0
    assert set(_athlete(cli_rt).channel_settings) == {"console"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--channel", "email.address=not an address"], "email.address: Value error, 'not an address' is not"),
        (["--channel", "email.colour=blue"], "email.address: required"),
        (["--email", "ann@example.org", "--channel", "email.colour=blue"], "email.colour: Extra inputs are not"),
        (["--channel", "console.enabled=maybe"], "console.enabled: Input should be a valid boolean"),
        (["--channel", "webhook.url=ftp://x.example/"], "the webhook URL must start with https://"),
        (["--email", "nobody"], "'nobody' is not an email address"),
    ],
)
def test_a_value_the_schema_refuses_is_a_plain_message_and_stores_nothing(
    cli_rt: Runtime, args: list[str], message: str
) -> None:
    before = _athlete(cli_rt).channel_settings
    result = CliRunner().invoke(app, ["athlete", "set", "ann", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert _athlete(cli_rt).channel_settings == before


def test_unsubscribe_and_gone_mark_their_channel_and_a_fresh_setting_clears_the_mark(settings: Settings) -> None:
    rt = Runtime.open(settings.model_copy(update={"smtp_host": "mail.example.org"}))
    email, webhook, push = EmailChannel(rt.settings), WebhookChannel(rt.settings), PushChannel(rt.settings)
    athlete = Athlete(name="ann", timezone="UTC", channel_settings={})
    store_channel_settings(athlete, email, {"address": "ann@example.org"}, rt.vault)
    store_channel_settings(athlete, webhook, {"url": "https://hooks.example.org/a", "secret": "whsec_eA=="}, rt.vault)
    store_channel_settings(athlete, push, {"url": "ntfy://ntfy.sh/ann"}, rt.vault)
    assert channel_options(athlete, "push")["url"] != "ntfy://ntfy.sh/ann"  # encrypted
    assert push.target(athlete, rt.vault).address == "ntfy://ntfy.sh/ann"

    patch_channel_options(athlete, "email", unsubscribed_at=NOW)  # the one-click link
    webhook.disable(athlete, NOW)  # 410 Gone
    push.disable(athlete, NOW)
    assert not email.wants(athlete) and not webhook.wants(athlete) and not push.wants(athlete)
    assert channel_options(athlete, "email")["unsubscribed_at"] == NOW.isoformat()
    store_channel_settings(athlete, email, {"address": "ann@example.org"}, rt.vault)
    store_channel_settings(athlete, webhook, {"url": "https://hooks.example.org/a"}, rt.vault)
    assert email.wants(athlete) and webhook.wants(athlete) and not push.wants(athlete)
    assert webhook.target(athlete, rt.vault).secret == "whsec_eA=="
    with pytest.raises(InvalidChannelSettings, match=r"push\.url: required"):
        store_channel_settings(athlete, push, {"url": None, "disabled_at": "now"}, rt.vault)
    rt.close()


def test_export_shows_channel_settings_without_secrets_and_forget_removes_them(rt: Runtime, tmp_path: Path) -> None:
    with rt.db.transaction() as s:
        athlete = Athlete(name="ann", timezone="UTC", channel_settings={})
        store_channel_settings(athlete, EmailChannel(rt.settings), {"address": "ann@example.org"}, rt.vault)
        store_channel_settings(
            athlete, WebhookChannel(rt.settings), {"url": "https://h.example/a", "secret": "whsec_eA=="}, rt.vault
        )
        store_channel_settings(athlete, PushChannel(rt.settings), {"url": "tgram://123:tok/456"}, rt.vault)
        s.add(athlete)
        s.flush()
        export_athlete(s, athlete, tmp_path / "out")
    channels = {row["channel"]: row["settings"] for row in json.loads((tmp_path / "out" / "channels.json").read_text())}
    assert channels["email"] == {"address": "ann@example.org"}
    assert channels["webhook"] == {"secret": WITHHELD, "url": "https://h.example/a"}
    assert channels["push"] == {"url": WITHHELD}
    everything = "".join(p.read_text() for p in (tmp_path / "out").iterdir())
    assert "whsec_" not in everything and "tok" not in everything and "gAAAA" not in everything
    with rt.db.transaction() as s:
        forget_athlete(s, s.scalars(select(Athlete)).one())
    with rt.db.read() as s:
        assert s.scalars(select(Athlete)).all() == []
