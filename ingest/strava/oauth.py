"""Connecting a Strava account and keeping its tokens fresh.

Strava access tokens live 6 hours. A refresh returns a new refresh token and the old one stops working at
once, so two workers refreshing the same account at the same time would lock the athlete out. Refreshes
therefore happen under the account's row lock (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite the
``BEGIN IMMEDIATE`` that :class:`~stridecare.db.engine.Database` issues for every transaction serialises
writers), the row is re-read inside the lock, and the new tokens are committed before the new access
token is handed out.

Tokens and the client secret never appear in logs or exception messages.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingest.strava import ratelimit
from ingest.strava.client import (
    STRAVA_ORIGIN,
    BaseUrlSession,
    ResponseHook,
    api_url,
    app_client,
    rebase_url,
    strava_exc,
)

# Re-exported: callers have long imported the errors from here.
from ingest.strava.errors import (
    APP_INACTIVE_MESSAGE,
    StravaAppInactive,
    StravaAthleteLimit,
    names_athlete_limit,
    names_inactive_app,
)
from ingest.strava.errors import StravaAccountMissing as StravaAccountMissing
from ingest.strava.errors import StravaAuthError as StravaAuthError
from ingest.strava.errors import StravaConfigError as StravaConfigError
from ingest.strava.errors import StravaConnectError as StravaConnectError
from ingest.strava.errors import StravaError as StravaError
from ingest.strava.errors import StravaScopeError as StravaScopeError
from ingest.strava.errors import StravaStateError as StravaStateError
from stridecare.crypto import Vault, sign, signing_key, verify
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, StravaAccount
from stridecare.links import athlete_key, spend_once
from stridecare.settings import Settings

if TYPE_CHECKING:
    from stravalib.protocol import Scope

    from ingest.strava.api import StravaClient

log = logging.getLogger(__name__)

# read: profile basics; activity:read: public/followers activities; activity:read_all: also "only me" ones.
REQUESTED_SCOPE: tuple[Scope, ...] = ("read", "activity:read", "activity:read_all")
ACTIVITY_SCOPES = frozenset({"activity:read", "activity:read_all"})
STATE_TTL = timedelta(minutes=15)
# Long enough to pass a link on to the athlete; it can be used once.
CONNECT_LINK_TTL = timedelta(hours=24)


def _credentials(settings: Settings) -> tuple[int, str]:
    if not settings.strava_client_id or settings.strava_client_secret is None:
        raise StravaConfigError("STRIDECARE_STRAVA_CLIENT_ID and STRIDECARE_STRAVA_CLIENT_SECRET must be set")
    try:
        client_id = int(settings.strava_client_id)
    except ValueError:
        raise StravaConfigError("STRIDECARE_STRAVA_CLIENT_ID must be Strava's numeric client id") from None
    return client_id, settings.strava_client_secret.get_secret_value()


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


# -- state ---------------------------------------------------------------------------------------------------


def _signed_token(key: bytes, purpose: str, athlete_id: int, now: datetime | None) -> str:
    issued = int(_now(now).timestamp())
    body = f"{athlete_id}.{issued}.{secrets.token_urlsafe(9)}"
    return f"{body}.{sign(key, purpose, body)}"


def _token_athlete(token: str) -> tuple[int, int, str, str]:
    """``(athlete id, issued, body, signature)`` of a token made by :func:`_signed_token`."""
    parts = token.split(".")
    if len(parts) != 4:
        raise StravaStateError("the link is malformed")
    try:
        return int(parts[0]), int(parts[1]), ".".join(parts[:3]), parts[3]
    except ValueError:
        raise StravaStateError("the link is malformed") from None


def _check_age(issued: int, ttl: timedelta, now: datetime | None, what: str) -> None:
    age = _now(now).timestamp() - issued
    if age < -60 or age > ttl.total_seconds():
        raise StravaStateError(f"{what} has expired; start connecting again")


def make_state(settings: Settings, athlete_id: int, now: datetime | None = None) -> str:
    """A signed, expiring OAuth ``state`` naming the stridecare athlete who is connecting.

    The web app also keeps it in the browser's cookie and compares, so that a state cannot be replayed from
    another browser; :func:`exchange_code` spends it, so it cannot be replayed at all.
    """
    return _signed_token(signing_key(settings), "strava-state", athlete_id, now)


def verify_state(settings: Settings, state: str, now: datetime | None = None) -> int:
    """The athlete id carried by a state made by :func:`make_state`; raises :class:`StravaStateError`."""
    athlete_id, issued, body, signature = _token_athlete(state)
    if not verify(signing_key(settings), signature, "strava-state", body):
        raise StravaStateError("OAuth state signature does not match")
    _check_age(issued, STATE_TTL, now, "OAuth state")
    return athlete_id


def _spend(session: Session, kind: str, token: str, issued: int, ttl: timedelta, now: datetime) -> None:
    expires = datetime.fromtimestamp(issued, UTC) + ttl + timedelta(minutes=1)
    if not spend_once(session, kind, token, expires, now):
        raise StravaStateError("this link was already used; ask for a new one")


# -- connect links -------------------------------------------------------------------------------------------


def _connect_key(settings: Settings, link_secret: str) -> bytes:
    # Bound to the athlete's own secret: a link dies when its athlete is forgotten.
    return athlete_key(signing_key(settings), link_secret)


def make_connect_token(settings: Settings, athlete: Athlete, now: datetime | None = None) -> str:
    """The token of a signed, expiring, single-use link that lets whoever holds it connect a Strava account
    to ``athlete`` (printed by ``stridecare strava connect --link``, offered by the loopback dashboard)."""
    return _signed_token(_connect_key(settings, athlete.link_secret), "strava-connect", athlete.id, now)


def check_connect_token(session: Session, settings: Settings, token: str, now: datetime, *, spend: bool) -> int:
    """The athlete id a connect link was made for; with ``spend`` the link is used up in the caller's
    transaction. Raises :class:`StravaStateError` with one message for every refusal (unknown athlete
    included), so that the answer tells nothing about which athletes exist."""
    refused = StravaStateError("this connect link is not valid, has expired or was already used")
    try:
        athlete_id, issued, body, signature = _token_athlete(token)
    except StravaStateError:
        raise refused from None
    athlete = session.get(Athlete, athlete_id)
    key = _connect_key(settings, athlete.link_secret if athlete is not None else secrets.token_hex(16))
    if athlete is None or not verify(key, signature, "strava-connect", body):
        raise refused
    try:
        _check_age(issued, CONNECT_LINK_TTL, now, "the link")
        if spend:
            _spend(session, "strava-connect", token, issued, CONNECT_LINK_TTL, now)
    except StravaStateError:
        raise refused from None
    return athlete_id


def authorization_url(settings: Settings, redirect_uri: str, state: str, approval_prompt: str = "auto") -> str:
    """Where to send the athlete; Strava redirects back to ``redirect_uri`` with code, state and scope."""
    client_id, _ = _credentials(settings)
    prompt: Any = "force" if approval_prompt == "force" else "auto"
    url: str = app_client(settings).authorization_url(
        client_id=client_id,
        redirect_uri=redirect_uri,
        approval_prompt=prompt,
        scope=list(REQUESTED_SCOPE),
        state=state,
    )
    return rebase_url(settings.strava_base_url, url, api_url(settings))


def check_scope(accepted_scope: str | None) -> frozenset[str]:
    """The accepted scopes as a set; raises :class:`StravaScopeError` without an activity scope."""
    scopes = frozenset(s.strip() for s in (accepted_scope or "").replace(" ", ",").split(",") if s.strip())
    if not scopes & ACTIVITY_SCOPES:
        raise StravaScopeError(
            "Strava was connected without access to your activities. Connect again and keep "
            "'View data about your activities' ticked."
        )
    return scopes


# -- connect -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectedAccount:
    """The result of a successful connection."""

    account_id: int
    athlete_id: int
    strava_athlete_id: int
    scope: str
    created: bool


def _expires(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


def exchange_code(
    db: Database,
    settings: Settings,
    *,
    code: str,
    state: str,
    accepted_scope: str | None,
    now: datetime | None = None,
) -> ConnectedAccount:
    """Finish the OAuth callback: verify ``state`` and the accepted scope, exchange ``code`` for tokens and
    store them encrypted on the athlete's :class:`StravaAccount` (created, or updated when the same Strava
    athlete reconnects). A new account starts with a pending backfill.

    Raises :class:`StravaStateError`, :class:`StravaScopeError` (before the code is spent),
    :class:`StravaConnectError` or :class:`StravaConfigError`.
    """
    now = _now(now)
    athlete_id = verify_state(settings, state, now)
    # Single-use: a state seen once (a callback replayed from history, a leaked address) is refused.
    with db.transaction() as s:
        _spend(s, "strava-state", state, _token_athlete(state)[1], STATE_TTL, now)
    scopes = check_scope(accepted_scope)
    client_id, client_secret = _credentials(settings)
    client = app_client(settings)
    try:
        result: Any = client.exchange_code_for_token(
            client_id=client_id, client_secret=client_secret, code=code, return_athlete=True
        )
    except strava_exc.Fault as err:
        status = err.response.status_code if err.response is not None else None
        # The Fault's response carries the request body (secret and code): don't chain it.
        if names_athlete_limit(err.response):
            log.warning("Strava refused a new athlete: the app's athlete limit is reached")
            raise StravaAthleteLimit() from None
        if isinstance(err, strava_exc.ApplicationInactive) or names_inactive_app(err.response):
            ratelimit.record_inactive(db, now)
            raise StravaConnectError(f"Strava refused the connection: {APP_INACTIVE_MESSAGE}") from None
        raise StravaConnectError(f"Strava refused the authorization code (HTTP {status})") from None
    access_info, summary_athlete = result
    found: Any = getattr(summary_athlete, "id", None)
    if found is None:
        # The athlete in the token response is undocumented; ask for it when it is missing.
        client.access_token = access_info["access_token"]
        found = client.get_athlete().id
    if found is None:
        raise StravaConnectError("Strava did not say which athlete connected")
    strava_id = int(found)
    vault = Vault.from_settings(settings)
    scope_text = ",".join(sorted(scopes))
    with db.transaction() as s:
        if s.get(Athlete, athlete_id) is None:
            raise StravaConnectError("the stridecare athlete in the OAuth state no longer exists")
        account = s.execute(
            select(StravaAccount).where(StravaAccount.strava_athlete_id == int(strava_id)).with_for_update()
        ).scalar_one_or_none()
        other = s.execute(select(StravaAccount).where(StravaAccount.athlete_id == athlete_id)).scalar_one_or_none()
        created = account is None
        if account is not None and account.athlete_id != athlete_id:
            raise StravaConnectError("this Strava account is already connected to another stridecare athlete")
        if account is None and other is not None:
            raise StravaConnectError("this athlete already has another Strava account connected; disconnect it first")
        if account is None:
            account = StravaAccount(
                athlete_id=athlete_id,
                strava_athlete_id=int(strava_id),
                connected_at=now,
                backfill_state="pending",
                backfill_page=0,
                backfill_resume_at=now,
                backfill_seen_ids=[],
            )
            s.add(account)
        account.access_token_enc = vault.encrypt(access_info["access_token"])
        account.refresh_token_enc = vault.encrypt(access_info["refresh_token"])
        account.expires_at = _expires(access_info["expires_at"])
        account.scope = scope_text
        s.flush()
        account_id = account.id
    log.info("Strava athlete %s connected to athlete %s (scope %s)", strava_id, athlete_id, scope_text)
    return ConnectedAccount(account_id, athlete_id, int(strava_id), scope_text, created)


# -- refresh -------------------------------------------------------------------------------------------------


def _refresh(settings: Settings, refresh_token: str) -> dict[str, Any]:
    client_id, client_secret = _credentials(settings)
    try:
        info: dict[str, Any] = dict(
            app_client(settings).refresh_access_token(
                client_id=client_id, client_secret=client_secret, refresh_token=refresh_token
            )
        )
    except strava_exc.Fault as err:
        status = err.response.status_code if err.response is not None else None
        if isinstance(err, strava_exc.ApplicationInactive) or names_inactive_app(err.response):
            # The app, not the athlete's grant: the refresh token stays, nobody must reconnect.
            raise StravaAppInactive(datetime.now(UTC) + ratelimit.PROBE_INTERVAL) from None
        if status in (400, 401, 403):
            raise StravaAuthError(f"Strava rejected the refresh token (HTTP {status}); reconnect Strava") from None
        raise StravaError(f"Strava token refresh failed (HTTP {status})") from None
    return info


def fresh_access_token(
    db: Database,
    settings: Settings,
    account_id: int,
    *,
    now: datetime | None = None,
    rejected_token: str | None = None,
) -> str:
    """An access token for the account that stays valid for at least ``strava_refresh_margin_s`` more seconds.

    When it would expire sooner, it is refreshed under the row lock; concurrent callers wait on the lock,
    re-read the row and use the token the first one stored, so there is exactly one refresh. Pass
    ``rejected_token`` after Strava answered 401 to force a refresh unless another caller has already replaced
    that token. Raises :class:`StravaAuthError` when Strava no longer accepts the refresh token.
    """
    now = _now(now)
    margin = timedelta(seconds=settings.strava_refresh_margin_s)
    vault = Vault.from_settings(settings)

    def usable(account: StravaAccount) -> str | None:
        token = vault.decrypt(account.access_token_enc)
        if rejected_token is not None and secrets.compare_digest(token, rejected_token):
            return None
        return token if account.expires_at - margin > now else None

    # Most calls find a fresh token: read without taking the write lock.
    with db.read() as s:
        account = s.get(StravaAccount, account_id)
        if account is None:
            raise StravaAccountMissing(f"no Strava account {account_id}")
        token = usable(account)
        if token is not None:
            return token

    with db.transaction() as s:
        locked = s.execute(
            select(StravaAccount).where(StravaAccount.id == account_id).with_for_update()
        ).scalar_one_or_none()
        if locked is None:
            raise StravaAccountMissing(f"no Strava account {account_id}")
        # Another caller may have refreshed while we waited for the lock.
        token = usable(locked)
        if token is not None:
            return token
        started = time.monotonic()
        info = _refresh(settings, vault.decrypt(locked.refresh_token_enc))
        locked.access_token_enc = vault.encrypt(info["access_token"])
        locked.refresh_token_enc = vault.encrypt(info["refresh_token"])
        locked.expires_at = _expires(info["expires_at"])
        new_token: str = info["access_token"]
    # Committed: the new refresh token is stored before anybody uses the new access token.
    log.info("Strava token of account %s refreshed in %.2f s", account_id, time.monotonic() - started)
    return new_token


def athlete_client(
    db: Database,
    settings: Settings,
    account_id: int,
    *,
    now: datetime | None = None,
    on_response: ResponseHook | None = None,
) -> StravaClient:
    """A real ``stravalib.Client`` for one connected account, with an access token valid for a few minutes
    more.

    The token is refreshed under the account's row lock when it is close to expiry (see
    :func:`fresh_access_token`). ``on_response`` sees every response (rate-limit headers).
    """
    client = app_client(settings, on_response)
    client.access_token = fresh_access_token(db, settings, account_id, now=now)
    return client


def revoke(db: Database, settings: Settings, account_id: int) -> None:
    """Revoke our access at Strava with ``POST /oauth/revoke``: the app's client credentials in HTTP Basic, the
    refresh token in the body (revoking it revokes the access token too; no token refresh is needed first)."""
    client_id, client_secret = _credentials(settings)
    with db.read() as s:
        account = s.get(StravaAccount, account_id)
        if account is None:
            raise StravaAccountMissing(f"no Strava account {account_id}")
        refresh_token = Vault.from_settings(settings).decrypt(account.refresh_token_enc)
    session = BaseUrlSession(settings.strava_base_url, api_base=api_url(settings))
    try:
        response = session.post(
            STRAVA_ORIGIN + "/oauth/revoke",
            data={"token": refresh_token, "token_type_hint": "refresh_token"},
            auth=(str(client_id), client_secret),
        )
    finally:
        session.close()
    if response.status_code >= 400:
        raise StravaError(f"Strava revocation failed (HTTP {response.status_code})")


def deauthorize(db: Database, settings: Settings, account_id: int, *, now: datetime | None = None) -> None:
    """Revoke our access at Strava: ``POST /oauth/revoke`` with ``STRIDECARE_STRAVA_USE_REVOKE`` (see
    :func:`revoke`), else ``POST /oauth/deauthorize`` (retired by Strava on 2027-06-01) with the access token in
    the Authorization header. Deleting the athlete's Strava data is the caller's job, as the API agreement
    requires."""
    if settings.strava_use_revoke:
        revoke(db, settings, account_id)
        return
    token = fresh_access_token(db, settings, account_id, now=now)
    client = app_client(settings)
    client.access_token = token
    try:
        # stravalib's Client.deauthorize posts to /api/v3/oauth/deauthorize; Strava documents
        # /oauth/deauthorize.
        client.protocol.post("https://www.strava.com/oauth/deauthorize")
    except strava_exc.Fault as err:
        status = err.response.status_code if err.response is not None else None
        raise StravaError(f"Strava deauthorization failed (HTTP {status})") from None
