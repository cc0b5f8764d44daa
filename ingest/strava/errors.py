"""Every error the Strava integration raises, in one place.

Messages never carry tokens, the client secret, the authorization code or response bodies.

The tree::

    StravaError                     anything Strava-related went wrong
    ├── StravaConfigError           the client id or secret is not configured
    ├── StravaStateError            the OAuth ``state`` or a connect link is missing, forged, expired or spent
    ├── StravaScopeError            the athlete did not grant access to their activities
    ├── StravaConnectError          the code exchange failed, or the account belongs to another athlete
    ├── StravaAuthError             Strava refused the stored refresh token: the athlete must reconnect
    ├── StravaAccountMissing        no Strava account with this id (disconnected or forgotten)
    ├── StravaDeferred              not now: the budget is spent, Strava answered 429, or a step's cap is
    │                               reached; ``resume_at`` says when to try again
    └── InvalidEvent                a push-event body is not a Strava event (also a ``ValueError``)

Errors of the HTTP layer (``stravalib.exc.Fault`` and its ``AccessUnauthorized``/``ObjectNotFound``,
``requests.RequestException``) pass through unchanged: callers tell "gone" (404) from "try later" by them.
"""

from __future__ import annotations

from datetime import datetime


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
