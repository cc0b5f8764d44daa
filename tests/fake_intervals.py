"""A fake intervals.icu on loopback that follows the documented API: HTTP Basic auth with user ``API_KEY`` and
the personal key as password, athlete id ``0`` meaning the key's own athlete, ``GET /api/v1/athlete/{id}``,
``GET /api/v1/athlete/{id}/activities?oldest=YYYY-MM-DD&newest=YYYY-MM-DD`` (newest first, both days
inclusive, on the local start date), ``GET /api/v1/activity/{id}/file`` (the original as uploaded: real FIT
bytes, gzip'ed or plain). Activities synced from Strava are listed as stubs (``source: STRAVA`` and a
``_note``, no data), as the real one does. 401 for a wrong key, 403 for another athlete's data.

Faults are injected per request kind (``fail_next("file", 429, times=2)``), and every request is counted, so
tests can assert what was asked and how often.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeActivity:
    """One activity: ``make_file`` builds the original's bytes on first download (a real FIT file)."""

    activity_id: str
    start: datetime
    sport: str = "Run"
    gzipped: bool = False
    strava_stub: bool = False
    make_file: Callable[[], bytes] | None = None
    distance_m: float = 5000.0
    _bytes: bytes | None = None

    def listing(self) -> dict[str, Any]:
        if self.strava_stub:
            return {
                "id": self.activity_id,
                "start_date_local": self.start.replace(tzinfo=None).isoformat(),
                "type": self.sport,
                "source": "STRAVA",
                "_note": "STRAVA activities are not available via the API",
            }
        return {
            "id": self.activity_id,
            "start_date_local": self.start.replace(tzinfo=None).isoformat(),
            "start_date": self.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "type": self.sport,
            "name": f"{self.sport} {self.activity_id}",
            "distance": self.distance_m,
            "source": "GARMIN_CONNECT",
        }

    def original(self) -> bytes:
        if self._bytes is None:
            raw = self.make_file() if self.make_file else b""
            self._bytes = gzip.compress(raw) if self.gzipped else raw
        return self._bytes


@dataclass
class FakeAccount:
    athlete_id: str
    api_key: str
    name: str = "Runner"
    activities: dict[str, FakeActivity] = field(default_factory=dict)


class FakeIntervals:
    """The state behind the server: accounts, activities, counters and injected faults."""

    def __init__(self) -> None:
        self.accounts: dict[str, FakeAccount] = {}
        self.requests: Counter[str] = Counter()
        self.downloads: Counter[str] = Counter()  # activity id → times its file was served
        self.faults: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.lock = threading.Lock()
        self.url = ""
        # Called before a file is served; answering False drops the connection unanswered (a client killed
        # while waiting never received it, so it does not count as downloaded).
        self.on_download: Callable[[str], bool] | None = None
        self.dropped = 0

    def add_account(self, athlete_id: str, api_key: str, name: str = "Runner") -> FakeAccount:
        account = FakeAccount(athlete_id, api_key, name)
        self.accounts[athlete_id] = account
        return account

    def add(self, athlete_id: str, activity: FakeActivity) -> FakeActivity:
        self.accounts[athlete_id].activities[activity.activity_id] = activity
        return activity

    def fail_next(self, kind: str, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """The next ``times`` requests of ``kind`` (``athlete``, ``list``, ``file``) answer ``status``."""
        with self.lock:
            self.faults.setdefault(kind, []).extend([(status, headers or {})] * times)

    def refuse_key(self, athlete_id: str) -> None:
        """The athlete revoked the key: every call with it answers 401 from now on."""
        self.accounts[athlete_id].api_key = "revoked-" + self.accounts[athlete_id].api_key

    # -- request handling ------------------------------------------------------------------------------------

    def _account_for(self, auth: str | None) -> FakeAccount | None:
        if not auth or not auth.startswith("Basic "):
            return None
        try:
            user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return None
        if user != "API_KEY":
            return None
        return next((a for a in self.accounts.values() if a.api_key == key), None)

    def handle(self, path: str, auth: str | None) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(path)
        segments = [s for s in parts.path.split("/") if s]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        kind = "other"
        if segments[:3] == ["api", "v1", "athlete"] and len(segments) == 4:
            kind = "athlete"
        elif segments[:3] == ["api", "v1", "athlete"] and len(segments) == 5 and segments[4] == "activities":
            kind = "list"
        elif segments[:3] == ["api", "v1", "activity"] and len(segments) == 5 and segments[4] == "file":
            kind = "file"
        with self.lock:
            self.requests[kind] += 1
            queued = self.faults.get(kind)
            fault = queued.pop(0) if queued else None
        if fault is not None:
            status, headers = fault
            return status, headers, json.dumps({"status": status, "error": "injected"}).encode()
        account = self._account_for(auth)
        if account is None:
            return 401, {}, json.dumps({"status": 401, "error": "Unauthorized"}).encode()
        if kind in ("athlete", "list"):
            wanted = segments[3]
            if wanted not in ("0", account.athlete_id):
                return 403, {}, json.dumps({"status": 403, "error": "Access denied"}).encode()
            if kind == "athlete":
                return 200, {}, json.dumps({"id": account.athlete_id, "name": account.name}).encode()
            if "oldest" not in query:
                return 422, {}, json.dumps({"status": 422, "error": "oldest is required"}).encode()
            oldest = date.fromisoformat(query["oldest"][:10])
            newest = date.fromisoformat(query["newest"][:10]) if "newest" in query else date.max
            rows = [
                a.listing()
                for a in sorted(account.activities.values(), key=lambda a: a.start, reverse=True)
                if oldest <= a.start.date() <= newest
            ]
            return 200, {"Content-Type": "application/json"}, json.dumps(rows).encode()
        if kind == "file":
            activity = account.activities.get(segments[3])
            if activity is None:
                owner = any(segments[3] in a.activities for a in self.accounts.values())
                return (403 if owner else 404), {}, b'{"status": 404, "error": "Not found"}'
            if activity.strava_stub:
                return 422, {}, b'{"status": 422, "error": "STRAVA activities are not available via the API"}'
            if self.on_download is not None and not self.on_download(activity.activity_id):
                with self.lock:
                    self.dropped += 1
                return 0, {}, b""
            data = activity.original()
            with self.lock:
                self.downloads[activity.activity_id] += 1
            return 200, {"Content-Type": "application/octet-stream"}, data
        return 404, {}, b'{"status": 404, "error": "Not found"}'


def _handler_for(fake: FakeIntervals) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, headers, body = fake.handle(self.path, self.headers.get("Authorization"))
            if status == 0:
                self.close_connection = True
                return
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextmanager
def running(fake: FakeIntervals | None = None) -> Iterator[FakeIntervals]:
    """Serve ``fake`` (a new one by default) on a loopback port for the ``with`` block; ``fake.url`` is the
    base URL to put in ``STRIDECARE_INTERVALS_BASE_URL``."""
    fake = fake or FakeIntervals()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
