"""The connector commands as a runner uses them: `intervals connect` reads the key from standard input and
checks it with one call, `sync --json` prints the `ingest --json` objects plus `source` and `activity_id`,
`sources` shows inboxes and accounts, `disconnect` forgets the key; and a `stridecare sync` killed with
SIGKILL in the middle and run again downloads nothing twice and loses nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from fake_intervals import FakeActivity, FakeIntervals, running
from harness import settings_env, stridecare, wait_for
from sqlalchemy import func, select
from test_connectors_intervals import fit_maker
from typer.testing import CliRunner

from stridecare.clock import write_clock_file
from stridecare.crypto import Vault
from stridecare.db.models import ConnectorAccount, ConnectorItem, Prompt, Run
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[FakeIntervals]:
    with running() as server:
        server.add_account("i1001", "the-secret-key", "Anna")
        yield server


@pytest.fixture
def env(cli_env: Path, fake: FakeIntervals, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STRIDECARE_INTERVALS_BASE_URL", fake.url)
    write_clock_file(cli_env / "clock.txt", NOW)
    monkeypatch.setenv("STRIDECARE_CLOCK_FILE", str(cli_env / "clock.txt"))
    return cli_env


def test_connect_reads_the_key_from_stdin_checks_it_once_and_never_prints_it(env: Path, fake: FakeIntervals) -> None:
    runner = CliRunner()
    assert "--key" not in runner.invoke(app, ["intervals", "connect", "--help"]).output

    wrong = runner.invoke(app, ["intervals", "connect", "--athlete", "anna"], input="not-the-key\n")
    assert wrong.exit_code == 2 and "refused the API key (HTTP 401)" in wrong.output
    assert "not-the-key" not in wrong.output

    result = runner.invoke(app, ["intervals", "connect", "--athlete", "anna"], input="the-secret-key\n")
    assert result.exit_code == 0, result.output
    assert "connected intervals.icu athlete i1001 (Anna) for anna" in result.output
    assert "the-secret-key" not in result.output
    assert dict(fake.requests) == {"athlete": 2}  # one check per attempt, nothing else

    rt = Runtime.open(make_settings(env))
    with rt.db.read() as s:
        [row] = s.scalars(select(ConnectorAccount)).all()  # the refused key was not stored
    assert (row.provider, row.account_key) == ("intervals", "i1001")
    assert row.credentials_enc is not None and "the-secret-key" not in row.credentials_enc
    assert "the-secret-key" in Vault.from_settings(rt.settings).decrypt(row.credentials_enc)

    out = runner.invoke(app, ["intervals", "disconnect", "--athlete", "anna"])
    assert out.exit_code == 0 and "credentials of anna forgotten" in out.output
    with rt.db.read() as s:
        assert s.scalars(select(ConnectorAccount.credentials_enc)).one() is None


def test_sync_json_prints_one_object_per_activity_and_exits_2_when_one_failed(env: Path, fake: FakeIntervals) -> None:
    src = env / "src"
    src.mkdir()
    fake.add("i1001", fit_maker(src, "fresh", NOW - timedelta(hours=2)))
    fake.add("i1001", fit_maker(src, "broken", NOW - timedelta(minutes=30)))
    fake.add("i1001", FakeActivity("ride", NOW - timedelta(days=2), sport="Ride"))
    runner = CliRunner()
    assert runner.invoke(app, ["intervals", "connect", "--athlete", "anna"], input="the-secret-key\n").exit_code == 0
    fake.fail_next("file", 404, times=1)  # asked newest first: "broken" is not served

    result = runner.invoke(app, ["sync", "--athlete", "anna", "--json"])
    assert result.exit_code == 2, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_id = {line["activity_id"]: line for line in lines}
    assert set(by_id) == {"fresh", "broken", "ride"}
    for line in lines:
        assert set(line) == {"path", "status", "reason", "runs", "source", "activity_id"}
        assert line["source"] == "intervals"
    assert by_id["ride"]["status"] == "skipped" and by_id["ride"]["reason"] == "not a foot sport (Ride)"
    assert by_id["broken"]["status"] == "failed" and "HTTP 404" in by_id["broken"]["reason"]
    [run] = by_id["fresh"]["runs"]
    assert by_id["fresh"]["status"] == "ingested" and run["load"] is not None  # planned before it was printed

    listing = runner.invoke(app, ["sources", "--athlete", "anna", "--json"])
    assert listing.exit_code == 0, listing.output
    [account] = [json.loads(line) for line in listing.stdout.splitlines() if '"account"' in line]
    assert account["state"] == "connected" and (account["seen"], account["stored"], account["skipped"]) == (3, 1, 1)
    assert account["waiting"] == 1 and account["next_pull"] is not None

    text = runner.invoke(app, ["sources", "--athlete", "anna"])
    assert "anna: intervals i1001: connected" in text.output and "3 seen, 1 stored, 1 skipped, 1 waiting" in text.output


def test_a_sync_killed_in_the_middle_and_run_again_downloads_nothing_twice_and_loses_nothing(
    tmp_path: Path, fake: FakeIntervals
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ids = [f"a{i}" for i in range(12)]
    for i, name in enumerate(ids):
        activity = fake.add("i1001", fit_maker(src, name, NOW - timedelta(hours=1 + 30 * i)))
        activity.gzipped = i % 3 == 0
        activity.original()  # made now, so that the child is not kept waiting
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, NOW)
    settings = make_settings(tmp_path, intervals_base_url=fake.url, clock_file=clock)
    rt = Runtime.open(settings)
    from ingest.connectors.intervals import credentials_json
    from ingest.connectors.ledger import connect

    connect(rt.db, settings, "me", "intervals", "i1001", credentials_json("the-secret-key", "i1001"), rt.now())

    reached, release = threading.Event(), threading.Event()
    served: list[str] = []

    def hold_the_sixth(activity_id: str) -> bool:
        served.append(activity_id)
        if len(served) == 6:
            reached.set()
            release.wait(30)
            return False  # its client is dead by now: never received
        return True

    fake.on_download = hold_the_sixth
    first = stridecare("sync1", ["sync", "--json"], settings_env(settings), tmp_path / "logs")
    try:
        assert reached.wait(120), first.output()
        first.kill()  # SIGKILL to the whole group, mid-download
    finally:
        release.set()
        first.kill()
    assert dict(fake.downloads) == {name: 1 for name in ids[:5]}

    fake.on_download = None
    second = stridecare("sync2", ["sync", "--json"], settings_env(settings), tmp_path / "logs")
    wait_for(lambda: not second.alive(), timeout=180, what="the second sync to finish")
    assert second.popen.returncode == 0, second.output()

    assert dict(fake.downloads) == {name: 1 for name in ids}  # each served once, the dropped one included
    assert fake.dropped == 1
    with rt.db.read() as s:
        assert set(s.scalars(select(ConnectorItem.status))) == {"ingested"}
        assert s.scalar(select(func.count()).select_from(Run).where(Run.duplicate_of_id.is_(None))) == 12
        assert s.scalar(select(func.count()).select_from(Prompt)) == 1  # the fresh run's, once
    lines = [json.loads(line) for line in second.output().splitlines() if line.startswith("{")]
    assert {line["activity_id"] for line in lines} >= set(ids[5:])


def test_export_lists_the_accounts_without_secrets_and_forget_removes_them(env: Path, fake: FakeIntervals) -> None:
    src = env / "src"
    src.mkdir()
    fake.add("i1001", fit_maker(src, "one", NOW - timedelta(days=1)))
    runner = CliRunner()
    assert runner.invoke(app, ["intervals", "connect", "--athlete", "anna"], input="the-secret-key\n").exit_code == 0
    assert runner.invoke(app, ["sync"]).exit_code == 0

    out = env / "export"
    result = runner.invoke(app, ["export", "anna", "--out", str(out)])
    assert result.exit_code == 0, result.output
    [account] = json.loads((out / "accounts.json").read_text())
    assert account["provider"] == "intervals" and account["account"] == "i1001" and account["activities"] == 1
    assert account["credentials"] == "(secret, not exported)"
    assert not [p for p in out.iterdir() if "the-secret-key" in p.read_text()]

    assert runner.invoke(app, ["forget", "anna", "--yes"]).exit_code == 0
    rt = Runtime.open(make_settings(env))
    with rt.db.read() as s:
        assert s.scalar(select(func.count()).select_from(ConnectorAccount)) == 0
        assert s.scalar(select(func.count()).select_from(ConnectorItem)) == 0


def test_the_home_page_shows_each_athletes_accounts_and_their_state(tmp_path: Path, fake: FakeIntervals) -> None:
    from webclient import admin

    from ingest.connectors.intervals import credentials_json
    from ingest.connectors.ledger import connect
    from ingest.connectors.poller import sync_account
    from stridecare_app.web.app import create_app

    rt = Runtime.open(make_settings(tmp_path, intervals_base_url=fake.url))
    account = connect(rt.db, rt.settings, "anna", "intervals", "i1001", credentials_json("wrong", "i1001"), rt.now())
    sync_account(rt.db, rt.settings, account, rt.now)
    page = admin(create_app(rt), rt).get("/").text
    assert 'intervals i1001: <span class="bad">refused</span>, 0 stored' in page
    assert "intervals.icu refused the API key (HTTP 401)" in page
