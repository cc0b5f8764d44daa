"""WebhookChannel against real HTTP receivers on loopback, verifying signatures with standardwebhooks.

Receivers listen on 127.0.0.1, which the SSRF guard refuses by default; tests that expect delivery therefore
allow 127.0.0.0/8 explicitly, as an operator delivering to a LAN server would.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from channel_settings import channel_settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from delivery.backoff import MAX_ATTEMPTS, next_attempt_delay
from delivery.ssrf import ForbiddenTarget, check_target, parse_networks
from delivery.webhook import WebhookChannel, parse_retry_after
from stridecare.plugins import Channel, DeliveryOutcome, OutgoingMessage
from stridecare.settings import Settings

UTC = dt.UTC
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
LOOPBACK = ["127.0.0.0/8"]


# -- helpers ------------------------------------------------------------------------------------------------


def make_message(message_id: str = "prompt-41-webhook", payload: dict[str, Any] | None = None) -> OutgoingMessage:
    return OutgoingMessage(
        prompt_id="41",
        delivery_id=7,
        message_id=message_id,
        athlete_name="Ada",
        recipient=None,
        subject="Foot care after your run",
        text="text",
        html="<p>html</p>",
        payload=payload
        if payload is not None
        else {
            "type": "prompt.created",
            "data": {"prompt_id": "41", "routines": [{"key": "roll_out"}], "n": "ü"},
        },
        unsubscribe_url=None,
        done_url="https://care.example/done/41",
        created_at=dt.datetime(2026, 5, 4, 7, 30, tzinfo=UTC),
    )


def make_settings(tmp_path: Path, allowed: list[str] | None = None, **extra: Any) -> Settings:
    return Settings(data_home=tmp_path, webhook_allowed_networks=allowed or [], webhook_timeout_s=3.0, **extra)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream_bytes: int = 0  # send this many filler bytes after the headers (size-cap tests)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any = None
    error: str | None = None


class Receiver:
    """A real HTTP(S) server in a thread that verifies every request's Standard Webhooks signature."""

    def __init__(self, replies: list[Reply] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.replies = list(replies or [])
        self.seen: list[Seen] = []
        self.bytes_streamed = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.path, headers, body)
                try:
                    seen.verified = Webhook(SECRET).verify(body, headers)
                except WebhookVerificationError as exc:
                    seen.error = str(exc)
                receiver.seen.append(seen)
                reply = receiver.replies.pop(0) if receiver.replies else Reply()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body) + reply.stream_bytes))
                self.end_headers()
                try:
                    self.wfile.write(reply.body)
                    chunk = b"x" * 65536
                    remaining = reply.stream_bytes
                    while remaining > 0:
                        self.wfile.write(chunk[:remaining])
                        receiver.bytes_streamed += min(remaining, len(chunk))
                        remaining -= len(chunk)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client stopped reading, which is what the size cap is for
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def url(self, host: str = "127.0.0.1", path: str = "/hooks/stridecare") -> str:
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Listener:
    """A bare TCP listener that only counts connections: proof that a refused target was never contacted."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def connections(self) -> int:
        # The kernel completes a TCP handshake without accept(), so any attempt made so far is in the backlog.
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(replies: list[Reply] | None = None, tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = Receiver(replies, tls)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


@dataclass
class FakeDns:
    """Names in ``table`` resolve to the given address; every other name goes to the real resolver."""

    table: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    # Patched at the network boundary (socket.getaddrinfo), for the test's names only.
    fake = FakeDns()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in fake.table:
            fake.calls.append(host)
            address = fake.table[host]
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return fake


# -- delivery and signing -----------------------------------------------------------------------------------


def test_channel_satisfies_protocol(tmp_path: Path) -> None:
    channel = WebhookChannel(make_settings(tmp_path))
    assert isinstance(channel, Channel)
    assert channel.name == "webhook"


def test_signature_verifies_and_body_is_the_payload(tmp_path: Path, receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory()
    message = make_message()
    outcome = WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(message, receiver.url(), SECRET)

    assert outcome.ok, outcome.detail
    assert outcome.status_code == 200
    [seen] = receiver.seen
    assert seen.error is None
    assert seen.verified == message.payload
    assert json.loads(seen.body) == message.payload
    assert seen.headers["webhook-id"] == message.message_id
    assert seen.headers["content-type"] == "application/json"
    assert seen.path == "/hooks/stridecare"
    assert abs(int(seen.headers["webhook-timestamp"]) - time.time()) < 30


def test_wrong_secret_does_not_verify(tmp_path: Path, receiver_factory: Callable[..., Receiver]) -> None:
    # Guards the receiver itself: a test that cannot fail verification proves nothing.
    receiver = receiver_factory()
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(make_message(), receiver.url(), other)
    assert receiver.seen[0].error == "No matching signature found"


def test_500_three_times_then_200_retries_with_one_webhook_id(
    tmp_path: Path, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory([Reply(500), Reply(500), Reply(500), Reply(200)])
    channel = WebhookChannel(make_settings(tmp_path, LOOPBACK))
    message = make_message("prompt-99-webhook")

    outcomes: list[DeliveryOutcome] = []
    attempts = 0
    while True:
        # The relay's loop, without its sleeping: ask the schedule, attempt, stop on success or give-up.
        delay = next_attempt_delay(attempts, outcomes[-1].retry_after_s if outcomes else None)
        assert delay is not None
        outcomes.append(channel.send(message, receiver.url(), SECRET))
        attempts += 1
        if outcomes[-1].ok or not outcomes[-1].retry:
            break

    assert [o.ok for o in outcomes] == [False, False, False, True]
    assert all(o.retry for o in outcomes[:3])
    assert [o.status_code for o in outcomes] == [500, 500, 500, 200]
    assert len(receiver.seen) == 4
    assert {s.headers["webhook-id"] for s in receiver.seen} == {"prompt-99-webhook"}
    assert all(s.error is None for s in receiver.seen)


def test_410_disables_target(tmp_path: Path, receiver_factory: Callable[..., Receiver]) -> None:
    receiver = receiver_factory([Reply(410, body=b"endpoint removed")])
    outcome = WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(make_message(), receiver.url(), SECRET)
    assert not outcome.ok
    assert outcome.disable_target
    assert not outcome.retry
    assert outcome.status_code == 410


@pytest.mark.parametrize("status", [400, 401, 404, 429, 502, 503])
def test_other_failures_are_retried(tmp_path: Path, receiver_factory: Callable[..., Receiver], status: int) -> None:
    receiver = receiver_factory([Reply(status, body=b"nope")])
    outcome = WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(make_message(), receiver.url(), SECRET)
    assert (outcome.ok, outcome.retry, outcome.disable_target) == (False, True, False)
    assert outcome.status_code == status
    assert "nope" in outcome.detail


def test_retry_after_seconds_and_date_are_honoured(tmp_path: Path, receiver_factory: Callable[..., Receiver]) -> None:
    later = dt.datetime.now(UTC) + dt.timedelta(seconds=600)
    receiver = receiver_factory(
        [
            Reply(429, headers={"Retry-After": "120"}),
            Reply(503, headers={"Retry-After": format_datetime(later, usegmt=True)}),
        ]
    )
    channel = WebhookChannel(make_settings(tmp_path, LOOPBACK))
    first = channel.send(make_message(), receiver.url(), SECRET)
    second = channel.send(make_message(), receiver.url(), SECRET)

    assert (first.retry, first.retry_after_s) == (True, 120)
    assert second.retry
    assert second.retry_after_s is not None
    assert 590 <= second.retry_after_s <= 600
    # The schedule takes the larger of its own step and the peer's wish.
    assert next_attempt_delay(1, first.retry_after_s) == 120
    assert next_attempt_delay(2, first.retry_after_s) == 300


def test_parse_retry_after_edge_cases() -> None:
    now = dt.datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    assert parse_retry_after("0", now) == 0
    assert parse_retry_after("Mon, 04 May 2026 12:01:00 GMT", now) == 60
    assert parse_retry_after("Mon, 04 May 2026 11:00:00 GMT", now) == 0  # in the past: retry per schedule
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_schedule() -> None:
    delays = [next_attempt_delay(n) for n in range(MAX_ATTEMPTS + 1)]
    assert delays == [0, 5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert next_attempt_delay(8, retry_after_s=60) is None  # Retry-After cannot resurrect a given-up delivery
    assert next_attempt_delay(1, retry_after_s=10**9) == 24 * 3600  # capped
    assert next_attempt_delay(3, retry_after_s=float("nan")) == 1800
    with pytest.raises(ValueError, match="attempts_made"):
        next_attempt_delay(-1)


def test_response_size_is_capped(tmp_path: Path, receiver_factory: Callable[..., Receiver]) -> None:
    big = 64 * 1024 * 1024
    receiver = receiver_factory([Reply(200, stream_bytes=big), Reply(500, body=b"E" * 5000, stream_bytes=big)])
    channel = WebhookChannel(make_settings(tmp_path, LOOPBACK, webhook_max_response_bytes=4096))

    started = time.monotonic()
    ok = channel.send(make_message(), receiver.url(), SECRET)
    failed = channel.send(make_message(), receiver.url(), SECRET)
    elapsed = time.monotonic() - started

    assert ok.ok
    assert "cut off" in ok.detail
    assert (failed.ok, failed.retry) == (False, True)
    assert "cut off" in failed.detail
    assert len(failed.detail) < 400  # only a short snippet of the receiver's body is kept
    assert elapsed < 5
    assert receiver.bytes_streamed < big  # the receiver was cut off, not read to the end


def test_missing_or_bad_secret_is_not_retried(tmp_path: Path, listener: Listener) -> None:
    channel = WebhookChannel(make_settings(tmp_path, LOOPBACK))
    url = f"http://127.0.0.1:{listener.port}/"
    for secret in (None, "", "whsec_"):
        outcome = channel.send(make_message(), url, secret)
        assert (outcome.ok, outcome.retry) == (False, False)
    assert listener.connections() == 0


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    outcome = WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(
        make_message(), f"http://127.0.0.1:{port}/", SECRET
    )
    assert (outcome.ok, outcome.retry) == (False, True)


# -- server-side request forgery ----------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f.1:{port}/",
    "http://127.1:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://localhost:{port}/",
]


@pytest.mark.parametrize("template", LOOPBACK_SPELLINGS)
def test_loopback_in_any_spelling_is_refused_without_connecting(
    tmp_path: Path, listener: Listener, template: str
) -> None:
    outcome = WebhookChannel(make_settings(tmp_path)).send(make_message(), template.format(port=listener.port), SECRET)
    assert (outcome.ok, outcome.retry) == (False, False)
    assert "not a public address" in outcome.detail
    assert "127.0.0.1" in outcome.detail
    assert listener.connections() == 0


@pytest.mark.parametrize("template", LOOPBACK_SPELLINGS)
def test_loopback_in_any_spelling_is_delivered_when_allowed(
    tmp_path: Path, receiver_factory: Callable[..., Receiver], template: str
) -> None:
    receiver = receiver_factory()
    outcome = WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(
        make_message(), template.format(port=receiver.port), SECRET
    )
    assert outcome.ok, outcome.detail
    assert receiver.seen[0].error is None


def test_metadata_address_is_refused(tmp_path: Path) -> None:
    # Allowing loopback does not open link-local: each range must be named.
    outcome = WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(
        make_message(), "http://169.254.169.254/latest/meta-data/", SECRET
    )
    assert (outcome.ok, outcome.retry) == (False, False)
    assert "169.254.169.254" in outcome.detail
    # Allowed explicitly, the guard lets it through (not contacted here: it may be a real metadata service).
    checked = check_target("http://169.254.169.254/", parse_networks(["169.254.0.0/16"]))
    assert checked.addresses == (ipaddress.ip_address("169.254.169.254"),)


def test_name_resolving_to_private_address_is_refused(tmp_path: Path, fake_dns: FakeDns) -> None:
    fake_dns.table["hooks.internal.test"] = "10.20.30.40"
    outcome = WebhookChannel(make_settings(tmp_path)).send(make_message(), "http://hooks.internal.test/ingest", SECRET)
    assert (outcome.ok, outcome.retry) == (False, False)
    assert "10.20.30.40" in outcome.detail

    checked = check_target("http://hooks.internal.test/ingest", parse_networks(["10.0.0.0/8"]))
    assert checked.addresses == (ipaddress.ip_address("10.20.30.40"),)
    assert checked.host_header == "hooks.internal.test"


def test_any_bad_address_among_several_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "mixed.example.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(ForbiddenTarget, match="::1"):
        check_target("https://mixed.example.test/", ())


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[2002:a00:1::]/",  # 6to4 of 10.0.0.1
        "http://[::7f00:1]/",  # IPv4-compatible
        "http://[fe80::1%25eth0]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://100.64.0.1/",
        "http://user@93.184.215.14/",
        "http://93.184.215.14\\@127.0.0.1/",
        "file:///etc/passwd",
        "gopher://93.184.215.14/",
        "http://256.0.0.1/",
    ],
)
def test_guard_refuses(url: str) -> None:
    with pytest.raises(ForbiddenTarget):
        check_target(url, ())


def test_guard_accepts_public_addresses_without_contacting_them() -> None:
    checked = check_target("https://[2606:4700:4700::1111]:8443/x?y=1", ())
    assert checked.port == 8443
    assert checked.sni_hostname is None
    assert str(checked.url_for(checked.addresses[0])) == "https://[2606:4700:4700::1111]:8443/x?y=1"


def test_redirect_is_not_followed(
    tmp_path: Path, receiver_factory: Callable[..., Receiver], listener: Listener
) -> None:
    # Even with loopback allowed, a redirect is a failure; the redirect target never sees a connection.
    receiver = receiver_factory([Reply(302, headers={"Location": f"http://127.0.0.1:{listener.port}/admin"})])
    outcome = WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(make_message(), receiver.url(), SECRET)
    assert (outcome.ok, outcome.retry) == (False, True)
    assert outcome.status_code == 302
    assert "not followed" in outcome.detail
    assert listener.connections() == 0


def test_connects_to_the_checked_address_once_resolved(
    tmp_path: Path, receiver_factory: Callable[..., Receiver], fake_dns: FakeDns
) -> None:
    # One lookup per attempt, and the request goes to that address with the name in Host: a rebinding answer
    # given to a second lookup would never be used.
    receiver = receiver_factory()
    fake_dns.table["hooks.home.test"] = "127.0.0.1"
    outcome = WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(
        make_message(), receiver.url("hooks.home.test"), SECRET
    )
    assert outcome.ok, outcome.detail
    assert receiver.seen[0].headers["host"] == f"hooks.home.test:{receiver.port}"
    assert fake_dns.calls == ["hooks.home.test"]


def test_each_attempt_rechecks_the_address(
    tmp_path: Path, receiver_factory: Callable[..., Receiver], fake_dns: FakeDns, listener: Listener
) -> None:
    receiver = receiver_factory()
    channel = WebhookChannel(make_settings(tmp_path, ["127.0.0.1/32"]))
    fake_dns.table["flip.home.test"] = "127.0.0.1"
    assert channel.send(make_message(), f"http://flip.home.test:{receiver.port}/", SECRET).ok
    # The DNS answer changed to an address the operator did not allow.
    fake_dns.table["flip.home.test"] = "127.0.0.2"
    outcome = channel.send(make_message(), f"http://flip.home.test:{listener.port}/", SECRET)
    assert (outcome.ok, outcome.retry) == (False, False)
    assert listener.connections() == 0


# -- TLS: connect to the IP, verify the name ----------------------------------------------------------------


@dataclass
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext


def make_pki(directory: Path, names: list[str]) -> Pki:
    now = dt.datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stridecare test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "server.pem"
    cert_file.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file)
    return Pki(ca_file, server_context)


def test_https_verifies_the_host_name_while_connecting_to_the_ip(
    tmp_path: Path, receiver_factory: Callable[..., Receiver], fake_dns: FakeDns
) -> None:
    pki = make_pki(tmp_path, ["hooks.home.test"])
    receiver = receiver_factory(tls=pki.server_context)
    fake_dns.table["hooks.home.test"] = "127.0.0.1"
    fake_dns.table["other.home.test"] = "127.0.0.1"
    channel = WebhookChannel(
        make_settings(tmp_path, LOOPBACK), tls_context=ssl.create_default_context(cafile=pki.ca_file)
    )

    good = channel.send(make_message(), f"https://hooks.home.test:{receiver.port}/h", SECRET)
    assert good.ok, good.detail
    assert receiver.seen[0].headers["host"] == f"hooks.home.test:{receiver.port}"
    assert receiver.seen[0].error is None

    # Same IP, same server, but the certificate does not name this host: refused, and retried later.
    wrong = channel.send(make_message(), f"https://other.home.test:{receiver.port}/h", SECRET)
    assert (wrong.ok, wrong.retry) == (False, True)
    assert "certificate" in wrong.detail
    assert len(receiver.seen) == 1

    # Without our CA, the default store does not trust the server either.
    untrusted = WebhookChannel(make_settings(tmp_path, LOOPBACK)).send(
        make_message(), f"https://hooks.home.test:{receiver.port}/h", SECRET
    )
    assert (untrusted.ok, untrusted.retry) == (False, True)
    assert len(receiver.seen) == 1


# -- the payload a receiver routes on: real payloads against the published schema ---------------------------


def test_real_payloads_follow_the_published_schema_and_name_athlete_and_run(tmp_path: Path) -> None:
    import jsonschema
    from conftest import make_settings
    from factories import ingest_planned
    from fitgen import write_activity
    from harness import WebhookReceiver
    from sqlalchemy import select

    from recommender.messages import relay_pending
    from stridecare.clock import write_clock_file
    from stridecare.crypto import new_webhook_secret
    from stridecare.db.models import Athlete, Run
    from stridecare.runtime import Runtime

    schema = json.loads((Path(__file__).parents[1] / "docs" / "webhook-payload.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    start = dt.datetime(2026, 5, 6, 8, 0, tzinfo=dt.UTC)
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, start + dt.timedelta(hours=1))
    rt = Runtime.open(make_settings(tmp_path, clock_file=clock, webhook_allowed_networks=["127.0.0.0/8"]))
    hooks = [WebhookReceiver(secret=new_webhook_secret()).start() for _ in range(2)]
    try:
        with rt.db.transaction() as s:
            for handle, hook in zip(("anna", "ben"), hooks, strict=True):
                s.add(
                    Athlete(
                        name=handle,
                        display_name=handle.title(),
                        channel_settings=channel_settings(
                            rt.vault, webhook=hook.url, webhook_secret=hook.secret or "", console=False
                        ),
                    )
                )
        for handle in ("anna", "ben"):
            path = tmp_path / f"{handle}.fit"
            write_activity(path, start=start, duration_s=2400, speed_mps=3.0 if handle == "anna" else 2.5)
            assert ingest_planned(rt.db, rt.settings, handle, path, rt.now()).status == "ingested"
        assert relay_pending(rt) == 2
    finally:
        for hook in hooks:
            hook.stop()
    with rt.db.transaction() as s:
        runs = {r.athlete_id: r for r in s.scalars(select(Run))}
        ids = {a.name: a.id for a in s.scalars(select(Athlete))}
    for handle, hook in zip(("anna", "ben"), hooks, strict=True):
        (payload,) = hook.payloads().values()
        errors = [e.message for e in validator.iter_errors(payload)]
        assert errors == [], errors
        data = payload["data"]
        run = runs[ids[handle]]
        assert payload["schema_version"] == 1
        assert data["athlete"] == {"handle": handle, "display_name": handle.title()}
        assert data["run"]["id"] == run.id
        assert data["run"]["start_time"] == "2026-05-06T08:00:00Z"
        assert data["run"]["sport"] == "running"
        assert data["run"]["distance_km"] == round(run.distance_m / 1000, 2)
        assert data["routines"] and all(r["key"] and r["title"] for r in data["routines"])
        assert data["reasons"]
    # A payload without the athlete, or with a run lacking its id, is not what the schema promises.
    broken = json.loads(json.dumps(payload))
    del broken["data"]["athlete"]
    broken["data"]["run"].pop("id")
    assert len(list(validator.iter_errors(broken))) == 2
