"""Email delivery over SMTP, with verified TLS and one-click unsubscribe.

``smtp_security`` chooses the transport:

* ``starttls`` (default, port 587): plain connection upgraded with STARTTLS; if the server does not offer
  STARTTLS the message is not sent (no silent downgrade to clear text).
* ``ssl`` (port 465): TLS from the first byte.
* ``none``: clear text. Meant only for a mail catcher on this machine (Mailpit, aiosmtpd on localhost);
  credentials are never sent over it to any other host.

Certificates are always verified, against the system store or, when ``STRIDECARE_SMTP_CA_FILE`` is set,
against that file only (a private CA for a home mail server). ``smtplib`` verifies nothing without a context.

Outcomes: a permanent (5xx) refusal of the recipient or of the message is not retried, since the same
message would be refused again; connection trouble, timeouts, 4xx, certificate and authentication failures
are retried, because they are transient or an operator can fix them within the retry schedule.
"""

from __future__ import annotations

import email.policy
import hashlib
import ipaddress
import logging
import re
import smtplib
import ssl
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from pydantic import field_validator

from stridecare.crypto import Vault
from stridecare.db.models import Athlete
from stridecare.plugins import ChannelOptions, DeliveryOutcome, NoTarget, OutgoingMessage, SettingsChannel, Target
from stridecare.settings import Settings

log = logging.getLogger(__name__)

SECURITY_MODES: tuple[str, ...] = ("starttls", "ssl", "none")
MESSAGE_ID_DOMAIN = "stridecare"
_ID_SAFE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._+=-]{0,200}[A-Za-z0-9])?$")
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
# The default policy folds at 78 columns and RFC 2047-encodes a long URL it cannot fold, which breaks
# List-Unsubscribe; RFC 5322 allows 998.
_POLICY = email.policy.default.clone(max_line_length=998)
_MAX_URL = 900


def email_message_id(message_id: str) -> str:
    """The ``Message-ID`` header for a delivery: derived from ``message_id`` alone, so every retry reuses it.

    Ids that are not safe in a header (spaces, ``@``, quotes …) are replaced by their SHA-256, which is just
    as stable.
    """
    local = message_id if _ID_SAFE.match(message_id) and ".." not in message_id else None
    if local is None:
        local = hashlib.sha256(message_id.encode("utf-8")).hexdigest()
    return f"<{local}@{MESSAGE_ID_DOMAIN}>"


def _is_loopback(host: str) -> bool:
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {' '.join(message.split())}"[:300]


def _answered(exc: smtplib.SMTPResponseException, what: str, *, retry: bool = True) -> DeliveryOutcome:
    """A failed attempt that the server answered: ``what`` it refused, then its reply code and text."""
    return DeliveryOutcome(
        ok=False, retry=retry, status_code=exc.smtp_code, detail=what + _reply(exc.smtp_code, exc.smtp_error)
    )


class EmailOptions(ChannelOptions):
    """An athlete's email settings: the address, and when they unsubscribed through a message's link."""

    address: str | None = None
    unsubscribed_at: datetime | None = None

    @field_validator("address")
    @classmethod
    def _plain_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, address = parseaddr(value)
        if name or address != value.strip() or "@" not in address or _HEADER_UNSAFE.search(value):
            raise ValueError(f"{value!r} is not an email address")
        return address


class EmailChannel(SettingsChannel):
    """Sends a prompt as a multipart/alternative (text + HTML) email through the configured SMTP server."""

    name = "email"
    address_key = "address"
    options_schema = EmailOptions
    reset_on_change = ("unsubscribed_at",)
    unsubscribe_link = True  # messages carry the one-click unsubscribe link (RFC 8058)
    carries_images = True  # shows OutgoingMessage.inline_images (the digest's chart)

    def __init__(self, settings: Settings) -> None:
        """Build the channel; raises ``ValueError`` for an unknown ``smtp_security`` (fail at start-up)."""
        super().__init__(settings)
        security = settings.smtp_security.strip().lower()
        if security not in SECURITY_MODES:
            raise ValueError(f"STRIDECARE_SMTP_SECURITY must be one of {SECURITY_MODES}, not {security!r}")
        self._settings = settings
        self._security = security

    def wants(self, athlete: Athlete) -> bool:
        """An address, not unsubscribed, and a mail server configured."""
        return bool(
            super().wants(athlete) and not self.options(athlete).get("unsubscribed_at") and self._settings.smtp_host
        )

    def target(self, athlete: Athlete, vault: Vault) -> Target:
        """The athlete's address; :class:`NoTarget` once it is removed or the athlete unsubscribed."""
        options = self.options(athlete)
        if not options.get("address") or options.get("unsubscribed_at"):
            raise NoTarget("no email address, or unsubscribed")
        return Target(str(options["address"]))

    # -- message ---------------------------------------------------------------------------------------------

    def build_message(self, message: OutgoingMessage, recipient: str) -> EmailMessage:
        """The email for ``message``: text and HTML alternatives, stable Message-ID, RFC 8058 unsubscribe."""
        mail = EmailMessage(policy=_POLICY)
        mail["Subject"] = " ".join(_HEADER_UNSAFE.sub(" ", message.subject).split())
        mail["From"] = self._settings.mail_from
        mail["To"] = recipient
        created = message.created_at if message.created_at.tzinfo else message.created_at.replace(tzinfo=UTC)
        mail["Date"] = format_datetime(created.astimezone(UTC))
        mail["Message-ID"] = email_message_id(message.message_id)
        # RFC 3834: keeps vacation responders and ticket systems from answering an automatic message.
        mail["Auto-Submitted"] = "auto-generated"
        if message.unsubscribe_url:
            url = message.unsubscribe_url
            if _HEADER_UNSAFE.search(url) or ">" in url or " " in url or len(url) > _MAX_URL:
                raise ValueError("unsubscribe_url contains characters not allowed in a header")
            mail["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        if message.inline_images:
            # multipart/related around the HTML alternative: the HTML shows each image as <img src="cid:…">.
            html_part = mail.get_body(preferencelist=("html",))
            assert html_part is not None
            for index, (cid, data, subtype) in enumerate(message.inline_images):
                if _HEADER_UNSAFE.search(cid) or any(c in cid for c in "<> "):
                    raise ValueError("inline image content-id contains characters not allowed in a header")
                html_part.add_related(
                    data,
                    maintype="image",
                    subtype=subtype,
                    cid=f"<{cid}>",
                    disposition="inline",
                    filename=f"image{index + 1}.{subtype}",
                )
        return mail

    # -- sending ---------------------------------------------------------------------------------------------

    def send(self, message: OutgoingMessage, target: str, secret: str | None = None) -> DeliveryOutcome:
        """Attempt one delivery of ``message`` to the email address ``target``; ``secret`` is unused.

        Never raises for network or SMTP trouble; the outcome says whether a retry can help.
        """
        recipient = target.strip()
        name, address = parseaddr(recipient)
        if name or address != recipient or "@" not in address or _HEADER_UNSAFE.search(recipient):
            return DeliveryOutcome(ok=False, retry=False, detail="recipient is not a plain email address")
        try:
            Address(addr_spec=address)
            mail = self.build_message(message, address)
        except (ValueError, TypeError, IndexError) as exc:
            return DeliveryOutcome(ok=False, retry=False, detail=f"cannot build the email: {exc}")

        settings = self._settings
        host = settings.smtp_host
        if not host:
            # Retryable: the operator may configure email while the schedule still runs.
            return DeliveryOutcome(ok=False, retry=True, detail="email is not configured (STRIDECARE_SMTP_HOST)")
        if self._security == "none" and settings.smtp_username and not _is_loopback(host):
            return DeliveryOutcome(
                ok=False,
                retry=True,
                detail=f"refusing to send SMTP credentials unencrypted to {host}; use starttls or ssl",
            )
        envelope_from = parseaddr(settings.mail_from)[1] or settings.mail_from
        outcome = self._deliver(mail, envelope_from, address)
        log.info("email %s: %s (%s)", message.message_id, "sent" if outcome.ok else "failed", outcome.detail)
        return outcome

    def _tls_context(self) -> ssl.SSLContext:
        ca_file = self._settings.smtp_ca_file
        # With a CA file only that CA is trusted: a private mail server's CA should not vouch for the world.
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        settings = self._settings
        host = settings.smtp_host or ""
        timeout = settings.smtp_timeout_s
        if self._security == "ssl":
            return smtplib.SMTP_SSL(host, settings.smtp_port, timeout=timeout, context=self._tls_context())
        smtp = smtplib.SMTP(host, settings.smtp_port, timeout=timeout)
        try:
            if self._security == "starttls":
                smtp.ehlo()
                # Raises SMTPNotSupportedError when STARTTLS is not offered: we never fall back to clear text.
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _deliver(self, mail: EmailMessage, envelope_from: str, recipient: str) -> DeliveryOutcome:
        settings = self._settings
        server = f"{settings.smtp_host}:{settings.smtp_port}"
        try:
            smtp = self._connect()
            try:
                if settings.smtp_username:
                    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                    smtp.login(settings.smtp_username, password)
                smtp.send_message(mail, from_addr=envelope_from, to_addrs=[recipient])
            finally:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
        except smtplib.SMTPRecipientsRefused as exc:
            replies = [_reply(code, text) for code, text in exc.recipients.values()]
            permanent = all(code >= 500 for code, _ in exc.recipients.values())
            return DeliveryOutcome(
                ok=False,
                retry=not permanent,
                detail=f"{server} refused the recipient: {'; '.join(replies)}",
                status_code=min(code for code, _ in exc.recipients.values()),
            )
        except smtplib.SMTPAuthenticationError as exc:
            # The server's reply, never the password; retried because the operator can fix the credentials.
            return _answered(exc, f"{server} rejected the login for {settings.smtp_username!r}: ")
        except smtplib.SMTPSenderRefused as exc:
            return _answered(exc, f"{server} refused the sender {exc.sender!r} (check STRIDECARE_MAIL_FROM): ")
        except smtplib.SMTPDataError as exc:
            # A 5xx after DATA means this message is refused (spam, size); sending it again will not help.
            return _answered(exc, f"{server} refused the message: ", retry=exc.smtp_code < 500)
        except smtplib.SMTPNotSupportedError as exc:
            return DeliveryOutcome(
                ok=False, retry=True, detail=f"{server} does not support a required feature ({exc}); not sent"
            )
        except smtplib.SMTPResponseException as exc:
            return _answered(exc, f"{server} answered ")
        except ssl.SSLCertVerificationError as exc:
            hint = (
                "set STRIDECARE_SMTP_CA_FILE to the CA certificate that signed it"
                if not settings.smtp_ca_file
                else f"it is not signed by the CA in STRIDECARE_SMTP_CA_FILE ({settings.smtp_ca_file})"
            )
            return DeliveryOutcome(
                ok=False,
                retry=True,
                detail=f"the TLS certificate of {server} is not trusted ({exc.verify_message}); {hint}",
            )
        except ssl.SSLError as exc:
            return DeliveryOutcome(ok=False, retry=True, detail=f"TLS with {server} failed: {exc}")
        except (smtplib.SMTPException, OSError) as exc:
            # Connection refused, DNS failure, timeout, server hung up: all worth another try later.
            return DeliveryOutcome(ok=False, retry=True, detail=f"cannot deliver via {server}: {exc!r}")
        return DeliveryOutcome(ok=True, retry=False, detail=f"accepted by {server} for {recipient}")
