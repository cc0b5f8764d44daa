"""The stravalib client itself: its protocol without stravalib's own token refresh, on our requests session.

Imported only when a client is built (``ingest.strava.client``), so that processes which never talk to Strava
never load stravalib.
"""

from __future__ import annotations

import logging

import requests
from stravalib import Client
from stravalib.protocol import ApiV3


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
