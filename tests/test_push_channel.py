"""The push channel (Apprise) against a loopback receiver: delivered as a notification (title, one line, the run
page link), retried on 500, refused by the SSRF guard when set and when sent, the URL encrypted at rest, and
sent once after ``stridecare run`` is killed mid-send and restarted.

The receiver is a plain HTTP server that Apprise's ``json://`` service posts to, as a Home Assistant or
Node-RED endpoint would receive it; nothing of Apprise or of the project is mocked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from channel_settings import channel_settings
from conftest import E2EClock, make_settings, set_weekly_schedule
from factories import ingest_planned
from fitgen import write_activity
from harness import processes, settings_env, stridecare, wait_for
from sqlalchemy import select
from typer.testing import CliRunner

from delivery.push import MESSAGE_ID_HEADER
from recommender.messages import relay_pending
from stridecare.clock import write_clock_file
from stridecare.db.models import Athlete, Delivery, DeliveryAttempt, Run
from stridecare.runtime import Runtime
from stridecare_app.cli.main import app

START = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)  # a Wednesday morning: no weekly prompt due


@dataclass
class PushReceiver:
    """A loopback server for Apprise's json:// posts: answers from a script; ``hold`` stalls the first one."""

    script: list[int] = field(default_factory=list)
    hold: threading.Event | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> PushReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.received.append(
                    {"id": self.headers.get(MESSAGE_ID_HEADER), "path": self.path, "body": json.loads(body)}
                )
                if receiver.hold is not None and len(receiver.received) == 1:
                    receiver.hold.wait(60)  # the sender dies while waiting for this answer
                status = receiver.script.pop(0) if receiver.script else 200
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone

            def log_message(self, *args: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            def verify_request(self, request: Any, client_address: Any) -> bool:
                receiver.connections += 1
                return True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/notify"

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[PushReceiver]:
    r = PushReceiver().start()
    yield r
    r.stop()


def _runtime(tmp_path: Path, **overrides: object) -> tuple[Runtime, Path]:
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, START + timedelta(minutes=45))
    values: dict[str, object] = {"clock_file": clock, "webhook_allowed_networks": ["127.0.0.0/8"], **overrides}
    return Runtime.open(make_settings(tmp_path, **values)), clock


def _set_push(tmp_path: Path, rt: Runtime, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The way a runner does it: ``stridecare athlete set me --push URL``."""
    with rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone="UTC", channel_settings=channel_settings(console=False)))
    result = _cli_set_push(rt, url, monkeypatch)
    assert result.exit_code == 0, result.output


def _cli_set_push(rt: Runtime, url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
        "STRIDECARE_WEBHOOK_ALLOWED_NETWORKS": ",".join(rt.settings.webhook_allowed_networks),
    }.items():
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(app, ["athlete", "set", "me", "--push", url])


def _drop_run(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "run.fit"
    write_activity(path, start=START, duration_s=2400, speed_mps=3.0, cadence_rpm=85, sample_interval_s=5)
    assert ingest_planned(rt.db, rt.settings, "me", path, rt.now()).status == "ingested"


def test_push_url_is_encrypted_at_rest_and_the_prompt_arrives(
    tmp_path: Path, receiver: PushReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, _ = _runtime(tmp_path)
    _set_push(tmp_path, rt, receiver.url, monkeypatch)
    with rt.db.transaction() as s:
        stored = s.scalars(select(Athlete)).one().channel_settings
    assert set(stored) == {"console", "push"}
    assert "127.0.0.1" not in json.dumps(stored)
    assert rt.vault.decrypt(stored["push"]["url"]) == receiver.url

    _drop_run(rt, tmp_path)
    assert relay_pending(rt) == 1
    with rt.db.transaction() as s:
        (row,) = s.scalars(select(Delivery)).all()
        assert (row.channel, row.status) == ("push", "sent")
        message_id = row.message_id
    (got,) = receiver.received
    assert got["id"] == message_id
    assert got["body"]["title"] == "me: foot care after your 7.2 km run"
    # A notification, not the email: one line (the routines and why), then the run's page; no hard wrapping.
    line, link = got["body"]["message"].split("\n")
    assert "toe spread" in line.lower() and " — " in line and len(line) <= 240
    with rt.db.read() as s:
        run_id, token = s.execute(select(Run.id, Athlete.dashboard_token).join(Athlete)).one()
    assert link == f"{rt.settings.effective_public_url}/dashboard/me/runs/{run_id}?t={token}"
    assert "not medical advice" not in got["body"]["message"]  # the full text stays in email


def test_push_retried_on_500_with_the_same_message_id(
    tmp_path: Path, receiver: PushReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, clock = _runtime(tmp_path)
    receiver.script = [500]
    _set_push(tmp_path, rt, receiver.url, monkeypatch)
    _drop_run(rt, tmp_path)
    assert relay_pending(rt) == 1
    with rt.db.transaction() as s:
        row = s.scalars(select(Delivery)).one()
        assert (row.status, row.attempts) == ("pending", 1)
        assert "did not accept" in (row.last_error or "")
        due = row.next_attempt_at
    assert relay_pending(rt) == 0  # the retry waits for its time, in SQL
    write_clock_file(clock, due)
    assert relay_pending(rt) == 1
    with rt.db.transaction() as s:
        row = s.scalars(select(Delivery)).one()
        assert (row.status, row.attempts) == ("sent", 2)
        oks = [a.ok for a in s.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id))]
    assert oks == [False, True]
    assert [r["id"] for r in receiver.received] == [row.message_id, row.message_id]


def test_push_to_a_private_address_is_refused_when_set(
    tmp_path: Path, receiver: PushReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, _ = _runtime(tmp_path, webhook_allowed_networks=[])
    with rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone="UTC"))
    # A name, not a literal: the guard checks what the name resolves to, where the connection would go.
    result = _cli_set_push(rt, f"json://localhost:{receiver.port}/notify", monkeypatch)
    assert result.exit_code == 2
    assert "pushes to this json:// URL would be refused" in result.output
    assert "resolves to 127.0.0.1, which is not a public address" in result.output
    with rt.db.read() as s:
        assert "push" not in s.scalars(select(Athlete)).one().channel_settings
    assert receiver.connections == 0


def test_push_to_a_private_address_is_refused_when_sent_without_connecting(
    tmp_path: Path, receiver: PushReceiver
) -> None:
    # Stored while the operator allowed loopback; the allowance is gone by the time the prompt is sent.
    rt, _ = _runtime(tmp_path, webhook_allowed_networks=[])
    url = f"json://localhost:{receiver.port}/notify"
    with rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone="UTC", channel_settings=channel_settings(rt.vault, console=False, push=url)))
    _drop_run(rt, tmp_path)
    assert relay_pending(rt) == 1
    with rt.db.transaction() as s:
        row = s.scalars(select(Delivery)).one()
    assert row.status == "failed"
    assert "not a public address" in (row.last_error or "")
    assert receiver.received == [] and receiver.connections == 0


@pytest.mark.slow
def test_push_sent_once_after_the_runner_is_killed_mid_send(tmp_path: Path, e2e_clock: E2EClock) -> None:
    hold = threading.Event()
    receiver = PushReceiver(hold=hold).start()
    settings = make_settings(
        tmp_path,
        webhook_allowed_networks=["127.0.0.0/8"],
        delivery_claim_s=3.0,
        redispatch_after_s=2.0,
        **e2e_clock.overrides(tmp_path),
    )
    rt = Runtime.open(settings)
    with rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone="UTC", channel_settings=channel_settings(console=False)))
    set_weekly_schedule(settings, "me")  # one delivery, the run's: no weekly prompt falls due meanwhile
    from stridecare.plugins import channel_classes, store_channel_settings

    with rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete)).one()
        store_channel_settings(athlete, channel_classes()["push"], {"url": receiver.url}, rt.vault)
    env = settings_env(settings)
    inbox = settings.inbox_map()[0][1]
    inbox.mkdir(parents=True)
    logs = tmp_path / "logs"
    first = stridecare("run1", ["run", "--no-web"], env, logs)
    try:
        with processes(first):
            staging = tmp_path / "run.fit"
            write_activity(staging, start=e2e_clock.now() - timedelta(hours=1), duration_s=1800)
            staging.rename(inbox / "run.fit")
            wait_for(lambda: len(receiver.received) == 1, timeout=150, what="the first push to arrive")
            first.kill()  # mid-send: the receiver has the post and has not answered
        hold.set()
        second = stridecare("run2", ["run", "--no-web"], env, logs)
        with processes(second):
            wait_for(lambda: _status(rt) == "sent", timeout=120, what="the restarted runner to deliver")
    finally:
        receiver.stop()
    with rt.db.transaction() as s:
        row = s.scalars(select(Delivery)).one()
        attempts = list(s.scalars(select(DeliveryAttempt)))
    # One recorded, successful send; the receiver saw the killed attempt's post and the resend under one id,
    # so a receiver that keys on the id shows the prompt once.
    assert [a.ok for a in attempts] == [True]
    assert [r["id"] for r in receiver.received] == [row.message_id, row.message_id]
    assert len({r["id"] for r in receiver.received}) == 1


def _status(rt: Runtime) -> str | None:
    with rt.db.transaction() as s:
        row = s.scalars(select(Delivery)).first()
        return row.status if row else None


def test_rotate_keys_reencrypts_the_push_url(
    tmp_path: Path, receiver: PushReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    from ingest.strava.sync import rotate_keys

    rt, _ = _runtime(tmp_path)
    _set_push(tmp_path, rt, receiver.url, monkeypatch)
    old_key = rt.settings.encryption_keys[0].get_secret_value()
    new_key = Fernet.generate_key().decode()
    rotated_rt = Runtime.open(make_settings(tmp_path, encryption_keys=[new_key, old_key]))
    rotate_keys(rotated_rt)
    with rt.db.transaction() as s:
        token = s.scalars(select(Athlete)).one().channel_settings["push"]["url"]
    from stridecare.crypto import Vault

    assert Vault([new_key]).decrypt(token) == receiver.url  # readable without the old key now
