"""Prompts on the phone: one Apprise URL per athlete (ntfy, Telegram, Pushover, Gotify, Discord, Matrix, Home
Assistant and the rest Apprise knows), stored encrypted because such URLs carry tokens.

Apprise makes its own connections (``requests``, ``smtplib`` …), so the guard against request forgery sits
where every one of them starts: name resolution. While a push is being sent, each address that
``socket.getaddrinfo`` returns on this thread is checked with :func:`delivery.ssrf.check_address`; a refused
address ends the attempt before any connection is made, and because the checked answer is the one the library
connects to, a second, rebinding lookup cannot slip in between.

Outcomes: Apprise reports success or failure only, so every failure (a 500, a timeout, a refused connection)
is retried on the outbox's schedule; a URL Apprise cannot use and a refused address are failures that are not
retried. The URL is never logged; only the service's scheme is.

A worker killed between sending and recording leaves a claim that expires, and the prompt is sent again: at
least once, like every channel. Apprise's generic HTTP services (``json://``, ``xml://``, ``form://`` and their
TLS forms, which is how a home server such as Home Assistant or Node-RED is reached) carry the outbox's stable
message id in an ``X-Stridecare-Message-Id`` header so the receiver can drop the repeat; other services have
no such field, and may show a repeat in that rare case.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import ip_address
from typing import Any
from urllib.parse import quote

from delivery.ssrf import ForbiddenTarget, IPNetwork, check_address, parse_networks
from stridecare.logging import scrub
from stridecare.plugins import DeliveryOutcome, OutgoingMessage, SettingsChannel
from stridecare.settings import Settings

log = logging.getLogger(__name__)

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
_DETAIL_CHARS = 300
# Apprise's generic HTTP services, whose URLs take extra headers as ``+Name=value`` query arguments.
_HEADER_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
MESSAGE_ID_HEADER = "X-Stridecare-Message-Id"


class _Refused(socket.gaierror):
    """Raised from name resolution for an address the guard refuses (every library handles a gaierror)."""


class _Guard(threading.local):
    allowed: Sequence[IPNetwork] | None = None
    refused: str | None = None


_guard = _Guard()
_real_getaddrinfo = socket.getaddrinfo
_install_lock = threading.Lock()
_installed = False


def _guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    infos = _real_getaddrinfo(host, port, *args, **kwargs)
    allowed = _guard.allowed
    if allowed is None:  # not inside a push on this thread: everyone else resolves as before
        return infos
    name = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            check_address(ip_address(str(sockaddr[0]).split("%", 1)[0]), allowed, host=name)
        except ForbiddenTarget as exc:
            _guard.refused = exc.reason
            raise _Refused(socket.EAI_FAIL, exc.reason) from None
    return infos


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            socket.getaddrinfo = _guarded_getaddrinfo
            _installed = True


@contextmanager
def guarded(allowed: Sequence[IPNetwork]) -> Iterator[_Guard]:
    """Check every address resolved on this thread inside the block against the SSRF policy."""
    _install()
    _guard.allowed, _guard.refused = allowed, None
    try:
        yield _guard
    finally:
        _guard.allowed = None


class _ThreadLog(logging.Handler):
    """Apprise's warnings for this thread's attempt: they are the only account of why it failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


def service_of(url: str) -> str:
    """The service part of an Apprise URL (``ntfy``, ``tgram`` …), the only part that is safe to show."""
    scheme, sep, _rest = url.partition("://")
    return scheme.lower() if sep and scheme.isalnum() else "(not an Apprise URL)"


def with_message_id(url: str, message_id: str) -> str:
    """``url`` with the message id as a header, for the services that can carry one; others unchanged."""
    if service_of(url) not in _HEADER_SCHEMES:
        return url
    joiner = "&" if "?" in url.split("#", 1)[0] else "?"
    base, hash_sign, fragment = url.partition("#")
    return f"{base}{joiner}{quote('+' + MESSAGE_ID_HEADER)}={quote(message_id)}{hash_sign}{fragment}"


def check_push_url(url: str) -> str | None:
    """None when Apprise can use ``url``, else why not (for the command line, before storing it)."""
    import apprise

    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        return f"Apprise does not understand this {service_of(url)}:// URL (see the Apprise wiki for the format)"
    return None


class PushChannel(SettingsChannel):
    """Sends the prompt's subject and text through the athlete's Apprise URL (``--push``)."""

    name = "push"
    address_key = "url"
    secret_keys = ("url",)

    def __init__(self, settings: Settings) -> None:
        """Build the channel; the networks webhooks may reach are the networks pushes may reach."""
        super().__init__(settings)
        self._allowed = parse_networks(settings.webhook_allowed_networks)

    def send(self, message: OutgoingMessage, target: str, secret: str | None = None) -> DeliveryOutcome:
        """One attempt through Apprise; never raises, and never shows more of the URL than its service."""
        import apprise  # on first use: its plugin registry takes a quarter of a second to load

        service = service_of(target)
        plugin = apprise.Apprise.instantiate(with_message_id(target, message.message_id), suppress_exceptions=True)
        if plugin is None:
            return DeliveryOutcome(ok=False, retry=False, detail=f"not a usable Apprise URL ({service}://…)")
        capture = _ThreadLog()
        apprise_log = logging.getLogger(apprise.LOGGER_NAME)
        apprise_log.addHandler(capture)
        try:
            with guarded(self._allowed) as guard:
                ok = bool(plugin.notify(body=message.text, title=message.subject))
        except Exception as exc:  # an Apprise plugin bug is a failed attempt, not a lost delivery
            ok = False
            capture.lines.append(f"{type(exc).__name__}: {exc}")
        finally:
            apprise_log.removeHandler(capture)
        if guard.refused is not None:
            log.warning("push %s refused: %s", message.message_id, guard.refused)
            return DeliveryOutcome(ok=False, retry=False, detail=f"target refused: {guard.refused}")
        if ok:
            return DeliveryOutcome(ok=True, retry=False, detail=f"sent through {service}")
        said = _UNPRINTABLE.sub(" ", scrub(" | ".join(capture.lines[-3:]))).strip()[:_DETAIL_CHARS]
        return DeliveryOutcome(
            ok=False, retry=True, detail=f"{service} did not accept it" + (f": {said}" if said else "")
        )
