"""stravalib clients aimed at the configured Strava hosts, without stravalib's sleeping limiter or refresh.

stravalib 2.6 builds every URL as ``https://{ApiV3.server}/…`` (``server`` is a host name only; the scheme is
fixed to https), so setting ``server`` cannot point it at a plain-http test server or a path prefix. Instead
its ``requests_session`` is a :class:`BaseUrlSession`, which rewrites URLs at the network boundary: the API's
``https://www.strava.com/api/v3`` prefix to ``settings.strava_api_url`` (Strava moves the API to
``https://api-v3.strava.com``, without the ``/api/v3`` prefix, from 2027), and every other
``https://www.strava.com`` URL (OAuth: authorize, token, deauthorize, revoke) to ``settings.strava_base_url``.
With the defaults it changes nothing.

Access tokens travel in the ``Authorization`` header only (Strava refuses them in form or query parameters
from 2027): the session refuses to send a request that carries one anywhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import requests
from stravalib import Client
from stravalib.protocol import ApiV3

from stridecare.settings import Settings

log = logging.getLogger(__name__)

STRAVA_ORIGIN = "https://www.strava.com"
STRAVA_API_PREFIX = STRAVA_ORIGIN + "/api/v3"
# Strava answers within seconds; a hung connection must not hold a worker (or a token row lock) for long.
DEFAULT_TIMEOUT_S = 30.0

ResponseHook = Callable[[requests.Response], None]


def api_url(settings: Settings) -> str:
    """Where the API is: ``STRIDECARE_STRAVA_API_URL``, else the base URL's ``/api/v3``."""
    return (settings.strava_api_url or settings.strava_base_url.rstrip("/") + "/api/v3").rstrip("/")


class TokenOutsideHeader(ValueError):
    """A request would carry an access token outside the ``Authorization`` header."""


def _carries_access_token(url: str, params: Any, data: Any) -> bool:
    if "access_token=" in url:
        return True
    for values in (params, data):
        if isinstance(values, dict) and "access_token" in values:
            return True
        if isinstance(values, list | tuple) and any(
            isinstance(p, tuple) and p[:1] == ("access_token",) for p in values
        ):
            return True
        if isinstance(values, str | bytes) and b"access_token=" in (
            values.encode() if isinstance(values, str) else values
        ):
            return True
    return False


class BaseUrlSession(requests.Session):
    """A requests session that sends stravalib's ``https://www.strava.com`` URLs to the configured hosts."""

    def __init__(self, base_url: str, timeout_s: float = DEFAULT_TIMEOUT_S, api_base: str | None = None) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.api_base = (api_base or self.base_url + "/api/v3").rstrip("/")
        self.timeout_s = timeout_s

    def rebase(self, url: str) -> str:
        """``url`` with the Strava API prefix or origin replaced by the configured API or base URL."""
        return rebase_url(self.base_url, url, self.api_base)

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        """Send the request to the rebased URL, with a default timeout (stravalib sets none); refuse to send an
        access token anywhere but in the ``Authorization`` header."""
        if isinstance(url, bytes):
            url = url.decode()
        if _carries_access_token(str(url), kwargs.get("params"), kwargs.get("data")):
            raise TokenOutsideHeader("an access token may only be sent in the Authorization header")
        kwargs.setdefault("timeout", self.timeout_s)
        target = self.rebase(str(url))
        # The address the request really goes to (stravalib's own line names www.strava.com whatever the settings).
        log.info("Strava %s %s", method, target.split("?", 1)[0])
        return super().request(method, target, *args, **kwargs)


def _under(url: str, prefix: str) -> bool:
    return url == prefix or url.startswith((prefix + "/", prefix + "?"))


def rebase_url(base_url: str, url: str, api_base: str | None = None) -> str:
    """Replace the ``https://www.strava.com/api/v3`` prefix of ``url`` with ``api_base`` (default: the base URL's
    ``/api/v3``) and any other ``https://www.strava.com`` origin with ``base_url``; other URLs stay."""
    base = base_url.rstrip("/")
    if api_base is not None and _under(url, STRAVA_API_PREFIX):
        return api_base.rstrip("/") + url[len(STRAVA_API_PREFIX) :]
    if _under(url, STRAVA_ORIGIN):
        return base + url[len(STRAVA_ORIGIN) :]
    return url


class _ApiV3(ApiV3):
    """stravalib's protocol without its environment-driven token refresh."""

    # stravalib logs every request under the class's own name, with the URL before it is rebased: the session
    # above logs the real one instead.
    logging.getLogger(f"{__module__}._ApiV3").setLevel(logging.WARNING)

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
    session = BaseUrlSession(settings.strava_base_url, api_base=api_url(settings))
    if on_response is not None:

        def hook(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
            on_response(response)

        session.hooks["response"].append(hook)
    return StravaClient(access_token, session)


def app_client(settings: Settings, on_response: ResponseHook | None = None) -> StravaClient:
    """An unauthenticated client for the OAuth endpoints and push subscriptions."""
    return _client(settings, None, on_response)
