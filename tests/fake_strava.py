"""A fake Strava API server for tests: loopback, background thread, random port, controllable clock.

It behaves as Strava documents (shapes taken from Strava's swagger examples, stravalib's test resources and
recorded exchanges in ``shared/corpus/strava``):

* ``GET /oauth/authorize`` redirects to ``redirect_uri`` with ``code``, ``state`` and the scope the
  (simulated) athlete accepted; ``POST /oauth/token`` with ``authorization_code`` and ``refresh_token``
  grants (access tokens expire after 6 h of the fake clock; a refresh issues a new refresh token and the old
  one is invalid at once; past ``athlete_limit`` distinct athletes a new one gets Strava's 403 "Limit of
  connected athletes exceeded"); ``POST /oauth/deauthorize`` (the access token in the Authorization header)
  and ``POST /oauth/revoke`` (client credentials in HTTP Basic, ``token`` = access or refresh token, which
  revokes both).
* ``/api/v3/athlete``, ``/athlete/activities`` (``before``/``after`` epochs, ``page``, ``per_page`` ≤ 200,
  default 30; newest first, oldest first with ``after`` alone), ``/activities/{id}``,
  ``/activities/{id}/streams`` (``key_by_type``), ``/push_subscriptions`` (creation validates the callback
  with ``hub.mode``/``hub.challenge``/``hub.verify_token``).
* Strava's 2027 rules: an access token in a query or form parameter is refused (401; headers only), and
  :func:`api_host` serves the API at a second address without the ``/api/v3`` prefix, as
  ``https://api-v3.strava.com`` does.
* ``app_inactive = True``: every ``/api/v3`` request answers 403 ``Application``/``Status``/``Inactive`` (the
  owner's subscription lapsed, stravalib issue 730); the token endpoint keeps working, as reported.
* Rate limits per fixed 15-minute window (:00/:15/:30/:45) and UTC day of the fake clock, overall and read,
  reported on every ``/api/v3`` response in ``X-RateLimit-*``/``X-ReadRateLimit-*``; a 429 with Strava's error
  body when exceeded (the rejected request still counts, as Strava's own 429 example shows usage above the
  limit).

Every request is recorded (method, normalised path, status, user agent) so tests can count them.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx
from conftest import make_settings

from ingest.strava.oauth import ConnectedAccount, authorization_url, exchange_code, make_state
from stridecare.clock import write_clock_file
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, Base
from stridecare.runtime import Runtime
from stridecare.settings import Settings

TOKEN_LIFETIME_S = 6 * 3600
ALL_STREAM_KEYS = (
    "time",
    "distance",
    "velocity_smooth",
    "cadence",
    "altitude",
    "moving",
    "heartrate",
    "latlng",
)


class FakeClock:
    """A settable UTC clock shared by the fake server and the test."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The fake current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (timezone-aware)."""
        with self._lock:
            self._now = when.astimezone(UTC)


@dataclass
class Limits:
    """Application rate limits: (15-minute, daily), overall and read. Strava's current defaults."""

    overall: tuple[int, int] = (200, 2000)
    read: tuple[int, int] = (100, 1000)


@dataclass
class FakeAthlete:
    id: int
    firstname: str = "Fake"
    lastname: str = "Runner"
    activities: dict[int, dict[str, Any]] = field(default_factory=dict)
    streams: dict[int, dict[str, list[Any]] | None] = field(default_factory=dict)


@dataclass
class Grant:
    athlete_id: int
    scope: str
    access_token: str
    access_expires: datetime
    refresh_token: str


@dataclass
class Recorded:
    method: str
    path: str
    endpoint: str
    status: int
    user_agent: str
    at: datetime


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(message: str, resource: str, field_: str, code: str) -> dict[str, Any]:
    return {"message": message, "errors": [{"resource": resource, "field": field_, "code": code}]}


def make_activity(
    activity_id: int,
    start: datetime,
    *,
    athlete_id: int = 1,
    sport_type: str = "Run",
    moving_time: int = 3000,
    elapsed_time: int | None = None,
    distance: float = 10000.0,
    average_cadence: float | None = 85.0,
    utc_offset_s: int = 3600,
    gear_id: str | None = "g123",
    manual: bool = False,
    private: bool = False,
    trainer: bool = False,
) -> dict[str, Any]:
    """A SummaryActivity shaped like Strava's (resource_state 2)."""
    local = start + timedelta(seconds=utc_offset_s)
    hours = utc_offset_s // 3600
    summary: dict[str, Any] = {
        "resource_state": 2,
        "athlete": {"id": athlete_id, "resource_state": 1},
        "id": activity_id,
        "name": f"{sport_type} {activity_id}",
        "distance": distance,
        "moving_time": moving_time,
        "elapsed_time": elapsed_time if elapsed_time is not None else moving_time + 60,
        "total_elevation_gain": 42.0,
        "type": "Run" if sport_type in ("Run", "TrailRun", "VirtualRun") else sport_type,
        "sport_type": sport_type,
        "workout_type": None,
        "start_date": _iso(start),
        # Strava writes local wall time with a misleading "Z".
        "start_date_local": _iso(local.replace(tzinfo=UTC)),
        "timezone": f"(GMT{hours:+03d}:00) Europe/Berlin",
        "utc_offset": float(utc_offset_s),
        "achievement_count": 0,
        "kudos_count": 0,
        "comment_count": 0,
        "athlete_count": 1,
        "photo_count": 0,
        "map": {"id": f"a{activity_id}", "summary_polyline": None, "resource_state": 2},
        "trainer": trainer,
        "commute": False,
        "manual": manual,
        "private": private,
        "visibility": "only_me" if private else "everyone",
        "flagged": False,
        "gear_id": gear_id,
        "average_speed": distance / moving_time if moving_time else 0.0,
        "max_speed": 5.1,
        "has_heartrate": False,
        "elev_high": 80.0,
        "elev_low": 40.0,
        "pr_count": 0,
        "total_photo_count": 0,
        "has_kudoed": False,
    }
    if average_cadence is not None:
        summary["average_cadence"] = average_cadence
    return summary


def synth_streams(activity: dict[str, Any], *, pause_every_s: int = 600, pause_len_s: int = 30) -> dict[str, list[Any]]:
    """1 Hz streams for an activity: per-foot cadence at its ``average_cadence``, with auto-pauses
    (``moving`` false) that are not part of ``moving_time``."""
    moving_time = int(activity["moving_time"])
    cadence = activity.get("average_cadence")
    speed = activity["distance"] / moving_time if moving_time else 0.0
    t: list[int] = []
    moving: list[bool] = []
    clock = 0
    moved = 0
    while moved < moving_time:
        t.append(clock)
        # The first sample is the start; every later moving sample covers one second of moving time.
        is_moving = not (pause_every_s and clock and clock % (pause_every_s + pause_len_s) >= pause_every_s)
        moving.append(is_moving)
        if clock and is_moving:
            moved += 1
        clock += 1
    dist: list[float] = []
    d = 0.0
    for m in moving:
        if m and dist:
            d += speed
        dist.append(round(d, 1))
    streams: dict[str, list[Any]] = {
        "time": t,
        "distance": dist,
        "velocity_smooth": [round(speed if m else 0.0, 3) for m in moving],
        "altitude": [round(50 + 10 * math.sin(i / 300), 1) for i in range(len(t))],
        "moving": moving,
    }
    if cadence is not None:
        streams["cadence"] = [int(cadence) if m else 0 for m in moving]
    return streams


class FakeStrava:
    """The fake's state and behaviour; use :func:`running` to serve it."""

    def __init__(
        self,
        *,
        client_id: int = 12345,
        client_secret: str = "fake-client-secret",
        clock: FakeClock | None = None,
        limits: Limits | None = None,
        token_delay_s: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.clock = clock or FakeClock()
        self.limits = limits or Limits()
        self.token_delay_s = token_delay_s
        self.lock = threading.RLock()
        self.athletes: dict[int, FakeAthlete] = {}
        self.codes: dict[str, tuple[int, str]] = {}
        self.grants: list[Grant] = []
        self.issued_refresh_tokens: list[str] = []
        self.refresh_count = 0
        self.deauthorized: set[int] = set()
        self.usage: Counter[tuple[str, datetime]] = Counter()
        self.requests: list[Recorded] = []
        self.forced: list[tuple[str, int]] = []
        self.subscriptions: dict[int, dict[str, Any]] = {}
        self.next_subscription_id = 1001
        # Who "logs in" at /oauth/authorize, and which scope they tick (None: all requested).
        self.authorize_athlete_id: int | None = None
        self.accepted_scope: str | None = None
        self.deny = False
        self.base_url = ""
        # Strava's paywall: the whole API answers 403 Application/Status/Inactive while this is set.
        self.app_inactive = False
        # ... and the token endpoint too (reports differ on whether Strava refuses it).
        self.app_inactive_tokens = False
        # Distinct athletes the app may serve (Standard Tier: 10); None: no limit.
        self.athlete_limit: int | None = None
        self.revoked: list[str] = []

    # -- test controls ---------------------------------------------------------------------------------------

    def add_athlete(self, athlete_id: int, **kwargs: Any) -> FakeAthlete:
        """Register an athlete that can log in."""
        with self.lock:
            athlete = FakeAthlete(athlete_id, **kwargs)
            self.athletes[athlete_id] = athlete
            if self.authorize_athlete_id is None:
                self.authorize_athlete_id = athlete_id
            return athlete

    def add_activity(
        self, athlete_id: int, activity: dict[str, Any], streams: dict[str, list[Any]] | bool | None = True
    ) -> None:
        """Add an activity; ``streams=True`` synthesises 1 Hz streams on demand, ``None``/False means none."""
        with self.lock:
            athlete = self.athletes[athlete_id]
            athlete.activities[int(activity["id"])] = activity
            if streams is True:
                athlete.streams.pop(int(activity["id"]), None)
            else:
                athlete.streams[int(activity["id"])] = streams or None

    def delete_activity(self, athlete_id: int, activity_id: int) -> None:
        """Remove an activity (as if the athlete deleted it)."""
        with self.lock:
            self.athletes[athlete_id].activities.pop(activity_id, None)

    def fail_next(self, endpoint_prefix: str, status: int = 429, count: int = 1) -> None:
        """Make the next ``count`` requests whose path starts with ``endpoint_prefix`` fail (``status``)."""
        with self.lock:
            self.forced.extend([(endpoint_prefix, status)] * count)

    def expire_tokens(self) -> None:
        """Expire every access token now (as if 6 hours had passed for them only)."""
        with self.lock:
            for g in self.grants:
                g.access_expires = self.clock.now() - timedelta(seconds=1)

    def counts(self) -> Counter[str]:
        """Requests per endpoint, e.g. ``"GET /api/v3/athlete/activities"``."""
        with self.lock:
            return Counter(r.endpoint for r in self.requests)

    def count(self, endpoint: str | None = None, status: int | None = None) -> int:
        """Number of requests (to ``endpoint`` and/or with ``status``)."""
        with self.lock:
            return sum(
                1
                for r in self.requests
                if (endpoint is None or r.endpoint == endpoint) and (status is None or r.status == status)
            )

    def reset_counts(self) -> None:
        """Forget the request log (rate-limit usage is kept)."""
        with self.lock:
            self.requests.clear()

    @property
    def last_refresh_token(self) -> str | None:
        """The refresh token issued most recently."""
        with self.lock:
            return self.issued_refresh_tokens[-1] if self.issued_refresh_tokens else None

    def push_event(self, event: dict[str, Any], timeout_s: float = 2.0) -> int:
        """POST a webhook event to the subscription's callback as Strava does; returns the HTTP status."""
        with self.lock:
            if not self.subscriptions:
                raise RuntimeError("no push subscription")
            sub_id, sub = next(iter(self.subscriptions.items()))
        body = {
            "subscription_id": sub_id,
            "event_time": int(self.clock.now().timestamp()),
            "updates": {},
            **event,
        }
        return httpx.post(sub["callback_url"], json=body, timeout=timeout_s).status_code

    # -- request handling ------------------------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        """Process one request; returns status, extra headers, JSON body (or None)."""
        parts = urlsplit(raw_path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        form: dict[str, str] = {}
        ctype = headers.get("content-type", "")
        if body and "json" in ctype:
            form = {k: str(v) for k, v in json.loads(body).items()}
        elif body:
            form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        endpoint = f"{method} {self._normalise(path)}"
        status, extra, payload = self._dispatch(method, path, query, form, headers, endpoint)
        with self.lock:
            self.requests.append(
                Recorded(method, path, endpoint, status, headers.get("user-agent", ""), self.clock.now())
            )
        return status, extra, payload

    @staticmethod
    def _normalise(path: str) -> str:
        parts = path.rstrip("/").split("/")
        return "/".join("{id}" if p.isdigit() else p for p in parts)

    def _dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        form: dict[str, str],
        headers: dict[str, str],
        endpoint: str,
    ) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            for i, (prefix, forced_status) in enumerate(self.forced):
                if path.startswith(prefix):
                    del self.forced[i]
                    extra = self._count_usage(method) if path.startswith("/api/v3") else {}
                    if forced_status == 429:
                        return (
                            429,
                            extra,
                            _error("Rate Limit Exceeded", "Application", "rate limit", "exceeded"),
                        )
                    return forced_status, extra, _error("Server Error", "Application", "fake", "forced")
        if path == "/oauth/authorize" and method == "GET":
            return self._authorize(query)
        if path == "/oauth/token" and method == "POST":
            if self.app_inactive and self.app_inactive_tokens:
                return 403, {}, _error("Forbidden", "Application", "Status", "Inactive")
            return self._token({**query, **form})
        if "access_token" in query or "access_token" in form:
            # From 2027 Strava takes access tokens in the Authorization header only.
            return 401, {}, _error("Authorization Error", "AccessToken", "access_token", "header required")
        if path == "/oauth/deauthorize" and method == "POST":
            return self._deauthorize(headers)
        if path == "/oauth/revoke" and method == "POST":
            return self._revoke(form, headers)
        if not path.startswith("/api/v3/"):
            return 404, {}, _error("Record Not Found", "Path", "path", "invalid")

        with self.lock:
            rl_headers = self._count_usage(method)
            if self.app_inactive:
                return 403, rl_headers, _error("Forbidden", "Application", "Status", "Inactive")
            if self._over_limit(method):
                return 429, rl_headers, _error("Rate Limit Exceeded", "Application", "rate limit", "exceeded")
        sub = path[len("/api/v3") :]
        if sub.startswith("/push_subscriptions"):
            status, payload = self._subscriptions(method, sub, {**query, **form})
            return status, rl_headers, payload
        grant = self._bearer(headers)
        if grant is None:
            return 401, rl_headers, _error("Authorization Error", "Athlete", "access_token", "invalid")
        status, payload = self._api(method, sub, query, grant)
        return status, rl_headers, payload

    # -- rate limits -----------------------------------------------------------------------------------------

    def _windows(self) -> tuple[datetime, datetime]:
        now = self.clock.now()
        quarter = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return quarter, day

    def _count_usage(self, method: str) -> dict[str, str]:
        quarter, day = self._windows()
        self.usage[("overall15", quarter)] += 1
        self.usage[("overallday", day)] += 1
        if method == "GET":
            self.usage[("read15", quarter)] += 1
            self.usage[("readday", day)] += 1
        return self.rate_headers()

    def rate_headers(self) -> dict[str, str]:
        """The four rate-limit headers as of now."""
        with self.lock:
            quarter, day = self._windows()
            u = self.usage
            return {
                "X-RateLimit-Limit": f"{self.limits.overall[0]},{self.limits.overall[1]}",
                "X-RateLimit-Usage": f"{u['overall15', quarter]},{u['overallday', day]}",
                "X-ReadRateLimit-Limit": f"{self.limits.read[0]},{self.limits.read[1]}",
                "X-ReadRateLimit-Usage": f"{u['read15', quarter]},{u['readday', day]}",
            }

    def _over_limit(self, method: str) -> bool:
        quarter, day = self._windows()
        if self.usage[("overall15", quarter)] > self.limits.overall[0]:
            return True
        if self.usage[("overallday", day)] > self.limits.overall[1]:
            return True
        return method == "GET" and (
            self.usage[("read15", quarter)] > self.limits.read[0] or self.usage[("readday", day)] > self.limits.read[1]
        )

    # -- OAuth -----------------------------------------------------------------------------------------------

    def _authorize(self, q: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if q.get("client_id") != str(self.client_id):
            return 400, {}, _error("Bad Request", "Application", "client_id", "invalid")
        redirect = q.get("redirect_uri")
        if not redirect or q.get("response_type") != "code":
            return 400, {}, _error("Bad Request", "Application", "redirect_uri", "invalid")
        params: dict[str, str] = {"state": q.get("state", "")}
        with self.lock:
            if self.deny or self.authorize_athlete_id is None:
                params["error"] = "access_denied"
            else:
                requested = q.get("scope", "read")
                accepted = self.accepted_scope if self.accepted_scope is not None else requested
                code = secrets.token_hex(20)
                self.codes[code] = (self.authorize_athlete_id, accepted)
                params |= {"code": code, "scope": accepted}
        sep = "&" if "?" in redirect else "?"
        return 302, {"Location": f"{redirect}{sep}{urlencode(params)}"}, None

    def _issue(self, athlete_id: int, scope: str) -> Grant:
        grant = Grant(
            athlete_id=athlete_id,
            scope=scope,
            access_token=secrets.token_hex(20),
            access_expires=self.clock.now() + timedelta(seconds=TOKEN_LIFETIME_S),
            refresh_token=secrets.token_hex(20),
        )
        self.grants.append(grant)
        self.issued_refresh_tokens.append(grant.refresh_token)
        return grant

    def _token_body(self, grant: Grant, with_athlete: bool) -> dict[str, Any]:
        expires = int(grant.access_expires.timestamp())
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_at": expires,
            "expires_in": max(0, expires - int(self.clock.now().timestamp())),
            "refresh_token": grant.refresh_token,
            "access_token": grant.access_token,
        }
        if with_athlete:
            a = self.athletes[grant.athlete_id]
            body["athlete"] = {
                "id": a.id,
                "resource_state": 2,
                "firstname": a.firstname,
                "lastname": a.lastname,
            }
        return body

    def _token(self, f: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if self.token_delay_s:
            time.sleep(self.token_delay_s)
        if f.get("client_id") != str(self.client_id) or not secrets.compare_digest(
            f.get("client_secret", ""), self.client_secret
        ):
            return 401, {}, _error("Bad Request", "Application", "client_id", "invalid")
        grant_type = f.get("grant_type")
        with self.lock:
            if grant_type == "authorization_code":
                entry = self.codes.pop(f.get("code", ""), None)
                if entry is None:
                    return 400, {}, _error("Bad Request", "AuthorizationCode", "code", "invalid")
                athlete_id, scope = entry
                served = {g.athlete_id for g in self.grants if g.athlete_id not in self.deauthorized}
                if self.athlete_limit is not None and athlete_id not in served and len(served) >= self.athlete_limit:
                    return 403, {}, {"message": "Limit of connected athletes exceeded", "errors": []}
                self.deauthorized.discard(athlete_id)
                return 200, {}, self._token_body(self._issue(athlete_id, scope), with_athlete=True)
            if grant_type == "refresh_token":
                token = f.get("refresh_token", "")
                for old in self.grants:
                    if old.refresh_token and secrets.compare_digest(old.refresh_token, token):
                        break
                else:
                    return 400, {}, _error("Bad Request", "RefreshToken", "refresh_token", "invalid")
                if old.athlete_id in self.deauthorized:
                    return 400, {}, _error("Bad Request", "RefreshToken", "refresh_token", "invalid")
                # The old refresh token stops working at once; the old access token lives until it expires.
                old.refresh_token = ""
                self.refresh_count += 1
                return 200, {}, self._token_body(self._issue(old.athlete_id, old.scope), with_athlete=False)
        return 400, {}, _error("Bad Request", "Application", "grant_type", "invalid")

    def _deauthorize(self, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        grant = self._bearer(headers)
        if grant is None:
            return 401, {}, _error("Authorization Error", "Athlete", "access_token", "invalid")
        self._cut_off(grant.athlete_id)
        return 200, {}, {"access_token": grant.access_token}

    def _cut_off(self, athlete_id: int) -> None:
        with self.lock:
            self.deauthorized.add(athlete_id)
            for g in self.grants:
                if g.athlete_id == athlete_id:
                    g.refresh_token = ""
                    g.access_expires = self.clock.now() - timedelta(seconds=1)

    def _revoke(self, f: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        # RFC 7009 as Strava took it up: the client authenticates with HTTP Basic; ``token`` is an access or a
        # refresh token, and revoking either revokes the other.
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            client_id, secret = "", ""
        if (
            scheme.lower() != "basic"
            or client_id != str(self.client_id)
            or not secrets.compare_digest(secret, self.client_secret)
        ):
            return 401, {}, _error("Authorization Error", "Application", "client_id", "invalid")
        token = f.get("token", "")
        with self.lock:
            self.revoked.append(f.get("token_type_hint", ""))
            for g in self.grants:
                if token and (
                    secrets.compare_digest(g.access_token, token)
                    or (g.refresh_token and secrets.compare_digest(g.refresh_token, token))
                ):
                    self._cut_off(g.athlete_id)
                    break
        return 200, {}, {}

    def _find_access(self, token: str) -> Grant | None:
        if not token:
            return None
        with self.lock:
            for g in self.grants:
                if secrets.compare_digest(g.access_token, token):
                    if g.access_expires <= self.clock.now() or g.athlete_id in self.deauthorized:
                        return None
                    return g
        return None

    def _bearer(self, headers: dict[str, str]) -> Grant | None:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return self._find_access(auth[len("Bearer ") :])

    # -- API -------------------------------------------------------------------------------------------------

    def _visible(self, grant: Grant, activity: dict[str, Any]) -> bool:
        scopes = set(grant.scope.split(","))
        if activity.get("private") or activity.get("visibility") == "only_me":
            return "activity:read_all" in scopes
        return bool(scopes & {"activity:read", "activity:read_all"})

    def _api(self, method: str, sub: str, q: dict[str, str], grant: Grant) -> tuple[int, Any]:
        with self.lock:
            athlete = self.athletes[grant.athlete_id]
            scopes = set(grant.scope.split(","))
            parts = sub.strip("/").split("/")
            if method == "GET" and parts == ["athlete"]:
                return 200, {
                    "id": athlete.id,
                    "resource_state": 3,
                    "firstname": athlete.firstname,
                    "lastname": athlete.lastname,
                    "sex": "F",
                    "premium": False,
                    "measurement_preference": "meters",
                }
            if method == "GET" and parts == ["athlete", "activities"]:
                if not scopes & {"activity:read", "activity:read_all"}:
                    return 401, _error("Authorization Error", "AccessToken", "activity:read_permission", "missing")
                return 200, self._list(athlete, grant, q)
            if method == "GET" and len(parts) >= 2 and parts[0] == "activities" and parts[1].isdigit():
                activity = athlete.activities.get(int(parts[1]))
                if activity is None or not self._visible(grant, activity):
                    return 404, _error("Record Not Found", "Activity", "id", "invalid")
                if len(parts) == 2:
                    detail = dict(activity, resource_state=3, description="", calories=600.0)
                    detail["device_name"] = "Fake Watch 965"
                    return 200, detail
                if parts[2:] == ["streams"]:
                    return self._streams(athlete, activity, q)
            return 404, _error("Record Not Found", "Path", "path", "invalid")

    def _list(self, athlete: FakeAthlete, grant: Grant, q: dict[str, str]) -> list[dict[str, Any]]:
        before = int(q["before"]) if q.get("before") else None
        after = int(q["after"]) if q.get("after") else None
        page = max(1, int(q.get("page", "1")))
        per_page = min(200, max(1, int(q.get("per_page", "30"))))

        def epoch(a: dict[str, Any]) -> int:
            return int(datetime.fromisoformat(a["start_date"].replace("Z", "+00:00")).timestamp())

        items = [
            a
            for a in athlete.activities.values()
            if self._visible(grant, a) and (before is None or epoch(a) < before) and (after is None or epoch(a) > after)
        ]
        # Newest first; with only ``after`` Strava lists oldest first.
        ascending = after is not None and before is None
        items.sort(key=lambda a: (epoch(a), a["id"]), reverse=not ascending)
        return items[(page - 1) * per_page : page * per_page]

    def _streams(self, athlete: FakeAthlete, activity: dict[str, Any], q: dict[str, str]) -> tuple[int, Any]:
        aid = int(activity["id"])
        if activity.get("manual"):
            return 404, _error("Record Not Found", "Activity", "streams", "invalid")
        streams = athlete.streams[aid] if aid in athlete.streams else synth_streams(activity)
        if streams is None:
            return 404, _error("Record Not Found", "Activity", "streams", "invalid")
        keys = [k for k in q.get("keys", "").split(",") if k] or list(streams)
        # Strava always includes the series the others are indexed by.
        wanted = [k for k in dict.fromkeys([*keys, "distance"]) if k in streams]
        out = {
            k: {
                "data": streams[k],
                "series_type": "distance",
                "original_size": len(streams[k]),
                "resolution": "high",
            }
            for k in wanted
        }
        if q.get("key_by_type", "").lower() == "true":
            return 200, out
        return 200, [{"type": k, **v} for k, v in out.items()]

    def _subscriptions(self, method: str, sub: str, f: dict[str, str]) -> tuple[int, Any]:
        if f.get("client_id") != str(self.client_id) or not secrets.compare_digest(
            f.get("client_secret", ""), self.client_secret
        ):
            return 401, _error("Authorization Error", "Application", "client_id", "invalid")
        parts = sub.strip("/").split("/")
        if method == "GET" and len(parts) == 1:
            with self.lock:
                return 200, [dict(s) for s in self.subscriptions.values()]
        if method == "DELETE" and len(parts) == 2 and parts[1].isdigit():
            with self.lock:
                if self.subscriptions.pop(int(parts[1]), None) is None:
                    return 404, _error("Record Not Found", "PushSubscription", "id", "invalid")
            return 204, None
        if method == "POST" and len(parts) == 1:
            with self.lock:
                if self.subscriptions:
                    return 400, _error("Bad Request", "PushSubscription", "callback_url", "already exists")
            callback = f.get("callback_url", "")
            challenge = secrets.token_urlsafe(12)
            params = {
                "hub.mode": "subscribe",
                "hub.challenge": challenge,
                "hub.verify_token": f.get("verify_token", ""),
            }
            try:
                resp = httpx.get(callback, params=params, timeout=2.0)
                ok = resp.status_code == 200 and resp.json().get("hub.challenge") == challenge
            except (httpx.HTTPError, ValueError, AttributeError):
                ok = False
            if not ok:
                return 400, _error(
                    "Bad Request",
                    "PushSubscription",
                    "callback url",
                    "GET to callback URL does not return 200",
                )
            with self.lock:
                sub_id = self.next_subscription_id
                self.next_subscription_id += 1
                now = self.clock.now()
                self.subscriptions[sub_id] = {
                    "id": sub_id,
                    "application_id": self.client_id,
                    "callback_url": callback,
                    "created_at": _iso(now),
                    "updated_at": _iso(now),
                }
            return 201, {"id": sub_id}
        return 404, _error("Record Not Found", "Path", "path", "invalid")


def _handler_for(fake: FakeStrava, *, api_only: bool = False) -> type[BaseHTTPRequestHandler]:
    """The request handler; ``api_only`` serves the API without its ``/api/v3`` prefix and nothing else."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            if api_only:
                self.path = "/no-such-path" if self.path.startswith(("/oauth", "/api/v3")) else "/api/v3" + self.path
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, extra, payload = fake.handle(self.command, self.path, headers, body)
            except Exception as exc:  # a bug in the fake must show up as a 500, not a hung client
                status, extra, payload = 500, {}, {"message": f"fake error: {type(exc).__name__}: {exc}"}
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            if payload is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def api_host(fake: FakeStrava) -> Iterator[str]:
    """Serve ``fake``'s API at a second address without the ``/api/v3`` prefix (Strava's new API host,
    ``https://api-v3.strava.com``); OAuth stays on the first. Yields the address."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake, api_only=True))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-strava-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def running(fake: FakeStrava | None = None, **kwargs: Any) -> Iterator[FakeStrava]:
    """Serve ``fake`` (or a new one built from ``kwargs``) on 127.0.0.1 at a random port for the block."""
    fake = fake or FakeStrava(**kwargs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-strava", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- helpers for stridecare tests ---------------------------------------------------------------------------

REDIRECT_URI = "http://127.0.0.1:8080/strava/callback"
FERNET_KEY = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="


def follow_authorize(url: str) -> dict[str, str]:
    """Open the authorize URL as the athlete's browser would; returns the callback's query parameters."""
    resp = httpx.get(url, follow_redirects=False, timeout=5)
    assert resp.status_code == 302, resp.text
    return dict(parse_qsl(urlsplit(resp.headers["location"]).query))


def strava_settings(data_home: Path, fake: FakeStrava, **overrides: Any) -> Settings:
    """Settings aimed at ``fake`` with a fixed key ring, confined to ``data_home``."""
    values: dict[str, Any] = {
        "data_home": data_home,
        "encryption_keys": [FERNET_KEY],
        "secret_key": "test-signing-key",
        "strava_client_id": str(fake.client_id),
        "strava_client_secret": fake.client_secret,
        "strava_base_url": fake.base_url,
    }
    values.update(overrides)
    return Settings(**values)


def fake_strava_runtime(tmp_path: Path, fake: FakeStrava, subscription_id: int, **overrides: Any) -> Runtime:
    """A migrated runtime in ``tmp_path`` aimed at ``fake`` (its app, and the push subscription
    ``subscription_id``), with the project's clock file set to the fake's clock."""
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, fake.clock.now())
    return Runtime.open(
        make_settings(
            tmp_path,
            strava_client_id=str(fake.client_id),
            strava_client_secret=fake.client_secret,
            strava_base_url=fake.base_url,
            strava_subscription_id=subscription_id,
            clock_file=clock,
            **overrides,
        )
    )


def sqlite_db(path: Path) -> Database:
    """A fresh SQLite file database with every table."""
    db = Database(f"sqlite:///{path}")
    Base.metadata.create_all(db.engine)
    return db


def add_stridecare_athlete(db: Database, name: str = "me") -> int:
    """Create a stridecare athlete; returns its id."""
    with db.transaction() as s:
        athlete = Athlete(name=name)
        s.add(athlete)
        s.flush()
        return athlete.id


def connect_account(
    db: Database, settings: Settings, fake: FakeStrava, athlete_id: int, now: datetime | None = None
) -> ConnectedAccount:
    """Run the whole OAuth dance against the fake; returns the connected account."""
    now = now or fake.clock.now()
    state = make_state(settings, athlete_id, now)
    params = follow_authorize(authorization_url(settings, REDIRECT_URI, state))
    return exchange_code(
        db, settings, code=params["code"], state=params["state"], accepted_scope=params.get("scope"), now=now
    )
