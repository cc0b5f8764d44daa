"""Connectors are plugins for real: a connector from another package, found through its entry point in the
``stridecare.connectors`` group, pulls runs with no change to the core; one that claims a built-in's name is
refused with a warning. The package is laid out as pip installs it (module + dist-info), as for channels."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from fitgen import write_activity
from harness import install_plugin
from sqlalchemy import select

from ingest.connectors.base import connector_classes
from ingest.connectors.intervals import IntervalsConnector
from ingest.connectors.ledger import connect
from ingest.connectors.poller import sync_account
from stridecare.db.models import Run
from stridecare.runtime import Runtime

MODULE = '''
"""A connector that "pulls" from a shared folder of FIT files (the credentials are the folder)."""

from datetime import datetime, timezone
from pathlib import Path

from ingest.connectors.base import RemoteActivity


class ShelfConnector:
    name = "shelf"
    label = "A shelf of files"
    downloads_per_hour = None
    pause_s = 0.0
    cooldown_first_s = 60.0
    cooldown_max_s = 600.0

    def __init__(self, settings, credentials, save_credentials):
        self.folder = Path(credentials)

    def list_activities(self, oldest, newest):
        return [
            RemoteActivity(p.stem, datetime.fromtimestamp(p.stat().st_mtime, timezone.utc), "Run")
            for p in sorted(self.folder.glob("*.fit"))
        ]

    def download(self, activity_id):
        return (self.folder / f"{activity_id}.fit").read_bytes()


class NotReallyIntervals(ShelfConnector):
    name = "intervals"
'''


@pytest.fixture
def shelf_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install_plugin(
        tmp_path / "site",
        "stridecare_shelf",
        MODULE,
        "stridecare.connectors",
        {"shelf": "stridecare_shelf:ShelfConnector", "intervals": "stridecare_shelf:NotReallyIntervals"},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    connector_classes.cache_clear()  # discovery is read once per process; this process just "installed" one
    yield
    monkeypatch.undo()
    connector_classes.cache_clear()


def test_an_out_of_tree_connector_pulls_runs_and_a_clashing_name_is_refused(
    tmp_path: Path, shelf_installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="stridecare.plugins"):
        classes = connector_classes()
    assert classes["shelf"].__module__ == "stridecare_shelf"
    assert classes["intervals"] is IntervalsConnector  # the built-in keeps its name
    assert any("plugin 'intervals'" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)

    shelf = tmp_path / "shelf"
    shelf.mkdir()
    start = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
    for i in range(2):
        write_activity(shelf / f"run{i}.fit", start=start + timedelta(days=i), duration_s=600, speed_mps=3.0)
    rt = Runtime.open(make_settings(tmp_path))
    account = connect(rt.db, rt.settings, "me", "shelf", "my-shelf", str(shelf), rt.now())

    result = sync_account(rt.db, rt.settings, account, rt.now)
    assert sorted((i.activity_id, i.status, i.source) for i in result.items) == [
        ("run0", "ingested", "shelf"),
        ("run1", "ingested", "shelf"),
    ]
    with rt.db.read() as s:
        assert len(s.scalars(select(Run)).all()) == 2
    assert sync_account(rt.db, rt.settings, account, rt.now).items == []  # the ledger knows them
