"""The one way the integration reads Strava's API for an athlete: budgeted, lazily connected, refreshed once.

Push-event processing, the activity list and the history backfill all read through :class:`ApiReader`:

* before every request the shared rate-limit budget is checked (keeping ``reserve`` requests of each window
  for other work) and an optional per-step request cap; either raises :class:`StravaDeferred`;
* while Strava refuses the application itself (403 ``Application``/``Status``/``Inactive``: its owner has no
  subscription) nothing is sent but one probe an hour, claimed atomically across workers; every other read
  raises :class:`StravaAppInactive` (a deferral until the next probe). Nothing is deleted and no athlete is told
  to reconnect; the first such answer writes one console line, and the first normal answer after it another;
* the stravalib client (and with it the token, refreshed under the account's row lock when close to expiry)
  is made on the first request only, so a read the budget refuses costs no token call;
* a 401 is retried once with a forced refresh (the stored token may have been revoked or rotated by another
  worker); a second 401 propagates as ``stravalib.exc.AccessUnauthorized``;
* every API response updates the budget from its headers, and a 429 is recorded in SQL so that every
  process stops asking until the window resets.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import requests

from ingest.strava import ratelimit
from ingest.strava.client import api_url, strava_exc
from ingest.strava.errors import StravaAppInactive, StravaDeferred, names_inactive_app
from ingest.strava.oauth import athlete_client, fresh_access_token
from ingest.strava.ratelimit import record_active, record_inactive
from stridecare.db.engine import Database
from stridecare.settings import Settings

if TYPE_CHECKING:
    from ingest.strava.api import StravaClient


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
        self._api = api_url(settings) + "/"
        with db.read() as session:
            self.budget = ratelimit.load_budget(session)
            self.app = ratelimit.load_app_state(session)

    def _observe(self, response: requests.Response) -> None:
        # Sees every response of the client, errors included, so the budget stays current.
        if response.url.startswith(self._api):
            self.requests += 1
            self.budget = self.budget.observe(response.headers, self.now)

    def _connect(self) -> StravaClient:
        if self.client is None:
            self.client = athlete_client(
                self.db, self.settings, self.account_id, now=self.now, on_response=self._observe
            )
        return self.client

    def _check_app(self, claim: bool) -> None:
        """Raise :class:`StravaAppInactive` unless the app is active or this read is the hour's one probe
        (claimed for this reader with ``claim``)."""
        if not self.app.inactive:
            return
        if self.app.probe_at is not None and self.now < self.app.probe_at:
            raise StravaAppInactive(self.app.probe_at)
        if not claim:
            return
        with self.db.transaction() as session:
            later = ratelimit.claim_probe(session, self.now)
        if later is not None:
            self.app = ratelimit.AppState(self.app.inactive_since, later)
            raise StravaAppInactive(later)

    def get(self, url: str, count: int = 1, **params: Any) -> Any:
        """One API read (``count`` = requests it stands for in the budget check); raises
        :class:`StravaDeferred` (or its :class:`StravaAppInactive`) when it may not be sent now, and stravalib's
        faults otherwise."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            raise StravaDeferred(self.now, "request cap of this step reached")
        self._check_app(claim=False)
        decision = ratelimit.decide(self.budget, self.now, "read", count=count, reserve=self.reserve)
        if not decision.allowed:
            assert decision.resume_at is not None
            raise StravaDeferred(decision.resume_at, decision.reason)
        self._check_app(claim=True)
        try:
            client = self._connect()
        except StravaAppInactive:
            # The token endpoint said so (Strava has been seen to refuse only the API): same handling.
            probe_at = record_inactive(self.db, self.now)
            self.app = ratelimit.AppState(self.app.inactive_since or self.now, probe_at)
            raise StravaAppInactive(probe_at) from None
        try:
            try:
                result = client.protocol.get(url, **params)
            except strava_exc.AccessUnauthorized:
                rejected = client.access_token
                client.access_token = fresh_access_token(
                    self.db, self.settings, self.account_id, now=self.now, rejected_token=rejected
                )
                result = client.protocol.get(url, **params)
        except strava_exc.Fault as err:
            if err.response is not None and err.response.status_code == 429:
                with self.db.transaction() as session:
                    self.budget = ratelimit.record_429(session, self.budget, self.now)
                assert self.budget.blocked_until is not None
                raise StravaDeferred(self.budget.blocked_until, "Strava answered 429") from None
            if isinstance(err, strava_exc.ApplicationInactive) or names_inactive_app(err.response):
                probe_at = record_inactive(self.db, self.now)
                self.app = ratelimit.AppState(self.app.inactive_since or self.now, probe_at)
                raise StravaAppInactive(probe_at) from None
            raise
        if self.app.inactive:
            record_active(self.db)
            self.app = ratelimit.AppState()
        return result

    def save(self) -> None:
        """Store the budget as the responses left it."""
        with self.db.transaction() as session:
            ratelimit.save_budget(session, self.budget)
