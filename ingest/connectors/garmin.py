"""Garmin Connect, through python-garminconnect (unofficial: Garmin offers no API to individuals).

Everything the library is used for sits in one small class, :class:`GarminAdapter`: log in (asking for an MFA
code through a callback), dump and load the tokens, list activities, download the ORIGINAL (a zip holding the
FIT). The rest (:class:`GarminConnector`, the poller) is tested against a fake adapter, and a contract test
checks that the installed library still has what the adapter calls.

Garmin blocks accounts that ask too much, and a retry after a block extends it: by default at most 25
downloads an hour per account with a jittered pause between two; a 429 starts a cooldown of 2 h that doubles
up to 24 h and is never retried at once; a Cloudflare challenge or a refused login is a plain status. The
email and password are used once, at connect, and never stored; only the tokens are (encrypted), and saved
again whenever the library refreshed them during a pull.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from ingest.connectors.base import (
    Blocked,
    ConnectorError,
    ItemFailed,
    KeyRefused,
    RateLimited,
    RemoteActivity,
    Unavailable,
    is_foot_sport,
)
from stridecare.settings import Settings

INSTALL_HINT = "Garmin Connect needs the garmin extra: pip install 'stridecare[garmin]' (Python 3.12 or later)"


class GarminAdapter:
    """The only code that touches python-garminconnect. Its errors come out as ours (``ConnectorError``
    subclasses) with plain sentences."""

    def __init__(self) -> None:
        try:
            import garminconnect  # deferred: optional extra (pip install 'stridecare[garmin]')
        except ImportError as exc:
            raise ConnectorError(INSTALL_HINT) from exc
        self._lib: Any = garminconnect
        self._api: Any = None

    def _translate(self, exc: Exception, *, item: bool = False) -> ConnectorError:
        lib = self._lib
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, lib.GarminConnectTooManyRequestsError):
            return RateLimited(f"Garmin Connect asks us to wait (too many requests: {text})")
        if isinstance(exc, lib.GarminConnectAuthenticationError):
            return KeyRefused(
                "Garmin Connect refused the login or the saved tokens; nothing was deleted: "
                "connect again with `stridecare garmin connect`"
            )
        if item and isinstance(exc, lib.GarminConnectConnectionError):
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 404 or isinstance(exc, getattr(lib, "GarminConnectNotFoundError", ())):
                return ItemFailed("Garmin Connect has no original file for this activity (HTTP 404)")
        if isinstance(exc, lib.GarminConnectConnectionError):
            lowered = text.lower()
            if "cloudflare" in lowered or "403" in lowered:
                return Blocked(f"Garmin Connect blocks this client (a Cloudflare challenge: {text})")
            return Unavailable(f"Garmin Connect cannot be reached: {text}")
        return Unavailable(f"Garmin Connect failed: {type(exc).__name__}: {text}")

    def login(self, email: str, password: str, prompt_mfa: Callable[[], str]) -> str:
        """Log in with the email and password (``prompt_mfa`` is asked for the code when the account has MFA);
        returns the tokens to store. The password is not kept."""
        try:
            self._api = self._lib.Garmin(email=email, password=password, prompt_mfa=prompt_mfa, retry_attempts=0)
            self._api.login()
            return self.tokens()
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    def resume(self, tokens: str) -> None:
        """Log in from stored tokens (the library refreshes them if they expired)."""
        try:
            self._api = self._lib.Garmin(retry_attempts=0)
            self._api.login(tokenstore=tokens)
        except Exception as exc:
            raise self._translate(exc) from exc

    def tokens(self) -> str:
        """The current tokens as the library dumps them (a JSON string)."""
        return str(self._api.client.dumps())

    def display_name(self) -> str | None:
        """Garmin's name for the logged-in user, once logged in."""
        name = getattr(self._api, "display_name", None)
        return str(name) if name else None

    def list_activities(self, oldest: date, newest: date) -> list[dict[str, Any]]:
        """Activities between the two days, oldest first."""
        try:
            found = self._api.get_activities_by_date(oldest.isoformat(), newest.isoformat(), None, "asc")
        except Exception as exc:
            raise self._translate(exc) from exc
        return [row for row in found or () if isinstance(row, dict)]

    def download_original(self, activity_id: str) -> bytes:
        """The ORIGINAL file: a zip holding the FIT the watch recorded."""
        try:
            data = self._api.download_activity(activity_id, dl_fmt=self._api.ActivityDownloadFormat.ORIGINAL)
        except Exception as exc:
            raise self._translate(exc, item=True) from exc
        return bytes(data)


def _started(row: dict[str, Any]) -> datetime | None:
    value = row.get("startTimeGMT")
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace(" ", "T")).replace(tzinfo=UTC)
    except ValueError:
        return None


def _sport(row: dict[str, Any]) -> str | None:
    kind = row.get("activityType")
    if isinstance(kind, dict) and isinstance(kind.get("typeKey"), str):
        return str(kind["typeKey"])
    return None


AdapterFactory = Callable[[], Any]


class GarminConnector:
    """The ``garmin`` connector: tokens in (a JSON string), the adapter does the talking."""

    name = "garmin"
    label = "Garmin Connect"
    pause_s = 4.0
    cooldown_first_s = 2 * 3600.0
    cooldown_max_s = 24 * 3600.0
    # Tests (and nothing else) swap the adapter for a fake: the library only talks to Garmin's own domains.
    adapter_factory: AdapterFactory = GarminAdapter

    def __init__(
        self, settings: Settings, credentials: str, save_credentials: Callable[[str], None] | None = None
    ) -> None:
        self.downloads_per_hour: int | None = settings.garmin_downloads_per_hour or None
        self._tokens = credentials
        self._save = save_credentials
        self._adapter: Any = None

    def _ready(self) -> Any:
        if self._adapter is None:
            adapter = type(self).adapter_factory()
            adapter.resume(self._tokens)
            self._adapter = adapter
            self._keep_tokens()
        return self._adapter

    def _keep_tokens(self) -> None:
        """Save the tokens again whenever the library refreshed them (a lost refresh is a forced re-login)."""
        current = self._adapter.tokens()
        if current != self._tokens:
            self._tokens = current
            if self._save is not None:
                self._save(current)

    def list_activities(self, oldest: datetime, newest: datetime) -> list[RemoteActivity]:
        """Activities between the two days, non-foot sports marked to skip."""
        adapter = self._ready()
        rows = adapter.list_activities(oldest.date(), newest.date())
        self._keep_tokens()
        out = []
        for row in rows:
            activity_id = row.get("activityId")
            if activity_id in (None, ""):
                continue
            sport = _sport(row)
            skip = None if is_foot_sport(sport) else f"not a foot sport ({sport})"
            out.append(RemoteActivity(str(activity_id), _started(row), sport, skip))
        return out

    def download(self, activity_id: str) -> bytes:
        """The ORIGINAL zip (unpacked to its FIT by the poller)."""
        adapter = self._ready()
        try:
            return bytes(adapter.download_original(activity_id))
        finally:
            self._keep_tokens()


def login_tokens(
    email: str, password: str, prompt_mfa: Callable[[], str], factory: AdapterFactory | None = None
) -> tuple[str, str]:
    """Log in once (MFA asked through ``prompt_mfa``) and return ``(account key, tokens)``; the account key is
    Garmin's display name for the user (the email when it has none)."""
    adapter = (factory or GarminConnector.adapter_factory)()
    tokens = adapter.login(email, password, prompt_mfa)
    return adapter.display_name() or email.strip().lower(), tokens
