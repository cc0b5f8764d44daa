"""EmailChannel against a real aiosmtpd server on loopback, with a throw-away CA the system does not trust."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from delivery.email import EmailChannel, email_message_id
from stridecare.plugins import Channel, OutgoingMessage
from stridecare.settings import Settings

UTC = dt.UTC
UNSUBSCRIBE = "https://care.example.org/unsubscribe/" + "a1b2c3d4" * 12 + "?list=prompts"
PASSWORD = "correct horse battery staple"


# -- certificates -------------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate for localhost / 127.0.0.1 / ::1, written to ``directory``."""
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
    names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "smtp-ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = directory / "smtp-server.pem"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(chain)
    return Pki(ca_file, server_context)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


# -- a real SMTP server -------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    over_tls: bool


@dataclass
class Mailbox:
    """aiosmtpd handler: stores what it accepts, refuses the addresses in ``refuse`` with the given reply."""

    refuse: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed, session.ssl is not None))
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"runner"
        and auth_data.password == PASSWORD.encode()
    )
    # handled=False: let aiosmtpd send the 235 or 535 reply itself.
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Mailbox, int]]]:
    """Start aiosmtpd controllers on free loopback ports; every one is stopped at teardown."""
    controllers: list[Controller] = []

    def start(mailbox: Mailbox | None = None, **kwargs: Any) -> tuple[Mailbox, int]:
        box = mailbox or Mailbox()
        port = free_port()
        controller = Controller(box, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return box, port

    yield start
    for controller in controllers:
        controller.stop()


def make_settings(tmp_path: Path, port: int, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data_home": tmp_path,
        "smtp_host": "localhost",
        "smtp_port": port,
        "smtp_security": "starttls",
        "smtp_timeout_s": 5.0,
        "mail_from": "stridecare <prompts@stridecare.test>",
    }
    values.update(extra)
    return Settings(**values)


def make_message(message_id: str = "prompt-41-email", unsubscribe_url: str | None = UNSUBSCRIBE) -> OutgoingMessage:
    return OutgoingMessage(
        prompt_id="41",
        delivery_id=7,
        message_id=message_id,
        athlete_name="Ada",
        recipient="ada@example.test",
        subject="Ada: foot care after your 21.1 km run",
        text="Roll out your soles (1 min per foot)\n\nGeneral wellness advice, not medical advice.\n",
        html="<p>Roll out your soles <em>(1 min per foot)</em></p>",
        payload={},
        unsubscribe_url=unsubscribe_url,
        done_url="https://care.example.org/done/41",
        created_at=dt.datetime(2026, 5, 4, 7, 30, tzinfo=UTC),
    )


# -- tests --------------------------------------------------------------------------------------------------


def test_channel_satisfies_protocol(tmp_path: Path) -> None:
    channel = EmailChannel(make_settings(tmp_path, 25))
    assert isinstance(channel, Channel)
    assert channel.name == "email"


def test_unknown_security_mode_is_refused_with_the_settings_at_start(tmp_path: Path) -> None:
    # Refused where the settings are read, before any channel or worker exists: never retried as a send error.
    with pytest.raises(ValueError, match="'starttls', 'ssl' or 'none'"):
        make_settings(tmp_path, 25, smtp_security="tls-please")


def test_starttls_with_untrusted_certificate_is_refused(
    tmp_path: Path, pki: Pki, smtp_server: Callable[..., tuple[Mailbox, int]]
) -> None:
    box, port = smtp_server(tls_context=pki.server_context, require_starttls=True)
    outcome = EmailChannel(make_settings(tmp_path, port)).send(make_message(), "ada@example.test")

    assert (outcome.ok, outcome.retry) == (False, True)
    assert "STRIDECARE_SMTP_CA_FILE" in outcome.detail
    assert "not trusted" in outcome.detail
    assert box.received == []


def test_starttls_accepted_when_operator_names_the_ca(
    tmp_path: Path, pki: Pki, smtp_server: Callable[..., tuple[Mailbox, int]]
) -> None:
    box, port = smtp_server(tls_context=pki.server_context, require_starttls=True)
    channel = EmailChannel(make_settings(tmp_path, port, smtp_ca_file=pki.ca_file))
    outcome = channel.send(make_message(), "ada@example.test")

    assert outcome.ok, outcome.detail
    [received] = box.received
    assert received.over_tls
    assert received.rcpt_tos == ["ada@example.test"]
    assert received.mail_from == "prompts@stridecare.test"


def test_implicit_tls_with_the_named_ca(
    tmp_path: Path, pki: Pki, smtp_server: Callable[..., tuple[Mailbox, int]]
) -> None:
    box, port = smtp_server(ssl_context=pki.server_context)
    trusted = EmailChannel(make_settings(tmp_path, port, smtp_security="ssl", smtp_ca_file=pki.ca_file))
    assert trusted.send(make_message(), "ada@example.test").ok
    untrusted = EmailChannel(make_settings(tmp_path, port, smtp_security="ssl"))
    outcome = untrusted.send(make_message(), "ada@example.test")
    assert (outcome.ok, outcome.retry) == (False, True)
    assert "STRIDECARE_SMTP_CA_FILE" in outcome.detail
    assert len(box.received) == 1


def test_no_clear_text_fallback_when_starttls_is_missing(
    tmp_path: Path, smtp_server: Callable[..., tuple[Mailbox, int]]
) -> None:
    box, port = smtp_server()  # no tls_context: the server does not offer STARTTLS
    outcome = EmailChannel(make_settings(tmp_path, port)).send(make_message(), "ada@example.test")
    assert (outcome.ok, outcome.retry) == (False, True)
    assert box.received == []


def test_message_has_both_parts_stable_id_and_one_click_unsubscribe(
    tmp_path: Path, pki: Pki, smtp_server: Callable[..., tuple[Mailbox, int]]
) -> None:
    box, port = smtp_server(tls_context=pki.server_context)
    channel = EmailChannel(make_settings(tmp_path, port, smtp_ca_file=pki.ca_file))
    message = make_message()
    assert channel.send(message, "ada@example.test").ok
    assert channel.send(message, "ada@example.test").ok  # a retry of the same delivery
    assert channel.send(make_message("prompt-42-email", unsubscribe_url=None), "ada@example.test").ok

    first, retry, other = (r.message for r in box.received)
    assert first.get_content_type() == "multipart/alternative"
    plain = first.get_body(("plain",))
    html = first.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert isinstance(plain, EmailMessage)
    assert isinstance(html, EmailMessage)
    assert "Roll out your soles (1 min per foot)" in plain.get_content()
    assert "<em>(1 min per foot)</em>" in html.get_content()

    assert first["Message-ID"] == "<prompt-41-email@stridecare>" == email_message_id("prompt-41-email")
    assert retry["Message-ID"] == first["Message-ID"]
    assert other["Message-ID"] != first["Message-ID"]

    # RFC 8058: the URL in angle brackets, unencoded even when long, plus the one-click POST marker.
    assert first["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert other["List-Unsubscribe"] is None
    assert other["List-Unsubscribe-Post"] is None

    assert first["Subject"] == "Ada: foot care after your 21.1 km run"
    assert first["To"] == "ada@example.test"
    assert first["Auto-Submitted"] == "auto-generated"


def test_permanent_recipient_refusal_is_not_retried(
    tmp_path: Path, pki: Pki, smtp_server: Callable[..., tuple[Mailbox, int]]
) -> None:
    mailbox = Mailbox(
        refuse={
            "gone@example.test": "550 5.1.1 No such user here",
            "full@example.test": "452 4.2.2 Mailbox full, try later",
        }
    )
    _, port = smtp_server(mailbox, tls_context=pki.server_context)
    channel = EmailChannel(make_settings(tmp_path, port, smtp_ca_file=pki.ca_file))

    gone = channel.send(make_message(), "gone@example.test")
    assert (gone.ok, gone.retry, gone.status_code) == (False, False, 550)
    assert "No such user" in gone.detail

    full = channel.send(make_message(), "full@example.test")
    assert (full.ok, full.retry, full.status_code) == (False, True, 452)
    assert mailbox.received == []


def test_login_and_password_never_leaks(
    tmp_path: Path,
    pki: Pki,
    smtp_server: Callable[..., tuple[Mailbox, int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    box, port = smtp_server(tls_context=pki.server_context, authenticator=authenticator, auth_required=True)
    caplog.set_level(logging.DEBUG)
    good = EmailChannel(
        make_settings(tmp_path, port, smtp_ca_file=pki.ca_file, smtp_username="runner", smtp_password=PASSWORD)
    ).send(make_message(), "ada@example.test")
    assert good.ok, good.detail

    bad = EmailChannel(
        make_settings(tmp_path, port, smtp_ca_file=pki.ca_file, smtp_username="runner", smtp_password="wrong-pw")
    ).send(make_message(), "ada@example.test")
    assert (bad.ok, bad.retry) == (False, True)
    assert "runner" in bad.detail
    assert len(box.received) == 1
    for text in (good.detail, bad.detail, caplog.text):
        assert PASSWORD not in text
        assert "wrong-pw" not in text


def test_credentials_never_go_unencrypted_to_a_remote_host(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        25,
        smtp_host="mail.example.test",
        smtp_security="none",
        smtp_username="u",
        smtp_password="p",
    )
    outcome = EmailChannel(settings).send(make_message(), "ada@example.test")
    assert (outcome.ok, outcome.retry) == (False, True)
    assert "unencrypted" in outcome.detail


def test_plain_smtp_to_a_local_catcher(tmp_path: Path, smtp_server: Callable[..., tuple[Mailbox, int]]) -> None:
    box, port = smtp_server()
    outcome = EmailChannel(make_settings(tmp_path, port, smtp_security="none")).send(make_message(), "ada@example.test")
    assert outcome.ok, outcome.detail
    assert not box.received[0].over_tls


def test_unreachable_server_is_retried(tmp_path: Path) -> None:
    outcome = EmailChannel(make_settings(tmp_path, free_port(), smtp_host="127.0.0.1")).send(
        make_message(), "ada@example.test"
    )
    assert (outcome.ok, outcome.retry) == (False, True)


@pytest.mark.parametrize(
    "target",
    ["not-an-address", "Ada <ada@example.test>", "ada@example.test\r\nBcc: all@example.test", "a@b, c@d"],
)
def test_bad_recipient_is_refused_without_connecting(tmp_path: Path, target: str) -> None:
    outcome = EmailChannel(make_settings(tmp_path, free_port(), smtp_host="127.0.0.1")).send(make_message(), target)
    assert (outcome.ok, outcome.retry) == (False, False)


def test_message_id_for_unsafe_ids_is_stable_and_valid() -> None:
    first = email_message_id("prompt 41 <email>")
    assert first == email_message_id("prompt 41 <email>")
    assert first.startswith("<")
    assert first.endswith("@stridecare>")
    assert " " not in first
    assert email_message_id("a..b") != "<a..b@stridecare>"
