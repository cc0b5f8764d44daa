"""Plugin interfaces and their discovery through Python entry points.

Sources (``stridecare.sources``) turn files into runs; channels (``stridecare.channels``) deliver prompts. A new
watch format or delivery channel is a module with a class registered under one of these groups, in this project
or in a package of its own, not a change to the core (``docs/plugins.md``). A plugin that registers a name a
built-in already has is refused with a warning: it must not silently take over email or the webhook.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from stridecare.domain.run import DecodeResult

if TYPE_CHECKING:
    from stridecare.crypto import Vault
    from stridecare.db.models import Athlete
    from stridecare.settings import Settings

log = logging.getLogger(__name__)

SOURCES_GROUP = "stridecare.sources"
CHANNELS_GROUP = "stridecare.channels"
# The distribution whose entry points are the built-ins; every other package's plugins come after them.
CORE_DISTRIBUTION = "stridecare"


@runtime_checkable
class FileSource(Protocol):
    """Decodes one file format into normalised runs.

    A source MAY also implement ``CompletenessCheck.is_complete`` (not part of this protocol, so sources
    without it still match): the folder watcher then hands a file on as soon as it reports True instead of
    waiting for the file's size to hold still.
    """

    name: str
    suffixes: tuple[str, ...]

    def decode(self, path: Path, content_hash: str) -> DecodeResult:
        """Decode ``path``; raise ``DecodeError`` with a one-line reason for a damaged file."""
        ...


@runtime_checkable
class CompletenessCheck(Protocol):
    """Optional extra for a ``FileSource`` whose format says by itself when a file is whole (FIT: sizes and
    CRCs in the file)."""

    def is_complete(self, path: Path) -> bool:
        """True only if ``path`` is certainly complete and will not grow; False means "not known" (still being
        written, unreadable, or damaged — the watcher then waits for the file to settle). Must not raise, and
        should be cheap for a partial file: the watcher calls it once per size and mtime it sees."""
        ...


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A prompt rendered for delivery; channels send this and nothing else (never raw source data)."""

    prompt_id: str
    delivery_id: int
    message_id: str  # stable across retries: webhook-id, or the email's Message-ID
    athlete_name: str
    recipient: str | None
    subject: str
    text: str
    html: str
    payload: dict[str, Any]
    unsubscribe_url: str | None
    done_url: str | None
    created_at: datetime
    # (content-id, data, image subtype) shown inline by the HTML body as ``<img src="cid:…">`` (email only).
    inline_images: tuple[tuple[str, bytes, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one attempt achieved. ``retry_after_s`` overrides the backoff schedule when the peer asked."""

    ok: bool
    detail: str
    retry: bool = True
    retry_after_s: float | None = None
    disable_target: bool = False
    status_code: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where one delivery goes, read fresh from the athlete's settings on every attempt."""

    address: str
    secret: str | None = None


class NoTarget(Exception):
    """The athlete no longer has a usable target on this channel (removed, unsubscribed, disabled): the
    delivery is cancelled with ``reason`` instead of being retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Channel(Protocol):
    """Delivers a rendered prompt to one kind of target.

    A channel class is built once per process with the :class:`~stridecare.settings.Settings` object
    (``cls(settings)``). The outbox asks every registered channel whether an athlete ``wants`` it when a
    prompt is made (one outbox row per wanted channel), asks for the ``target`` on each attempt, and calls
    ``send`` outside any transaction. A channel may also define ``disable(athlete, now)``, called when an
    outcome says ``disable_target`` (the receiver asked us to stop).
    """

    name: str

    def wants(self, athlete: Athlete) -> bool:
        """True when ``athlete`` chose this channel and it can be used (configured, not unsubscribed)."""
        ...

    def target(self, athlete: Athlete, vault: Vault) -> Target:
        """Where to send for ``athlete``, secrets decrypted with ``vault``; raise :class:`NoTarget` if nowhere."""
        ...

    def send(self, message: OutgoingMessage, target: str, secret: str | None) -> DeliveryOutcome:
        """Attempt one delivery. Must not raise for network trouble: report it in the outcome."""
        ...


class SettingsChannel:
    """A base for channels whose per-athlete settings live in ``athlete.channel_settings[name]``.

    The athlete chooses the channel by giving it settings (``stridecare athlete set NAME --channel
    CHANNEL.KEY=VALUE``); the keys in ``secret_keys`` are stored encrypted and decrypted for ``target``.
    ``address_key`` names the setting that is the address. Subclasses implement ``send``.
    """

    name: str = ""
    address_key: str = "address"
    secret_keys: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        """Keep the settings; subclasses read what they need from them."""
        self.settings = settings

    def options(self, athlete: Athlete) -> Mapping[str, Any]:
        """This channel's stored settings for ``athlete`` (secrets still encrypted); empty when not chosen."""
        value = (athlete.channel_settings or {}).get(self.name)
        return value if isinstance(value, Mapping) else {}

    def wants(self, athlete: Athlete) -> bool:
        """Chosen (an address is set) and not disabled by a receiver."""
        options = self.options(athlete)
        return bool(options.get(self.address_key)) and not options.get("disabled_at")

    def target(self, athlete: Athlete, vault: Vault) -> Target:
        """The address (decrypted when it is a secret key) and the first other secret, if any."""
        options = self.options(athlete)
        raw = options.get(self.address_key)
        if not raw:
            raise NoTarget(f"no {self.name} address any more")
        if options.get("disabled_at"):
            raise NoTarget(f"{self.name} target disabled at {options['disabled_at']}")
        address = vault.decrypt(str(raw)) if self.address_key in self.secret_keys else str(raw)
        others = [k for k in self.secret_keys if k != self.address_key and options.get(k)]
        secret = vault.decrypt(str(options[others[0]])) if others else None
        return Target(address, secret)

    def disable(self, athlete: Athlete, now: datetime) -> None:
        """Mark the target disabled (the receiver said it is gone); setting it again re-enables it."""
        options = dict(self.options(athlete))
        options["disabled_at"] = now.isoformat()
        athlete.channel_settings = {**(athlete.channel_settings or {}), self.name: options}


def store_channel_settings(athlete: Athlete, channel: Any, values: Mapping[str, str | None], vault: Vault) -> None:
    """Merge ``values`` into ``athlete``'s settings for ``channel`` (an instance or class with ``name`` and
    optionally ``secret_keys``), encrypting secret keys; a None value removes a key, no keys left removes the
    channel. A fresh setting clears a ``disabled_at`` mark."""
    secret_keys = tuple(getattr(channel, "secret_keys", ()))
    current = dict((athlete.channel_settings or {}).get(channel.name) or {})
    current.pop("disabled_at", None)
    for key, value in values.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = vault.encrypt(value) if key in secret_keys else value
    everything = {k: v for k, v in (athlete.channel_settings or {}).items() if k != channel.name}
    if current:
        everything[channel.name] = current
    athlete.channel_settings = everything  # a new dict: SQLAlchemy sees the change


def rotate_channel_secrets(athlete: Athlete, vault: Vault) -> int:
    """Re-encrypt the athlete's channel secrets (``secret_keys`` of each installed channel) under the newest
    key; returns how many were rotated. Settings of channels no longer installed are left as they are."""
    classes = channel_classes()
    changed: dict[str, Any] = {}
    count = 0
    for name, options in (athlete.channel_settings or {}).items():
        keys = tuple(getattr(classes.get(name), "secret_keys", ()))
        if not isinstance(options, Mapping) or not keys:
            changed[name] = options
            continue
        rotated = dict(options)
        for key in keys:
            if rotated.get(key):
                rotated[key] = vault.rotate(str(rotated[key]))
                count += 1
        changed[name] = rotated
    if count:
        athlete.channel_settings = changed
    return count


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "(unknown package)"


def _load(group: str) -> dict[str, Any]:
    """Load every entry point of ``group``: built-ins first, and a later plugin that claims a name already
    taken is refused with a warning (a clash must never silently replace a built-in)."""
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    eps = sorted(entry_points(group=group), key=lambda ep: (_distribution(ep) != CORE_DISTRIBUTION, ep.name))
    for ep in eps:
        owner = _distribution(ep)
        if ep.name in found:
            if owners[ep.name] != owner or (found[ep.name] is not None and ep.value != _value_of(found[ep.name])):
                log.warning(
                    "plugin %r (%s) from package %s refused: the name %r is already taken by %s",
                    ep.name,
                    ep.value,
                    owner,
                    ep.name,
                    owners[ep.name],
                )
            continue
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not stop the others
            log.warning("plugin %r from package %s cannot be loaded: %s: %s", ep.name, owner, type(exc).__name__, exc)
            continue
        owners[ep.name] = owner
    return found


def _value_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


@cache
def source_classes() -> dict[str, Any]:
    """Registered file sources by name."""
    return _load(SOURCES_GROUP)


@cache
def channel_classes() -> dict[str, Any]:
    """Registered delivery channels by name."""
    return _load(CHANNELS_GROUP)


def source_for(path: Path, sources: Iterable[FileSource]) -> FileSource | None:
    """The source that claims ``path`` by its suffix (``.fit``, ``.fit.gz`` …), or None."""
    name = path.name.lower()
    best: FileSource | None = None
    best_len = -1
    for source in sources:
        for suffix in source.suffixes:
            if name.endswith(suffix) and len(suffix) > best_len:
                best, best_len = source, len(suffix)
    return best
