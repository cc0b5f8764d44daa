"""Channels are plugins for real: a channel from another package, found through its entry point, receives a
prompt with no change to the core; a plugin that claims a built-in's name is refused with a warning.

The package is written by the test as an installed distribution (module + ``dist-info`` with
``entry_points.txt``) in a folder put on ``sys.path``: exactly what ``pip install`` leaves in site-packages, and
what ``importlib.metadata`` reads, without touching the shared environment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from channel_settings import channel_settings
from conftest import make_settings
from factories import ingest_planned
from fitgen import write_activity
from harness import install_plugin
from sqlalchemy import select
from typer.testing import CliRunner

from delivery.email import EmailChannel
from delivery.outbox import channels_for
from recommender.messages import relay_pending
from stridecare.clock import write_clock_file
from stridecare.db.models import Athlete, Delivery
from stridecare.plugins import channel_classes
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app

START = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)

MODULE = '''
"""A pager channel: each prompt becomes a JSON file in the athlete's pager folder."""

import json
from pathlib import Path

from stridecare.plugins import DeliveryOutcome, SettingsChannel


class PagerChannel(SettingsChannel):
    name = "pager"
    address_key = "folder"

    def send(self, message, target, secret):
        page = Path(target) / f"{message.message_id}.json"
        page.write_text(json.dumps({"subject": message.subject, "text": message.text, "done": message.done_url}))
        return DeliveryOutcome(ok=True, retry=False, detail=f"paged {page.name}")


class NotReallyEmail(PagerChannel):
    name = "email"
'''


@pytest.fixture
def pager_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install_plugin(
        tmp_path / "site",
        "stridecare_pager",
        MODULE,
        "stridecare.channels",
        {"pager": "stridecare_pager:PagerChannel", "email": "stridecare_pager:NotReallyEmail"},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    channel_classes.cache_clear()  # discovery is read once per process; this process just "installed" one
    yield
    monkeypatch.undo()
    channel_classes.cache_clear()


def test_an_out_of_tree_channel_receives_a_prompt_and_a_clashing_name_is_refused(
    tmp_path: Path, pager_installed: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="stridecare.plugins"):
        classes = channel_classes()
    assert classes["pager"].__module__ == "stridecare_pager"
    assert classes["email"] is EmailChannel  # the built-in keeps its name
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == [
        "plugin 'email' (stridecare_pager:NotReallyEmail) from package stridecare-pager refused: the name 'email' "
        "is already taken by stridecare"
    ]

    clock = tmp_path / "clock.txt"
    write_clock_file(clock, START + timedelta(minutes=45))
    rt = Runtime.open(make_settings(tmp_path, clock_file=clock))
    with rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone="UTC", channel_settings=channel_settings(console=False)))
    monkeypatch.setenv("STRIDECARE_DATA_HOME", str(rt.settings.data_home))
    monkeypatch.setenv("STRIDECARE_ENCRYPTION_KEYS", rt.settings.encryption_keys[0].get_secret_value())
    pages = tmp_path / "pages"
    pages.mkdir()
    result = CliRunner().invoke(app, ["athlete", "set", "me", "--channel", f"pager.folder={pages}"])
    assert result.exit_code == 0, result.output

    with rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete)).one()
        assert channels_for(rt.settings, athlete) == ["pager"]
    path = tmp_path / "run.fit"
    write_activity(path, start=START, duration_s=2400, speed_mps=3.0)
    assert ingest_planned(rt.db, rt.settings, "me", path, rt.now()).status == "ingested"
    assert relay_pending(rt) == 1

    with rt.db.transaction() as s:
        row = s.scalars(select(Delivery)).one()
        assert (row.channel, row.status) == ("pager", "sent")
    page = json.loads((pages / f"{row.message_id}.json").read_text())
    assert page["subject"] == "me: foot care after your 7.2 km run"
    assert "not medical advice" in page["text"]


def test_removing_a_plugin_channel_setting_stops_its_deliveries(
    tmp_path: Path, pager_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime.open(make_settings(tmp_path))
    with rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone="UTC", channel_settings=channel_settings(console=False)))
    monkeypatch.setenv("STRIDECARE_DATA_HOME", str(rt.settings.data_home))
    monkeypatch.setenv("STRIDECARE_ENCRYPTION_KEYS", rt.settings.encryption_keys[0].get_secret_value())
    runner = CliRunner()
    assert runner.invoke(app, ["athlete", "set", "me", "--channel", f"pager.folder={tmp_path}"]).exit_code == 0
    assert runner.invoke(app, ["athlete", "set", "me", "--channel", "pager="]).exit_code == 0
    with rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete)).one()
        assert "pager" not in athlete.channel_settings
        assert channels_for(rt.settings, athlete) == []
    unknown = runner.invoke(app, ["athlete", "set", "me", "--channel", "fax.number=1"])
    assert unknown.exit_code == 2
    assert "no channel named 'fax'" in unknown.output
