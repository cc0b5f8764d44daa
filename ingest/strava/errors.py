"""Every error the Strava integration raises, in one place.

Messages never carry tokens, the client secret, the authorization code or response bodies.

The tree::

    StravaError                     anything Strava-related went wrong
    ├── StravaConfigError           the client id or secret is not configured
    ├── StravaStateError            the OAuth ``state`` or a connect link is missing, forged, expired or spent
    ├── StravaScopeError            the athlete did not grant access to their activities
    ├── StravaConnectError          the code exchange failed, or the account belongs to another athlete
    │   └── StravaAthleteLimit      the app already serves as many athletes as Strava allows it
    ├── StravaAuthError             Strava refused the stored refresh token: the athlete must reconnect
    ├── StravaAccountMissing        no Strava account with this id (disconnected or forgotten)
    ├── StravaDeferred              not now: the budget is spent, Strava answered 429, or a step's cap is
    │   │                           reached; ``resume_at`` says when to try again
    │   └── StravaAppInactive       Strava refuses the application itself (its owner has no subscription):
    │                               nothing is deleted, nobody must reconnect; asked again at most hourly
    └── InvalidEvent                a push-event body is not a Strava event (also a ``ValueError``)

Errors of the HTTP layer (``stravalib.exc.Fault`` and its ``AccessUnauthorized``/``ObjectNotFound``,
``requests.RequestException``) pass through unchanged: callers tell "gone" (404) from "try later" by them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

# What the console, ``strava status``, ``health``, /healthz/detail and the home page say while Strava refuses
# the app (one sentence, the same everywhere).
APP_INACTIVE_MESSAGE = (
    "this Strava app is inactive: its owner needs a Strava subscription; runs already stored are kept"
)
ATHLETE_LIMIT_MESSAGE = (
    'this Strava app already serves as many athletes as Strava allows it (Strava: "Limit of connected athletes '
    'exceeded"; a Standard Tier app serves at most 10): disconnect an athlete, or ask Strava for Extended Access'
)


class StravaError(Exception):
    """Base class of every Strava error; messages never contain tokens or secrets."""


class StravaConfigError(StravaError):
    """The Strava client id or secret is not configured."""


class StravaStateError(StravaError):
    """The OAuth ``state`` (or a connect link) is missing, forged, expired or already used."""


class StravaScopeError(StravaError):
    """The athlete did not grant access to their activities."""


class StravaConnectError(StravaError):
    """The code exchange failed, or the Strava account is linked to another stridecare athlete."""


class StravaAuthError(StravaError):
    """Strava rejected the stored refresh token: access was revoked, the athlete must reconnect."""


class StravaAccountMissing(StravaError):
    """No Strava account with this id."""


class StravaDeferred(StravaError):
    """The request may not be sent now; try again at ``resume_at`` (budget spent, 429, step cap)."""

    def __init__(self, resume_at: datetime, reason: str) -> None:
        super().__init__(reason)
        self.resume_at = resume_at
        self.reason = reason


class InvalidEvent(StravaError, ValueError):
    """The request body is not a Strava push event."""


class StravaAthleteLimit(StravaConnectError):
    """Strava refused a new athlete: the app has reached its athlete limit."""

    def __init__(self) -> None:
        super().__init__(ATHLETE_LIMIT_MESSAGE)


class StravaAppInactive(StravaDeferred):
    """Strava answered 403 Application/Status/Inactive: the app's owner needs a subscription. Work pauses until
    ``resume_at`` (the next hourly probe); stored runs and tokens are kept, no athlete must reconnect."""

    def __init__(self, resume_at: datetime) -> None:
        super().__init__(resume_at, APP_INACTIVE_MESSAGE)


def _error_body(response: Any) -> Any:
    try:
        return response.json()
    except (ValueError, AttributeError):
        try:
            return json.loads(getattr(response, "text", "") or "null")
        except ValueError:
            return None


def names_inactive_app(response: Any) -> bool:
    """True for a 403 whose body names ``Application``/``Status``/``Inactive`` (stravalib issue 730)."""
    if response is None or getattr(response, "status_code", None) != 403:
        return False
    body = _error_body(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, dict):
        errors = [errors]
    if not isinstance(errors, list):
        return False
    return any(
        isinstance(e, dict)
        and str(e.get("resource", "")).lower() == "application"
        and str(e.get("field", "")).lower() == "status"
        and str(e.get("code", "")).lower() == "inactive"
        for e in errors
    )


def names_athlete_limit(response: Any) -> bool:
    """True for a 403 saying "Limit of connected athletes exceeded" (the app's athlete cap)."""
    if response is None or getattr(response, "status_code", None) != 403:
        return False
    body = _error_body(response)
    text = json.dumps(body).lower() if body is not None else str(getattr(response, "text", "")).lower()
    return "limit of connected athletes" in text
