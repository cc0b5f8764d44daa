"""stravalib clients aimed at ``settings.strava_base_url``, without stravalib's sleeping limiter or refresh.

stravalib 2.6 builds every URL as ``https://{ApiV3.server}/…`` (``server`` is a host name only; the scheme is
fixed to https), so setting ``server`` cannot point it at a plain-http test server or a path prefix. Instead
its ``requests_session`` is a :class:`BaseUrlSession`, which rewrites the ``https://www.strava.com`` prefix of
every request to the configured base URL at the network boundary. With the default base URL it changes
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import requests
from stravalib import Client
from stravalib.protocol import ApiV3

from stridecare.db.engine import Database
from stridecare.settings import Settings

log = logging.getLogger(__name__)

STRAVA_ORIGIN = "https://www.strava.com"
# Strava answers within seconds; a hung connection must not hold a worker (or a token row lock) for long.
DEFAULT_TIMEOUT_S = 30.0

ResponseHook = Callable[[requests.Response], None]


class BaseUrlSession(requests.Session):
    """A requests session that sends stravalib's ``https://www.strava.com`` URLs to another base URL."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def rebase(self, url: str) -> str:
        """``url`` with the Strava origin replaced by the configured base URL."""
        return rebase_url(self.base_url, url)

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        """Send the request to the rebased URL, with a default timeout (stravalib sets none)."""
        if isinstance(url, bytes):
            url = url.decode()
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, self.rebase(str(url)), *args, **kwargs)


def rebase_url(base_url: str, url: str) -> str:
    """Replace the ``https://www.strava.com`` origin of ``url`` with ``base_url``; other URLs stay."""
    base = base_url.rstrip("/")
    if url == STRAVA_ORIGIN or url.startswith(STRAVA_ORIGIN + "/") or url.startswith(STRAVA_ORIGIN + "?"):
        return base + url[len(STRAVA_ORIGIN) :]
    return url


class _ApiV3(ApiV3):
    """stravalib's protocol without its environment-driven token refresh."""

    def _check_credentials(self) -> None:
        # stravalib reads STRAVA_CLIENT_ID/SECRET from the environment and then refreshes expired tokens by
        # itself, keeping the new refresh token only in memory - which would invalidate the stored one - and
        # otherwise warns on every client. Token refresh is ours (oauth.fresh_access_token), under a row lock.
        self.client_id = None
        self.client_secret = None


class StravaClient(Client):
    """A real ``stravalib.Client`` on a given requests session, with no limiter and no automatic refresh."""

    def __init__(self, access_token: str | None, session: requests.Session) -> None:
        # Client.__init__ only sets ``log`` and ``protocol``; it is bypassed so that ApiV3 is ours.
        # rate_limiter=None is stravalib's no-op: its own limiter sleeps in-process for up to a day, whereas
        # we schedule from the recorded headers.
        self.log = logging.getLogger(f"{Client.__module__}.{Client.__name__}")
        self.protocol = _ApiV3(access_token=access_token, requests_session=session, rate_limiter=None)


def _client(settings: Settings, access_token: str | None, on_response: ResponseHook | None) -> StravaClient:
    session = BaseUrlSession(settings.strava_base_url)
    if on_response is not None:

        def hook(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
            on_response(response)

        session.hooks["response"].append(hook)
    return StravaClient(access_token, session)


def app_client(settings: Settings, on_response: ResponseHook | None = None) -> StravaClient:
    """An unauthenticated client for the OAuth endpoints and push subscriptions."""
    return _client(settings, None, on_response)


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
    :func:`ingest.strava.oauth.fresh_access_token`). ``on_response`` sees every response (rate-limit headers).
    """
    from ingest.strava.oauth import fresh_access_token

    token = fresh_access_token(db, settings, account_id, now=now)
    return _client(settings, token, on_response)
