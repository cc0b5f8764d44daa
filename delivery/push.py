"""Prompts on the phone: one Apprise URL per athlete (ntfy, Telegram, Pushover, Gotify, Discord, Matrix, Home
Assistant and the rest Apprise knows), stored encrypted because such URLs carry tokens.

Apprise makes its own connections (``requests``, ``smtplib`` …), so the guard against request forgery sits
where every one of them starts: name resolution. While a push is being sent, each address that
``socket.getaddrinfo`` returns on this thread is checked with :func:`delivery.ssrf.check_address`; a refused
address ends the attempt before any connection is made, and because the checked answer is the one the library
connects to, a second, rebinding lookup cannot slip in between. That holds only for services whose traffic
goes through that resolver, so push URLs are accepted from an allowlist (:data:`GUARDED_SCHEMES`: HTTP-based
services and email); syslog, UDP and local schemes are refused unless the operator lists them in
``STRIDECARE_PUSH_UNGUARDED_SCHEMES``. A host the URL names is checked with the webhooks' guard
(:func:`delivery.ssrf.check_host`) when the URL is set and again before each attempt.

A push is a notification, not the email: the prompt's subject as title, one line (the routines and why) and
the link to the run's page (:func:`notification_body`).

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
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import ip_address
from typing import Any
from urllib.parse import quote

from delivery.ssrf import ForbiddenTarget, IPNetwork, TargetUnresolvable, check_address, check_host, parse_networks
from stridecare.logging import scrub
from stridecare.plugins import ChannelOptions, DeliveryOutcome, OutgoingMessage, SettingsChannel
from stridecare.settings import Settings

log = logging.getLogger(__name__)

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
_DETAIL_CHARS = 300
# Apprise's generic HTTP services, whose URLs take extra headers as ``+Name=value`` query arguments.
_HEADER_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
MESSAGE_ID_HEADER = "X-Stridecare-Message-Id"
# Apprise imports ``imghdr`` (deprecated since Python 3.11) when it loads its plugins: a dependency's internals,
# not something a runner can act on, so that one warning from Apprise's modules stays off the console.
warnings.filterwarnings("ignore", message="'imghdr' is deprecated", category=DeprecationWarning, module="apprise")


class PushOptions(ChannelOptions):
    """An athlete's push target: one Apprise URL, stored as the vault's ciphertext (it carries tokens)."""

    url: str


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


# Apprise services whose every connection is made by ``requests`` (HTTP) or ``smtplib`` (email): both resolve
# through ``socket.getaddrinfo`` on the sending thread, where :func:`guarded` checks each address. Anything else
# (rsyslog and syslog, MQTT, IRC/XMPP, growl, desktop and D-Bus notifiers …) sends through its own sockets or
# stays on this machine, so the guard would not see it: refused unless STRIDECARE_PUSH_UNGUARDED_SCHEMES lists it.
GUARDED_SCHEMES: frozenset[str] = frozenset(
    {
        # generic HTTP (Home Assistant automations, Node-RED, any receiver of JSON/XML/form posts)
        *("json", "jsons", "xml", "xmls", "form", "forms"),
        # self-hosted HTTP services
        *("ntfy", "ntfys", "gotify", "gotifys", "hassio", "hassios", "apprise", "apprises", "matrix", "matrixs"),
        *("mmost", "mmosts", "rocket", "rockets", "bark", "barks", "signal", "signals", "ncloud", "nclouds"),
        *("nctalk", "nctalks", "mastodon", "mastodons", "toot", "toots", "pjet", "pjets", "notica", "noticas"),
        # hosted HTTP services (their API host is fixed)
        *("tgram", "pover", "pbul", "discord", "slack", "gchat", "ifttt", "join", "prowl", "pushed", "spush"),
        *("simplepush", "psafer", "psafers", "zulip", "webex", "wxteams", "workflow", "workflows", "line"),
        *("pagerduty", "opsgenie", "pushplus", "schan", "wecombot", "threema", "whatsapp"),
        # email
        *("mailto", "mailtos"),
    }
)
# Services whose URL names the server that is contacted: that host is checked when the URL is set and again
# before each attempt (the hosted ones above talk to their own public API, whatever the URL holds).
_HOST_IN_URL = frozenset(
    {
        *("json", "jsons", "xml", "xmls", "form", "forms", "ntfy", "ntfys", "gotify", "gotifys", "hassio"),
        *("hassios", "apprise", "apprises", "matrix", "matrixs", "mmost", "mmosts", "rocket", "rockets", "bark"),
        *("barks", "signal", "signals", "ncloud", "nclouds", "nctalk", "nctalks", "mastodon", "mastodons"),
        *("toot", "toots", "pjet", "pjets", "notica", "noticas"),
        # unguarded ones an operator may allow: their host is then the only check there is
        *("rsyslog", "mqtt", "mqtts", "growl", "irc", "ircs", "xmpp", "xmpps", "amqp", "amqps", "smpp", "smpps"),
    }
)
_SUMMARY_CHARS = 240


def _hosts(plugin: Any, scheme: str) -> list[tuple[str, int]]:
    """The hosts (and ports) an Apprise plugin for ``scheme`` will connect to, as far as its URL names them."""
    if scheme in ("mailto", "mailtos"):
        # Apprise's email plugin knows the big providers' servers; ``?smtp=host:port`` names any other.
        smtp = str(getattr(plugin, "smtp_host", "") or getattr(plugin, "host", "") or "")
        host, sep, port = smtp.rpartition(":") if smtp.count(":") == 1 else ("", "", "")
        host = host if sep else smtp
        return [(host, int(port) if port.isdigit() else int(getattr(plugin, "port", 0) or 25))] if host else []
    named = getattr(plugin, "host", None)
    if scheme in _HOST_IN_URL and isinstance(named, str) and named:
        return [(named, int(getattr(plugin, "port", 0) or 443))]
    return []


def _apprise() -> Any:
    """The apprise module, imported on first use (its plugin registry takes a quarter of a second to load)."""
    import apprise  # deferred: start-up time (Apprise's plugin registry, loaded by the first push)

    return apprise


def _scheme_problem(scheme: str, settings: Settings) -> str | None:
    allowed = {s.strip().lower() for s in settings.push_unguarded_schemes}
    if scheme in GUARDED_SCHEMES or scheme in allowed:
        return None
    return (
        f"{scheme}:// is not accepted for push: its traffic does not go through stridecare's guard against "
        "request forgery (syslog, UDP, local and desktop services are refused); use an HTTP-based service "
        f"(ntfy, Gotify, Telegram, json:// …) or mailto://. An operator who wants it anyway can set "
        f"STRIDECARE_PUSH_UNGUARDED_SCHEMES={scheme}"
    )


def check_push_url(url: str, settings: Settings) -> tuple[str | None, str | None]:
    """``(refusal, warning)`` for a push URL, before it is stored: the scheme must be on the allowlist (or
    allowed by the operator), Apprise must understand it, and every host it names must pass the same guard as
    webhooks. A host that does not resolve now is a warning, not a refusal (it may where the workers run)."""
    apprise = _apprise()
    scheme = service_of(url)
    problem = _scheme_problem(scheme, settings)
    if problem:
        return problem, None
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        return f"Apprise does not understand this {scheme}:// URL (see the Apprise wiki for the format)", None
    allowed = parse_networks(settings.webhook_allowed_networks)
    warning: str | None = None
    for host, port in _hosts(plugin, scheme):
        try:
            check_host(host, port, allowed)
        except ForbiddenTarget as exc:
            return f"pushes to this {scheme}:// URL would be refused: {exc.reason}", None
        except TargetUnresolvable as exc:
            warning = f"{exc}; pushes retry on the backoff schedule (about a day)"
    return None, warning


def notification_body(message: OutgoingMessage) -> str:
    """What a push shows: one line (the routines and why) and the page with the rest; the full text is email's."""
    line = _UNPRINTABLE.sub(" ", message.summary).strip()
    if not line:
        first = next((ln.strip() for ln in message.text.splitlines() if ln.strip()), "")
        line = first
    if len(line) > _SUMMARY_CHARS:
        line = line[: _SUMMARY_CHARS - 1].rstrip() + "…"
    return f"{line}\n{message.link_url}" if message.link_url else line


class PushChannel(SettingsChannel):
    """Sends the prompt as a notification (title, one line, the run page link) through the athlete's Apprise
    URL (``--push``)."""

    name = "push"
    address_key = "url"
    secret_keys = ("url",)
    options_schema = PushOptions

    def __init__(self, settings: Settings) -> None:
        """Build the channel; the networks webhooks may reach are the networks pushes may reach."""
        super().__init__(settings)
        self._allowed = parse_networks(settings.webhook_allowed_networks)

    def send(self, message: OutgoingMessage, target: str, secret: str | None = None) -> DeliveryOutcome:
        """One attempt through Apprise; never raises, and never shows more of the URL than its service."""
        apprise = _apprise()

        service = service_of(target)
        # Again at send time: the URL was stored before the operator's settings or this release changed.
        problem = _scheme_problem(service, self.settings)
        if problem:
            return DeliveryOutcome(ok=False, retry=False, detail=f"target refused: {problem}")
        plugin = apprise.Apprise.instantiate(with_message_id(target, message.message_id), suppress_exceptions=True)
        if plugin is None:
            return DeliveryOutcome(ok=False, retry=False, detail=f"not a usable Apprise URL ({service}://…)")
        for host, port in _hosts(plugin, service):
            try:
                check_host(host, port, self._allowed)
            except ForbiddenTarget as exc:
                log.warning("push %s refused: %s", message.message_id, exc.reason)
                return DeliveryOutcome(ok=False, retry=False, detail=f"target refused: {exc.reason}")
            except TargetUnresolvable as exc:
                return DeliveryOutcome(ok=False, retry=True, detail=str(exc))
        capture = _ThreadLog()
        apprise_log = logging.getLogger(apprise.LOGGER_NAME)
        apprise_log.addHandler(capture)
        try:
            with guarded(self._allowed) as guard:
                ok = bool(plugin.notify(body=notification_body(message), title=message.subject))
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
