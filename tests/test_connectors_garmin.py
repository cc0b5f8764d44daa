"""Garmin Connect as a connector. Garmin cannot be reached from here and python-garminconnect talks only to
Garmin's domains, so the library sits behind ``GarminAdapter`` and everything else runs against a fake adapter
with the same contract (our errors, tokens as a string, ORIGINAL as a zip). The last test checks that the
installed library still has what the real adapter calls."""

from __future__ import annotations

import ast
import inspect
import io
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fitgen import write_activity
from sqlalchemy import select
from typer.testing import CliRunner

from ingest.connectors.base import Blocked, KeyRefused, RateLimited
from ingest.connectors.garmin import GarminAdapter, GarminConnector
from ingest.connectors.ledger import account_states, connect, due_accounts
from ingest.connectors.poller import sync_account
from stridecare.clock import write_clock_file
from stridecare.crypto import Vault
from stridecare.db.models import ConnectorAccount
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@dataclass
class FakeGarmin:
    """Garmin as the adapter sees it: one user, activities with ORIGINAL zips, tokens that expire."""

    email: str = "anna@example.org"
    password: str = "hunter2"
    mfa_code: str | None = None
    tokens_version: int = 1
    expire_on_resume: bool = False
    activities: list[dict[str, Any]] = field(default_factory=list)
    originals: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[Exception]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def tokens(self) -> str:
        return json.dumps({"display_name": "anna-runs", "oauth": f"token-v{self.tokens_version}"})

    def fault(self, kind: str) -> None:
        queued = self.faults.get(kind)
        if queued:
            raise queued.pop(0)


class FakeAdapter:
    """Same methods and errors as ``GarminAdapter``."""

    def __init__(self, garmin: FakeGarmin) -> None:
        self.g = garmin

    def login(self, email: str, password: str, prompt_mfa: Any) -> str:
        self.g.calls.append("login")
        self.g.fault("login")
        if (email, password) != (self.g.email, self.g.password):
            raise KeyRefused("Garmin Connect refused the login")
        if self.g.mfa_code is not None and prompt_mfa() != self.g.mfa_code:
            raise KeyRefused("Garmin Connect refused the MFA code")
        return self.g.tokens()

    def resume(self, tokens: str) -> None:
        self.g.calls.append("resume")
        self.g.fault("resume")
        if json.loads(tokens)["oauth"] != f"token-v{self.g.tokens_version}":
            raise KeyRefused("Garmin Connect refused the saved tokens")
        if self.g.expire_on_resume:  # the library refreshed them while logging in
            self.g.tokens_version += 1

    def tokens(self) -> str:
        return self.g.tokens()

    def display_name(self) -> str | None:
        return "anna-runs"

    def list_activities(self, oldest: date, newest: date) -> list[dict[str, Any]]:
        self.g.calls.append("list")
        self.g.fault("list")
        return [a for a in self.g.activities if oldest.isoformat() <= a["startTimeGMT"][:10] <= newest.isoformat()]

    def download_original(self, activity_id: str) -> bytes:
        self.g.calls.append(f"download {activity_id}")
        self.g.fault("download")
        return self.g.originals[activity_id]


@pytest.fixture
def garmin(monkeypatch: pytest.MonkeyPatch) -> FakeGarmin:
    fake = FakeGarmin()
    monkeypatch.setattr(GarminConnector, "adapter_factory", lambda: FakeAdapter(fake))
    return fake


def add_run(garmin: FakeGarmin, folder: Path, activity_id: int, start: datetime, sport: str = "running") -> None:
    path = folder / f"{activity_id}.fit"
    write_activity(path, start=start, duration_s=120, speed_mps=3.0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"{activity_id}_ACTIVITY.fit", path.read_bytes())
    garmin.originals[str(activity_id)] = buffer.getvalue()
    garmin.activities.append(
        {
            "activityId": activity_id,
            "startTimeGMT": start.strftime("%Y-%m-%d %H:%M:%S"),
            "activityType": {"typeKey": sport},
        }
    )


def open_rt(tmp_path: Path, at: datetime = NOW) -> Runtime:
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, at)
    return Runtime.open(make_settings(tmp_path, clock_file=clock))


def set_clock(rt: Runtime, at: datetime) -> None:
    assert rt.settings.clock_file is not None
    write_clock_file(rt.settings.clock_file, at)


def stored_tokens(rt: Runtime, account_id: int) -> str:
    with rt.db.read() as s:
        row = s.get(ConnectorAccount, account_id)
        assert row is not None and row.credentials_enc is not None
        return Vault.from_settings(rt.settings).decrypt(row.credentials_enc)


def test_connect_asks_for_the_mfa_code_and_stores_only_the_tokens_encrypted(
    tmp_path: Path, garmin: FakeGarmin, cli_env: Path
) -> None:
    garmin.mfa_code = "924513"
    result = CliRunner().invoke(
        app, ["garmin", "connect", "--athlete", "anna"], input="anna@example.org\nhunter2\n924513\n"
    )
    assert result.exit_code == 0, result.output
    assert "connected Garmin Connect anna-runs for anna" in result.output
    assert "hunter2" not in result.output
    assert garmin.calls == ["login"]

    rt = Runtime.open(make_settings(tmp_path))
    with rt.db.read() as s:
        row = s.scalars(select(ConnectorAccount)).one()
    assert (row.provider, row.account_key, row.state) == ("garmin", "anna-runs", "connected")
    assert row.credentials_enc is not None and "token-v1" not in row.credentials_enc
    assert json.loads(stored_tokens(rt, row.id))["oauth"] == "token-v1"
    database = (rt.settings.data_home / "stridecare.db").read_bytes()
    assert b"hunter2" not in database and b"token-v1" not in database  # the password was never stored

    wrong = CliRunner().invoke(app, ["garmin", "connect", "--athlete", "anna"], input="anna@example.org\nhunter2\n1\n")
    assert wrong.exit_code == 2 and "refused the MFA code" in wrong.output


def test_tokens_refreshed_during_a_pull_are_saved_again(tmp_path: Path, garmin: FakeGarmin) -> None:
    src = tmp_path / "src"
    src.mkdir()
    add_run(garmin, src, 101, NOW - timedelta(days=1))
    rt = open_rt(tmp_path)
    account = connect(rt.db, rt.settings, "anna", "garmin", "anna-runs", garmin.tokens(), rt.now())
    garmin.expire_on_resume = True

    result = sync_account(rt.db, rt.settings, account, rt.now, sleep=lambda s: None)
    assert [(i.activity_id, i.status) for i in result.items] == [("101", "ingested")]
    assert json.loads(stored_tokens(rt, account))["oauth"] == "token-v2"

    # The next pull logs in with the refreshed tokens (the old ones would be refused).
    garmin.expire_on_resume = False
    set_clock(rt, NOW + timedelta(hours=1))
    again = sync_account(rt.db, rt.settings, account, rt.now, sleep=lambda s: None)
    assert again.stopped is None and garmin.calls.count("resume") == 2


def test_the_zip_original_is_unpacked_and_downloads_are_throttled_to_25_an_hour_with_jitter(
    tmp_path: Path, garmin: FakeGarmin
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        add_run(garmin, src, 1000 + i, NOW - timedelta(hours=3 + 10 * i))
    add_run(garmin, src, 2000, NOW - timedelta(hours=1), sport="cycling")
    rt = open_rt(tmp_path)
    account = connect(rt.db, rt.settings, "anna", "garmin", "anna-runs", garmin.tokens(), rt.now())
    pauses: list[float] = []

    first = sync_account(rt.db, rt.settings, account, rt.now, sleep=pauses.append)
    downloads = [c for c in garmin.calls if c.startswith("download")]
    assert len(downloads) == 25 and "download 2000" not in downloads
    assert downloads[0] == "download 1000"  # newest first: today's run is not behind the history
    assert first.waiting == 5 and "at most 25 downloads an hour from garmin" in str(first.stopped)
    assert not first.trouble
    assert len(pauses) == 24 and all(2.0 <= p <= 6.0 for p in pauses) and len(set(pauses)) > 1
    stored = [i for i in first.items if i.status == "ingested"]
    assert len(stored) == 25 and all(Path(str(i.path)).read_bytes()[8:12] == b".FIT" for i in stored)

    # Nothing more in this hour, however often it is asked.
    set_clock(rt, NOW + timedelta(minutes=30))
    assert due_accounts(rt.db, rt.now()) == []
    sync_account(rt.db, rt.settings, account, rt.now, sleep=pauses.append)
    assert len([c for c in garmin.calls if c.startswith("download")]) == 25

    set_clock(rt, NOW + timedelta(hours=1, minutes=5))
    last = sync_account(rt.db, rt.settings, account, rt.now, sleep=pauses.append)
    assert last.stopped is None and len([i for i in last.items if i.status == "ingested"]) == 5
    [state] = account_states(rt.db, "anna")
    assert (state.stored, state.skipped, state.waiting) == (30, 1, 0)


def test_a_429_cools_down_2_hours_doubling_to_24_and_is_never_retried_at_once(
    tmp_path: Path, garmin: FakeGarmin
) -> None:
    rt = open_rt(tmp_path)
    account = connect(rt.db, rt.settings, "anna", "garmin", "anna-runs", garmin.tokens(), rt.now())
    at = NOW
    waits = []
    for _ in range(6):
        garmin.faults["resume"] = [RateLimited("Garmin Connect asks us to wait (too many requests)")]
        calls = len(garmin.calls)
        result = sync_account(rt.db, rt.settings, account, lambda: at, sleep=lambda s: None)
        assert result.trouble and len(garmin.calls) == calls + 1  # one login attempt, no retry
        with rt.db.read() as s:
            row = s.get(ConnectorAccount, account)
            assert row is not None and row.cooldown_until is not None
            waits.append((row.cooldown_until - at) / timedelta(hours=1))
        # A minute before the cooldown ends: neither the beat nor `sync` asks Garmin anything.
        at = row.cooldown_until - timedelta(minutes=1)
        assert due_accounts(rt.db, at) == []
        assert "cooling down" in str(sync_account(rt.db, rt.settings, account, lambda: at).stopped)
        assert len(garmin.calls) == calls + 1
        at += timedelta(minutes=2)
    assert waits == [2, 4, 8, 16, 24, 24]


def test_a_cloudflare_block_and_a_refused_login_are_plain_statuses(tmp_path: Path, garmin: FakeGarmin) -> None:
    rt = open_rt(tmp_path)
    account = connect(rt.db, rt.settings, "anna", "garmin", "anna-runs", garmin.tokens(), rt.now())
    garmin.faults["list"] = [Blocked("Garmin Connect blocks this client (a Cloudflare challenge)")]
    result = sync_account(rt.db, rt.settings, account, rt.now, sleep=lambda s: None)
    assert result.trouble and "Cloudflare" in str(result.stopped)
    [state] = account_states(rt.db, "anna")
    assert state.state == "blocked" and state.cooldown_until == NOW + timedelta(hours=2)

    set_clock(rt, NOW + timedelta(hours=3))
    garmin.tokens_version = 9  # the tokens were revoked at Garmin
    refused = sync_account(rt.db, rt.settings, account, rt.now, sleep=lambda s: None)
    assert "refused the saved tokens" in str(refused.stopped)
    [state] = account_states(rt.db, "anna")
    assert state.state == "refused" and state.next_pull is None


def test_the_installed_library_still_has_what_the_adapter_uses() -> None:
    """Contract: the calls and exceptions ``GarminAdapter`` relies on exist in python-garminconnect."""
    try:
        import garminconnect
    except ImportError:
        pytest.skip(
            "python-garminconnect is not installed (pip install 'stridecare[garmin]'; it needs Python 3.12 or "
            "later, and this environment may be older)"
        )
    for name in (
        "GarminConnectTooManyRequestsError",
        "GarminConnectAuthenticationError",
        "GarminConnectConnectionError",
    ):
        assert issubclass(getattr(garminconnect, name), Exception), name
    garmin_class = garminconnect.Garmin
    params = inspect.signature(garmin_class.__init__).parameters
    assert {"email", "password", "prompt_mfa", "retry_attempts"} <= set(params)
    assert "tokenstore" in inspect.signature(garmin_class.login).parameters
    assert list(inspect.signature(garmin_class.get_activities_by_date).parameters)[1:5] == [
        "startdate",
        "enddate",
        "activitytype",
        "sortorder",
    ]
    assert "dl_fmt" in inspect.signature(garmin_class.download_activity).parameters
    assert garmin_class.ActivityDownloadFormat.ORIGINAL is not None
    unlogged = garmin_class(retry_attempts=0)
    assert callable(unlogged.client.dumps) and hasattr(unlogged, "display_name")
    adapter = GarminAdapter()
    assert adapter._lib is garminconnect


def _published_wheel(folder: Path) -> Path:
    """The newest python-garminconnect wheel the adapter allows, fetched from the package index (not installed:
    it needs Python 3.12, which CI may not have); skips with the reason when the index cannot be reached."""
    download = ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", *download, "--dest", str(folder), "garminconnect>=0.3.20"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheels = sorted(folder.glob("garminconnect-*.whl"))
    if result.returncode != 0 or not wheels:
        pytest.skip(f"the package index cannot be reached to fetch python-garminconnect: {result.stderr[-300:]}")
    return wheels[-1]


def test_the_published_library_declares_what_the_adapter_uses(tmp_path: Path) -> None:
    """The same contract as above, read from the published wheel's source, so that it is checked on every
    Python this project runs on, including one the library does not install on."""
    classes: dict[str, ast.ClassDef] = {}
    functions: dict[str, list[list[str]]] = {}
    with zipfile.ZipFile(_published_wheel(tmp_path)) as wheel:
        for name in wheel.namelist():
            if not (name.startswith("garminconnect/") and name.endswith(".py")):
                continue
            for node in ast.walk(ast.parse(wheel.read(name))):
                if isinstance(node, ast.ClassDef):
                    classes[node.name] = node
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    a = node.args
                    functions.setdefault(node.name, []).append(
                        [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
                    )

    def methods(cls: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for base in [cls, *[getattr(b, "id", "") for b in classes[cls].bases]]:
            for node in classes.get(base, classes[cls]).body:
                if isinstance(node, ast.FunctionDef) and node.name not in found:
                    a = node.args
                    found[node.name] = [x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
        return found

    for name in (
        "GarminConnectTooManyRequestsError",
        "GarminConnectAuthenticationError",
        "GarminConnectConnectionError",
    ):
        assert name in classes, name
    garmin = methods("Garmin")
    assert {"email", "password", "prompt_mfa", "retry_attempts"} <= set(garmin["__init__"])
    assert "tokenstore" in garmin["login"]
    assert ["self", "startdate", "enddate", "activitytype", "sortorder"] in functions["get_activities_by_date"]
    assert any("dl_fmt" in args for args in functions["download_activity"])
    formats = classes["ActivityDownloadFormat"]
    assert any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "ORIGINAL" for t in n.targets) for n in formats.body
    )
