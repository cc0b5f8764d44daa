"""The one way the integration reads Strava's API for an athlete: budgeted, lazily connected, refreshed once.

Both push-event processing and the history backfill read through :class:`ApiReader`:

* before every request the shared rate-limit budget is checked (keeping ``reserve`` requests of each window
  for other work) and an optional per-step request cap; either raises :class:`StravaDeferred`;
* the stravalib client (and with it the token, refreshed under the account's row lock when close to expiry)
  is made on the first request only, so a read the budget refuses costs no token call;
* a 401 is retried once with a forced refresh (the stored token may have been revoked or rotated by another
  worker); a second 401 propagates as ``stravalib.exc.AccessUnauthorized``;
* every ``/api/v3`` response updates the budget from its headers, and a 429 is recorded in SQL so that every
  process stops asking until the window resets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import requests
from stravalib import exc as strava_exc

from ingest.strava import ratelimit
from ingest.strava.client import StravaClient, athlete_client
from ingest.strava.errors import StravaDeferred
from ingest.strava.oauth import fresh_access_token
from stridecare.db.engine import Database
from stridecare.settings import Settings


class ApiReader:
    """Budget-checked reads for one connected account at one moment ``now``."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        account_id: int,
        now: datetime,
        *,
        reserve: int = 0,
        max_requests: int | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.account_id = account_id
        self.now = now
        self.reserve = reserve
        self.max_requests = max_requests
        self.requests = 0
        self.client: StravaClient | None = None
        with db.sessions() as session:
            self.budget = ratelimit.load_budget(session)

    def _observe(self, response: requests.Response) -> None:
        # Sees every response of the client, errors included, so the budget stays current.
        if "/api/v3/" in response.url:
            self.requests += 1
            self.budget = self.budget.observe(response.headers, self.now)

    def _connect(self) -> StravaClient:
        if self.client is None:
            self.client = athlete_client(
                self.db, self.settings, self.account_id, now=self.now, on_response=self._observe
            )
        return self.client

    def get(self, url: str, count: int = 1, **params: Any) -> Any:
        """One API read (``count`` = requests it stands for in the budget check); raises
        :class:`StravaDeferred` when it may not be sent now, and stravalib's faults otherwise."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            raise StravaDeferred(self.now, "request cap of this step reached")
        decision = ratelimit.decide(self.budget, self.now, "read", count=count, reserve=self.reserve)
        if not decision.allowed:
            assert decision.resume_at is not None
            raise StravaDeferred(decision.resume_at, decision.reason)
        client = self._connect()
        try:
            try:
                return client.protocol.get(url, **params)
            except strava_exc.AccessUnauthorized:
                rejected = client.access_token
                client.access_token = fresh_access_token(
                    self.db, self.settings, self.account_id, now=self.now, rejected_token=rejected
                )
                return client.protocol.get(url, **params)
        except strava_exc.Fault as err:
            if err.response is not None and err.response.status_code == 429:
                with self.db.transaction() as session:
                    self.budget = ratelimit.record_429(session, self.budget, self.now)
                assert self.budget.blocked_until is not None
                raise StravaDeferred(self.budget.blocked_until, "Strava answered 429") from None
            raise

    def save(self) -> None:
        """Store the budget as the responses left it."""
        with self.db.transaction() as session:
            ratelimit.save_budget(session, self.budget)
