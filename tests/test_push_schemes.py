"""Push URLs reach only what they may, one family of Apprise schemes at a time: HTTP services and email go
through the guarded resolver and are checked when set and when sent; syslog/UDP and local schemes are refused
with a plain message unless the operator allows them, and then their host is still checked. Every refusal is
shown with 0 connections on a real loopback listener (TCP) or 0 datagrams on a real UDP socket; every allowed
case delivers to that same listener, so the listener is known to see traffic when there is some.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from harness import SmtpSink
from sqlalchemy import select
from typer.testing import CliRunner

from delivery.push import GUARDED_SCHEMES, PushChannel, check_push_url
from stridecare.db.models import Athlete
from stridecare.plugins import OutgoingMessage
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.cli.main import app

LOOPBACK = ["127.0.0.0/8"]


def _message() -> OutgoingMessage:
    return OutgoingMessage(
        prompt_id="p1",
        delivery_id=1,
        message_id="msg_p1_push",
        athlete_name="me",
        recipient=None,
        subject="me: foot care after your 7.2 km run",
        text="Hi me,\n\nthe whole email text, which a push does not carry\n",
        html="<p>the email</p>",
        payload={},
        unsubscribe_url=None,
        done_url=None,
        created_at=datetime(2026, 5, 6, 10, 45, tzinfo=UTC),
        summary="Toe spread — easy run: 7.2 km",
        link_url="http://127.0.0.1:8080/dashboard/me/runs/1?t=abc",
    )


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    """A UDP socket on loopback that a syslog push would send to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def tcp() -> Iterator[socket.socket]:
    """A TCP listener on loopback: a completed handshake waits in its backlog, so 0 connections is observable."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _datagrams(sock: socket.socket) -> list[bytes]:
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            return got


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.fixture
def sendto_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every datagram any socket of this process tries to send (the network boundary), passed on unchanged."""
    calls: list[Any] = []
    real = socket.socket.sendto

    def spy(self: socket.socket, *args: Any) -> Any:
        calls.append(args[-1])
        return real(self, *args)

    monkeypatch.setattr(socket.socket, "sendto", spy)
    return calls


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(tmp_path, **overrides)


# -- UDP and syslog ------------------------------------------------------------------------------------------


def test_rsyslog_is_refused_when_set_with_a_plain_message(tmp_path: Path, udp: socket.socket) -> None:
    port = udp.getsockname()[1]
    problem, warning = check_push_url(f"rsyslog://127.0.0.1:{port}", _settings(tmp_path))
    assert problem is not None and warning is None
    assert problem.startswith("rsyslog:// is not accepted for push: its traffic does not go through")
    assert "STRIDECARE_PUSH_UNGUARDED_SCHEMES=rsyslog" in problem
    assert "\n" not in problem and "Traceback" not in problem
    assert _datagrams(udp) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "10.0.0.1"])
def test_a_stored_rsyslog_url_is_refused_when_sent_and_sends_nothing(
    tmp_path: Path, udp: socket.socket, sendto_calls: list[Any], host: str
) -> None:
    # Stored by an earlier release, before the allowlist: refused at send time, before Apprise is asked.
    port = udp.getsockname()[1] if host == "127.0.0.1" else 514
    outcome = PushChannel(_settings(tmp_path, webhook_allowed_networks=LOOPBACK)).send(
        _message(), f"rsyslog://{host}:{port}"
    )
    assert not outcome.ok and not outcome.retry
    assert "rsyslog:// is not accepted for push" in outcome.detail
    assert _datagrams(udp) == [] and sendto_calls == []


@pytest.mark.parametrize("host", ["127.0.0.1", "169.254.169.254", "10.0.0.1", "2130706433", "0x7f.1"])
def test_an_operator_allowed_rsyslog_still_has_its_host_checked(
    tmp_path: Path, udp: socket.socket, sendto_calls: list[Any], host: str
) -> None:
    settings = _settings(tmp_path, push_unguarded_schemes=["rsyslog"])  # no private network allowed
    port = udp.getsockname()[1] if host == "127.0.0.1" else 514
    url = f"rsyslog://{host}:{port}"
    problem, _ = check_push_url(url, settings)
    assert problem is not None and "which is not a public address" in problem
    outcome = PushChannel(settings).send(_message(), url)
    assert not outcome.ok and not outcome.retry and "not a public address" in outcome.detail
    assert _datagrams(udp) == [] and sendto_calls == []


def test_an_operator_allowed_rsyslog_to_an_allowed_network_is_delivered(tmp_path: Path, udp: socket.socket) -> None:
    # The control: the same socket does receive a push once the operator allows both scheme and network.
    settings = _settings(tmp_path, push_unguarded_schemes=["rsyslog"], webhook_allowed_networks=LOOPBACK)
    url = f"rsyslog://127.0.0.1:{udp.getsockname()[1]}"
    assert check_push_url(url, settings) == (None, None)
    outcome = PushChannel(settings).send(_message(), url)
    assert outcome.ok, outcome.detail
    (datagram,) = _datagrams(udp)
    assert b"Toe spread" in datagram


# -- local schemes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["syslog://", "dbus://", "kde://", "glib://", "windows://", "macosx://", "gnome://"])
def test_local_schemes_are_refused_when_set_and_when_sent(tmp_path: Path, url: str, sendto_calls: list[Any]) -> None:
    settings = _settings(tmp_path)
    problem, _ = check_push_url(url, settings)
    scheme = url.split(":", 1)[0]
    assert problem is not None and problem.startswith(f"{scheme}:// is not accepted for push")
    outcome = PushChannel(settings).send(_message(), url)
    assert not outcome.ok and not outcome.retry and "is not accepted for push" in outcome.detail
    assert sendto_calls == []


# -- HTTP ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "0177.0.0.1", "[::ffff:127.0.0.1]", "127.1"],
)
def test_http_push_to_loopback_in_any_spelling_is_refused_when_set_and_sent(
    tmp_path: Path, tcp: socket.socket, host: str
) -> None:
    settings = _settings(tmp_path)
    url = f"json://{host}:{tcp.getsockname()[1]}/notify"
    problem, _ = check_push_url(url, settings)
    # Spellings Apprise cannot parse are refused as such; the rest by the guard. Neither ever connects.
    refusal = "Apprise does not understand" if problem and "Apprise does not" in problem else "not a public address"
    assert problem is not None and refusal in problem, problem
    outcome = PushChannel(settings).send(_message(), url)
    assert not outcome.ok and not outcome.retry
    assert ("not a public address" if refusal == "not a public address" else "not a usable") in outcome.detail
    assert _connections(tcp) == 0


def test_http_push_to_an_allowed_network_connects(tmp_path: Path, tcp: socket.socket) -> None:
    # The control: an allowed network is reached (the listener never answers, so the attempt fails and retries).
    settings = _settings(tmp_path, webhook_allowed_networks=LOOPBACK, webhook_timeout_s=1.0)
    url = f"json://127.0.0.1:{tcp.getsockname()[1]}/notify?:timeout=1"
    assert check_push_url(url, settings) == (None, None)
    outcome = PushChannel(settings).send(_message(), url)
    assert not outcome.ok and outcome.retry
    assert _connections(tcp) >= 1


# -- email ---------------------------------------------------------------------------------------------------


def test_mailto_push_to_a_private_server_is_refused_when_set_and_sent(tmp_path: Path, tcp: socket.socket) -> None:
    settings = _settings(tmp_path)
    url = f"mailto://127.0.0.1:{tcp.getsockname()[1]}?from=stridecare@example.org&to=me@example.org&mode=insecure"
    problem, _ = check_push_url(url, settings)
    assert problem is not None and "pushes to this mailto:// URL would be refused" in problem
    outcome = PushChannel(settings).send(_message(), url)
    assert not outcome.ok and not outcome.retry and "not a public address" in outcome.detail
    assert _connections(tcp) == 0


def test_mailto_push_to_an_allowed_server_is_a_short_notification(tmp_path: Path) -> None:
    sink = SmtpSink().start()
    try:
        settings = _settings(tmp_path, webhook_allowed_networks=LOOPBACK)
        url = f"mailto://127.0.0.1:{sink.port}?from=stridecare@example.org&to=me@example.org&mode=insecure"
        assert check_push_url(url, settings) == (None, None)
        outcome = PushChannel(settings).send(_message(), url)
        assert outcome.ok, outcome.detail
    finally:
        sink.stop()
    (mail,) = sink.messages
    assert mail["Subject"] == "me: foot care after your 7.2 km run"
    body = mail.get_body(preferencelist=("plain", "html")).get_content()
    assert "Toe spread — easy run: 7.2 km" in body and "/dashboard/me/runs/1?t=abc" in body
    assert "the whole email text" not in body


# -- the command line and the allowlist itself ---------------------------------------------------------------


def test_athlete_set_refuses_a_syslog_push_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, udp: socket.socket
) -> None:
    rt = Runtime.open(make_settings(tmp_path))
    with rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone="UTC"))
    monkeypatch.setenv("STRIDECARE_DATA_HOME", str(rt.settings.data_home))
    monkeypatch.setenv("STRIDECARE_ENCRYPTION_KEYS", rt.settings.encryption_keys[0].get_secret_value())
    result = CliRunner().invoke(app, ["athlete", "set", "me", "--push", "rsyslog://169.254.169.254:514"])
    assert result.exit_code == 2
    assert "rsyslog:// is not accepted for push" in result.output and "Traceback" not in result.output
    with rt.db.read() as s:
        assert "push" not in s.scalars(select(Athlete)).one().channel_settings
    monkeypatch.setenv("STRIDECARE_PUSH_UNGUARDED_SCHEMES", "rsyslog")
    result = CliRunner().invoke(app, ["athlete", "set", "me", "--push", "rsyslog://169.254.169.254:514"])
    assert result.exit_code == 2 and "169.254.169.254, which is not a public address" in result.output
    assert _datagrams(udp) == []
    rt.close()


def test_every_allowed_scheme_sends_through_requests_or_smtplib() -> None:
    """The allowlist's promise, checked against the installed Apprise: each allowed scheme is served by a
    plugin whose module makes its connections with requests (HTTP) or smtplib (email), both of which resolve
    through socket.getaddrinfo, and none opens sockets of its own."""
    from apprise.manager_plugins import NotificationManager

    manager = NotificationManager()
    schemes = set(manager.schemas())
    for scheme in sorted(GUARDED_SCHEMES):
        assert scheme in schemes, f"{scheme}:// is not an Apprise scheme any more"
        source = inspect.getsource(inspect.getmodule(manager[scheme]))  # type: ignore[arg-type]
        assert "requests" in source or "smtplib" in source, scheme
        assert "import socket" not in source and "paho" not in source, scheme


def test_other_operator_allowed_schemes_still_have_their_host_checked(tmp_path: Path, tcp: socket.socket) -> None:
    # IRC opens its own TCP socket, beside the guarded resolver: allowed by the operator, its host is checked.
    settings = _settings(tmp_path, push_unguarded_schemes=["irc"])
    url = f"irc://127.0.0.1:{tcp.getsockname()[1]}/stridecare"
    assert check_push_url(url, _settings(tmp_path))[0] is not None  # not allowed at all by default
    problem, _ = check_push_url(url, settings)
    assert problem is not None and "not a public address" in problem
    outcome = PushChannel(settings).send(_message(), url)
    assert not outcome.ok and not outcome.retry and "not a public address" in outcome.detail
    assert _connections(tcp) == 0
