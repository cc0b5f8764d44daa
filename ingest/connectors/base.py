"""The connector plugin interface, its errors, and discovery through the ``stridecare.connectors`` group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Protocol, runtime_checkable

from stridecare.plugins import _load

CONNECTORS_GROUP = "stridecare.connectors"

# Sports whose runs load the feet, by the providers' names (lower-cased, without spaces or underscores). Anything
# else is skipped from the list without a download.
FOOT_SPORTS = frozenset(
    {
        "run",
        "running",
        "trailrun",
        "trailrunning",
        "virtualrun",
        "treadmillrun",
        "treadmillrunning",
        "indoorrunning",
        "streetrunning",
        "trackrunning",
        "ultrarun",
        "walk",
        "walking",
        "hike",
        "hiking",
        "casualwalking",
        "speedwalking",
        "snowshoe",
    }
)


def is_foot_sport(sport: str | None) -> bool:
    """True for a provider sport name that is on foot (``Run``, ``TrailRun``, ``trail_running``, ``Walk``…);
    an unknown or missing sport is read (the file decides)."""
    if not sport:
        return True
    return sport.lower().replace("_", "").replace(" ", "") in FOOT_SPORTS


@dataclass(frozen=True, slots=True)
class RemoteActivity:
    """One activity as the provider lists it. ``skip`` is a reason not to download it (not a foot sport, a
    stub with no data); None means download."""

    activity_id: str
    started_at: datetime | None
    sport: str | None
    skip: str | None = None


class ConnectorError(Exception):
    """A provider answered in a way that stops this pull; ``str()`` is a plain sentence for the runner."""


class KeyRefused(ConnectorError):
    """The provider refused the credentials (401/403, a refused login): the account waits for a reconnect."""


class Blocked(ConnectorError):
    """The provider blocks us (a Cloudflare challenge): a long cooldown, not a retry loop."""


class RateLimited(ConnectorError):
    """HTTP 429: a cooldown starts. ``retry_after_s`` is the provider's own wait, when it said one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(ConnectorError):
    """5xx or a network failure: this pull stops and the account backs off."""


class ItemFailed(ConnectorError):
    """One activity could not be downloaded (gone, refused alone): retried with backoff, the others go on."""


SaveCredentials = Callable[[str], None]


@runtime_checkable
class Connector(Protocol):
    """An account-based source. Built per pull as ``cls(settings, credentials, save_credentials)``:
    ``credentials`` is the decrypted secret stored at connect time (an API key, a token bundle), and
    ``save_credentials`` stores a new one encrypted (tokens refreshed during the pull).

    Attributes (of the class or the instance) tell the poller the provider's limits: ``downloads_per_hour``
    (None: unthrottled), ``pause_s`` (seconds between two downloads, jittered), ``cooldown_first_s`` and
    ``cooldown_max_s`` (a 429's cooldown, doubling).
    """

    name: str
    label: str
    downloads_per_hour: int | None
    pause_s: float
    cooldown_first_s: float
    cooldown_max_s: float

    def list_activities(self, oldest: datetime, newest: datetime) -> list[RemoteActivity]:
        """Activities that started between ``oldest`` and ``newest``, any order. Raises a ``ConnectorError``."""
        ...

    def download(self, activity_id: str) -> bytes:
        """The activity's original file: FIT, or FIT gzip'ed or zipped (unpacked by the poller by its magic
        bytes). Raises ``ItemFailed`` for this activity alone, another ``ConnectorError`` to stop the pull."""
        ...


@cache
def connector_classes() -> dict[str, Any]:
    """Registered connectors by name: built-ins first; a plugin claiming a taken name is refused."""
    return _load(CONNECTORS_GROUP)


def connector_class(provider: str) -> Any:
    """The connector class for ``provider``; ``ConnectorError`` when it is not installed (any more)."""
    found = connector_classes().get(provider)
    if found is None:
        raise ConnectorError(f"no connector named {provider!r} is installed")
    return found
