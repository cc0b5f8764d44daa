"""intervals.icu: one free account that already receives runs from Garmin, Coros, Polar, Suunto, Wahoo and
Zwift, read with the athlete's personal API key (HTTP Basic, user ``API_KEY``).

``GET /api/v1/athlete/{id}/activities?oldest=…&newest=…`` lists; ``GET /api/v1/activity/{id}/file`` is the
original file (gzip'ed or plain). Activities intervals.icu only holds from Strava come back as stubs without
data (Strava's terms forbid passing them on): they are skipped with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from ingest.connectors.base import (
    ConnectorError,
    ItemFailed,
    KeyRefused,
    RateLimited,
    RemoteActivity,
    Unavailable,
    is_foot_sport,
)
from stridecare.settings import Settings

STRAVA_STUB = "only a Strava stub at intervals.icu (Strava does not let it pass the data on)"
# Bodies we read into memory are capped: a listing of 10 years is a few MB, an original at most the file cap.
_MAX_LIST_BYTES = 64 * 1024 * 1024


def credentials_json(api_key: str, athlete_id: str) -> str:
    """What is stored (encrypted) for an intervals.icu account."""
    return json.dumps({"api_key": api_key, "athlete_id": athlete_id})


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


class IntervalsConnector:
    """The ``intervals`` connector (built per pull with the decrypted API key and athlete id)."""

    name = "intervals"
    label = "intervals.icu"
    downloads_per_hour: int | None = None  # intervals.icu allows 10 requests a second; we ask one at a time
    pause_s = 0.0
    cooldown_first_s = 900.0
    cooldown_max_s = 6 * 3600.0

    def __init__(
        self,
        settings: Settings,
        credentials: str,
        save_credentials: Callable[[str], None] | None = None,
        *,
        client: httpx.Client | None = None,
    ) -> None:
        stored = json.loads(credentials)
        self.athlete_id = str(stored.get("athlete_id") or "0")
        self.max_bytes = settings.max_file_bytes
        self.client = client or httpx.Client(
            base_url=settings.intervals_base_url.rstrip("/"),
            auth=httpx.BasicAuth("API_KEY", str(stored["api_key"])),
            timeout=settings.connector_timeout_s,
            headers={"User-Agent": "stridecare"},
            follow_redirects=False,
        )

    def __del__(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def _get(self, url: str, params: dict[str, str] | None = None, *, item: bool = False) -> bytes:
        """One GET, its status turned into our errors; the body is read up to the cap."""
        try:
            with self.client.stream("GET", url, params=params) as response:
                self._check(response, item=item)
                cap = _MAX_LIST_BYTES if not item else self.max_bytes
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > cap:
                        raise ItemFailed(f"intervals.icu sent more than {cap // (1024 * 1024)} MB")
                return bytes(body)
        except httpx.TimeoutException as exc:
            raise Unavailable(f"intervals.icu did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"intervals.icu cannot be reached ({type(exc).__name__}: {exc})") from exc

    def _check(self, response: httpx.Response, *, item: bool) -> None:
        code = response.status_code
        if code in (401, 403):
            raise KeyRefused(
                f"intervals.icu refused the API key (HTTP {code}); nothing was deleted: "
                "connect again with `stridecare intervals connect`"
            )
        if code == 429:
            raise RateLimited("intervals.icu asks us to slow down (HTTP 429)", _retry_after(response))
        if code >= 500:
            raise Unavailable(f"intervals.icu has trouble (HTTP {code}); trying again later")
        if code == 404 and item:
            raise ItemFailed("intervals.icu has no file for this activity (HTTP 404)")
        if code >= 400:
            raise (ItemFailed if item else ConnectorError)(f"intervals.icu answered HTTP {code}")

    def check(self) -> dict[str, Any]:
        """One call that proves the key: the athlete it belongs to (``id``, ``name``)."""
        body = self._get(f"/api/v1/athlete/{self.athlete_id}")
        try:
            found = json.loads(body)
        except ValueError as exc:
            raise ConnectorError("intervals.icu answered something that is not JSON") from exc
        if not isinstance(found, dict) or not found.get("id"):
            raise ConnectorError("intervals.icu answered without an athlete id")
        return found

    def list_activities(self, oldest: datetime, newest: datetime) -> list[RemoteActivity]:
        """Activities between the two days, each with a reason to skip it where there is one."""
        body = self._get(
            f"/api/v1/athlete/{self.athlete_id}/activities",
            {"oldest": oldest.date().isoformat(), "newest": newest.date().isoformat()},
        )
        try:
            rows = json.loads(body)
        except ValueError as exc:
            raise Unavailable("intervals.icu answered a listing that is not JSON") from exc
        if not isinstance(rows, list):
            raise Unavailable("intervals.icu answered a listing that is not a list")
        return [a for a in (self._activity(row) for row in rows if isinstance(row, dict)) if a is not None]

    @staticmethod
    def _activity(row: dict[str, Any]) -> RemoteActivity | None:
        activity_id = row.get("id")
        if activity_id in (None, ""):
            return None
        started = _parse_time(row.get("start_date")) or _parse_time(row.get("start_date_local"))
        sport = row.get("type") if isinstance(row.get("type"), str) else None
        skip = None
        if str(row.get("source", "")).upper() == "STRAVA" and ("_note" in row or not row.get("distance")):
            skip = STRAVA_STUB
        elif not is_foot_sport(sport):
            skip = f"not a foot sport ({sport})"
        return RemoteActivity(str(activity_id), started, sport, skip)

    def download(self, activity_id: str) -> bytes:
        """The original file as intervals.icu received it (often gzip'ed)."""
        return self._get(f"/api/v1/activity/{activity_id}/file", item=True)
