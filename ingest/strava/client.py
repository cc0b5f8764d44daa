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

import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

from stridecare.settings import Settings

if TYPE_CHECKING:
    from stravalib import exc as _stravalib_exc

    from ingest.strava.api import StravaClient

    strava_exc = _stravalib_exc

log = logging.getLogger(__name__)

STRAVA_ORIGIN = "https://www.strava.com"
STRAVA_API_PREFIX = STRAVA_ORIGIN + "/api/v3"
# Strava answers within seconds; a hung connection must not hold a worker (or a token row lock) for long.
DEFAULT_TIMEOUT_S = 30.0

ResponseHook = Callable[[requests.Response], None]


class _Deferred:
    """A module imported on its first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


if not TYPE_CHECKING:
    # stravalib is imported by the first process that talks to Strava, not by every worker, web app and command
    # at start: importing it builds pint's unit registry (about 0.7 s of CPU). ``strava_exc.Fault`` in an
    # ``except`` clause is looked up only when an exception reaches it.
    strava_exc = _Deferred("stravalib.exc")


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


def _client(settings: Settings, access_token: str | None, on_response: ResponseHook | None) -> StravaClient:
    from ingest.strava.api import StravaClient  # deferred: start-up time (stravalib, see strava_exc above)

    session = BaseUrlSession(settings.strava_base_url, api_base=api_url(settings))
    if on_response is not None:

        def hook(response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
            on_response(response)

        session.hooks["response"].append(hook)
    return StravaClient(access_token, session)


def app_client(settings: Settings, on_response: ResponseHook | None = None) -> StravaClient:
    """An unauthenticated client for the OAuth endpoints and push subscriptions."""
    return _client(settings, None, on_response)
