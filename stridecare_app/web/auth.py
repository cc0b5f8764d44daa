"""Who may see what: the admin session, the ``Host`` check, trusted proxies and CSRF tokens.

No page is open because of the client's address. A reverse proxy or an ssh tunnel on this machine makes every
visitor arrive from loopback, and nginx's default ``proxy_pass`` even rewrites ``Host`` to the upstream's
loopback address, so neither the peer nor the ``Host`` header says who is asking. Instead:

* **The admin session.** ``stridecare run`` and ``stridecare web`` print a one-time login link at start, and
  ``stridecare admin link`` prints a fresh one. The link (signed, valid for :data:`LOGIN_LINK_TTL`, spent on
  use) sets a signed session cookie (HttpOnly, SameSite=Strict, Secure when the public URL is https). With a
  password set (``stridecare admin password``, stored as an scrypt hash), ``/login`` also takes it. Changing
  the password, or ``stridecare admin logout``, ends every session (:attr:`AdminLogin.sessions_since`).
  The session opens the home page, every dashboard and run page, and ``/metrics``.
* **An athlete's private link** (``/dashboard/NAME?t=TOKEN``) opens only that athlete's pages.
* **The signed links** (done, unsubscribe, Strava connect) and Strava's webhook (verify token, subscription)
  need no session: their signature is their authority.
* **Host.** A request whose ``Host`` names neither the public URL's host nor a loopback name is refused with
  421 on every route (:class:`HostGuard`): a page elsewhere that rebinds its own name to this machine gets
  nothing, not even ``/healthz``.
* **Proxies.** ``X-Forwarded-For``/``-Proto``/``-Host`` are believed only from ``STRIDECARE_TRUSTED_PROXIES``
  (uvicorn's ``ProxyHeadersMiddleware`` with that list; uvicorn's own default trust of 127.0.0.1 is off).
* **CSRF.** The forms a session submits (log in, log out) carry a token kept in the session and compared in
  constant time. The done, unsubscribe and connect forms are authorized by the signature in their address,
  which a forging page does not know.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from stridecare.crypto import signing_key
from stridecare.db.models import AdminLogin, UsedToken
from stridecare.links import spend_once
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.web.pages import environment, html_response

SESSION_COOKIE = "stridecare_session"
# The cookie's own lifetime (checked against its signed timestamp by Starlette's SessionMiddleware).
SESSION_MAX_AGE_S = 7 * 24 * 3600
LOGIN_LINK_TTL = timedelta(hours=1)
_LOGIN_KIND = "admin-login"
# Longer than anything we sign; a longer value is refused before it is decoded.
MAX_TOKEN_CHARS = 300
MAX_PASSWORD_CHARS = 1024
# Password guesses: this many failures in the window answer 429 for the rest of it (the link still works).
MAX_FAILURES = 10
MAX_CONCURRENT_HASHES = 2
FAILURE_WINDOW_S = 60.0

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024

# -- keys and tokens ---------------------------------------------------------------------------------------


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: the service's signing key, bound to this one purpose."""
    return hashlib.sha256(b"stridecare-admin-session|" + signing_key(settings)).hexdigest()


def _login_serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(session_secret(settings), salt="stridecare-admin-login")


def make_login_token(settings: Settings, now: datetime) -> str:
    """A signed, expiring token for one admin login (the ``t`` of :func:`login_url`)."""
    expires = int((now + LOGIN_LINK_TTL).timestamp())
    token = _login_serializer(settings).dumps({"n": secrets.token_urlsafe(12), "exp": expires})
    return str(token)


def login_url(settings: Settings, now: datetime) -> str:
    """A fresh one-time login link at the public URL."""
    return f"{settings.effective_public_url}/login?t={quote(make_login_token(settings, now), safe='')}"


def _login_expiry(settings: Settings, token: str, now: datetime) -> datetime | None:
    """When a well-signed, unexpired login token expires; None for anything else."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    try:
        data: Any = _login_serializer(settings).loads(token)
    except (BadData, ValueError, UnicodeError):
        return None
    expires = data.get("exp") if isinstance(data, dict) else None
    if not isinstance(expires, int) or not now.timestamp() < expires < now.timestamp() + 2 * 86400:
        return None
    return datetime.fromtimestamp(expires, UTC)


def login_token_spent(session: Session, token: str) -> bool:
    """True when ``token`` was used (so that a spent link's page offers no button)."""
    # The digest stridecare.links.spend_once records for a spent token.
    digest = hashlib.sha256(f"{_LOGIN_KIND}|{token}".encode()).hexdigest()
    return session.get(UsedToken, digest) is not None


def spend_login_token(session: Session, settings: Settings, token: str, now: datetime) -> bool:
    """True when ``token`` is a valid login token, now spent in the caller's transaction."""
    expires = _login_expiry(settings, token, now)
    return expires is not None and spend_once(session, _LOGIN_KIND, token, expires, now)


# -- the password ----------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """An scrypt hash of ``password`` with a fresh salt, as ``scrypt$n$r$p$salt$hash``."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(stored: str, password: str) -> bool:
    """True when ``password`` matches the hash ``stored`` (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = _unb64(digest)
        given = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=_SCRYPT_MAXMEM, dklen=32
        )
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(given, expected)


def _row(session: Session) -> AdminLogin:
    row = session.get(AdminLogin, 1)
    if row is None:
        row = AdminLogin(id=1)
        session.add(row)
    return row


def set_password(session: Session, password: str | None) -> None:
    """Set (or with None remove) the admin password; every admin session ends."""
    row = _row(session)
    row.password_hash = hash_password(password) if password is not None else None
    row.sessions_since = _wall_clock()


def end_sessions(session: Session) -> None:
    """End every admin session (each browser logs in again)."""
    _row(session).sessions_since = _wall_clock()


def _wall_clock() -> datetime:
    # Sessions belong to real browsers: they are timed by the wall clock, never by a simulation clock.
    return datetime.fromtimestamp(time.time(), UTC)


def login_state(session: Session) -> tuple[str | None, datetime | None]:
    """``(password hash, sessions_since)`` of the installation (both None when never set)."""
    row = session.get(AdminLogin, 1)
    return (row.password_hash, row.sessions_since) if row is not None else (None, None)


# -- requests --------------------------------------------------------------------------------------------


async def is_admin(request: Request, rt: Runtime) -> bool:
    """True when the request carries a live admin session."""
    if "session" not in request.scope:  # an app built without the session middleware has no sessions
        return False
    issued = request.session.get("admin")
    if not isinstance(issued, int | float) or isinstance(issued, bool):
        return False

    def since() -> datetime | None:
        with rt.db.read() as session:
            return login_state(session)[1]

    void_before = await run_in_threadpool(since)
    return void_before is None or issued > void_before.timestamp()


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use) for a form to carry."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, given: object) -> bool:
    """True when a form's ``given`` token is the session's."""
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not isinstance(given, str) or not given.isascii():
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def plain(value: str, max_chars: int = MAX_TOKEN_CHARS) -> str:
    """``value`` when it is printable ASCII of at most ``max_chars`` characters, else "" (never a signature, an
    id or a token: those are compared as bytes, and a non-ASCII string would make ``hmac`` raise)."""
    if len(value) > max_chars or not value.isascii() or not value.isprintable():
        return ""
    return value


MAX_DB_INT = 2**63 - 1


def db_id(text: str) -> int | None:
    """A database id from a path segment: ASCII digits within a 64-bit integer, else None (SQLite raises
    OverflowError beyond that, and ``int`` takes other scripts' digits too)."""
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= MAX_DB_INT else None


# -- the Host check and proxies ----------------------------------------------------------------------------


def _is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always this machine, never rebound
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str | None:
    """The lower-case name of a ``Host`` header's value, without its port; None when it is no host."""
    try:
        name = urlsplit(f"//{host.strip()}").hostname
    except ValueError:
        return None
    return name.rstrip(".").lower() if name else None


class TrustedProxies:
    """The peers whose forwarding headers are believed."""

    def __init__(self, entries: list[str]) -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, peer: str | None) -> bool:
        """True when ``peer`` (an address) is one of the trusted proxies."""
        if not peer or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def uvicorn_list(self) -> list[str]:
        """The list as uvicorn's ``ProxyHeadersMiddleware`` takes it (networks in their normal form)."""
        return [str(network) for network in self.networks]


class HostGuard:
    """ASGI middleware: 421 for a request whose ``Host`` (or a trusted proxy's ``X-Forwarded-Host``) names
    neither the public URL's host nor a loopback name."""

    def __init__(self, app: ASGIApp, public_host: str, proxies: TrustedProxies) -> None:
        self.app = app
        self.public_host = public_host.lower()
        self.proxies = proxies

    def allowed(self, scope: Scope) -> bool:
        """True when the request names this site."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        client = scope.get("client")
        forwarded = headers.get("x-forwarded-host")
        if forwarded and self.proxies.trusts(client[0] if client else None):
            host = forwarded.split(",")[-1]  # the nearest proxy's word
        name = host_name(host)
        return name is not None and (name == self.public_host or _is_loopback_name(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request for another site; pass the rest on."""
        if scope["type"] == "http" and not self.allowed(scope):
            response = PlainTextResponse("Misdirected request: this server does not serve that host name.", 421)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# -- the login pages ---------------------------------------------------------------------------------------


class _Failures:
    """Recent failed password attempts of this process, for a small brake on guessing."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > FAILURE_WINDOW_S:
            self._times.popleft()

    def blocked(self) -> bool:
        with self._lock:
            self._trim(time.monotonic())
            return len(self._times) >= MAX_FAILURES

    def add(self) -> None:
        with self._lock:
            self._times.append(time.monotonic())


def _page(request: Request, status: int, **values: Any) -> Response:
    body = (
        environment()
        .get_template("login.html.j2")
        .render(
            csrf=csrf_token(request), **{"token": "", "password": False, "message": "", "logged_in": False, **values}
        )
    )
    response = html_response(200, body)  # the whole page, whatever the status
    response.status_code = status
    return response


def routes(rt: Runtime) -> list[Route]:
    """``/login`` (GET asks, POST logs in with a link's token or the password) and ``/logout`` (POST)."""
    failures = _Failures()
    # Each check holds 32 MiB for about a third of a second: two at a time, however many guesses arrive at once.
    hashing = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)

    def has_password() -> bool:
        with rt.db.read() as session:
            return login_state(session)[0] is not None

    def link_is_live(token: str) -> bool:
        if _login_expiry(rt.settings, token, rt.now()) is None:
            return False
        with rt.db.read() as session:
            return not login_token_spent(session, token)

    def spend(token: str) -> bool:
        with rt.db.transaction() as session:
            return spend_login_token(session, rt.settings, token, rt.now())

    def password_matches(password: str) -> bool:
        with rt.db.read() as session:
            stored = login_state(session)[0]
        if stored is None:
            return False
        with hashing:
            return check_password(stored, password)

    def logged_in(request: Request) -> Response:
        request.session.clear()
        request.session["admin"] = _wall_clock().timestamp()
        request.session["csrf"] = secrets.token_urlsafe(24)  # a new token for the new session
        return RedirectResponse("/", status_code=303)

    async def login(request: Request) -> Response:
        token = plain(request.query_params.get("t", ""))
        password = await run_in_threadpool(has_password)
        if request.method == "GET":
            if token:
                # A GET only asks: link previews open links, and the link is single-use.
                if not await run_in_threadpool(link_is_live, token):
                    return _page(request, 403, message="expired", password=password)
                return _page(request, 200, token=token)
            return _page(request, 200, password=password, logged_in=await is_admin(request, rt))
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            return _page(request, 403, message="csrf", password=password)
        given_token = form.get("t")
        if isinstance(given_token, str) and given_token:
            if await run_in_threadpool(spend, plain(given_token)):
                return logged_in(request)
            return _page(request, 403, message="expired", password=password)
        given = form.get("password")
        if not password or not isinstance(given, str) or not given or len(given) > MAX_PASSWORD_CHARS:
            return _page(request, 400, message="missing", password=password)
        if failures.blocked():
            return _page(request, 429, message="slow", password=password)
        if await run_in_threadpool(password_matches, given):
            return logged_in(request)
        failures.add()
        return _page(request, 403, message="wrong", password=password)

    async def logout(request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            return _page(request, 403, message="csrf", password=await run_in_threadpool(has_password))
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    return [Route("/login", login, methods=["GET", "POST"]), Route("/logout", logout, methods=["POST"])]
