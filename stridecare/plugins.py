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

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

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
    # The notification form (push): one line saying what to do and why, and the page that shows the rest.
    # The full ``text`` stays for channels that carry a whole message (email, console).
    summary: str = ""
    link_url: str | None = None


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

    Its per-athlete settings live in ``athlete.channel_settings[name]`` and nowhere else: read them with
    :func:`channel_options`, write them with :func:`store_channel_settings`, which validates them against the
    channel's ``options_schema`` (a :class:`ChannelOptions` subclass; :class:`FreeformOptions` when absent)
    and encrypts its ``secret_keys``. :class:`SettingsChannel` implements all but ``send``.
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


class ChannelOptions(BaseModel):
    """The schema of one channel's per-athlete settings as stored in ``athlete.channel_settings[name]``.

    Every channel has one (built-ins and plugins alike): a write through :func:`store_channel_settings` is
    validated against it, so what is stored is always what the channel reads. Secret keys hold the vault's
    ciphertext, never plain text. ``disabled_at`` is set when a receiver asked us to stop (410 Gone) and cleared
    by a fresh setting.
    """

    model_config = ConfigDict(extra="forbid")

    disabled_at: datetime | None = None


class FreeformOptions(ChannelOptions):
    """The schema of a plugin channel that declares none: any keys, each a string."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _strings(self) -> FreeformOptions:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, str):
                raise ValueError(f"{key} must be text")
        return self


class InvalidChannelSettings(ValueError):
    """Settings that the channel's schema refuses; the message says which and why, in one line."""


def channel_options(athlete: Athlete, name: str) -> dict[str, Any]:
    """The stored settings of channel ``name`` for ``athlete`` (secrets still encrypted); empty when not chosen.

    The one reader of ``athlete.channel_settings``: every face and channel reads an athlete's channels here."""
    value = (athlete.channel_settings or {}).get(name)
    return dict(value) if isinstance(value, Mapping) else {}


def put_channel_options(athlete: Athlete, name: str, options: Mapping[str, Any] | None) -> None:
    """Replace the stored settings of channel ``name`` (None or empty: the athlete no longer has the channel)."""
    everything = {k: v for k, v in (athlete.channel_settings or {}).items() if k != name}
    if options:
        everything[name] = dict(options)
    athlete.channel_settings = everything  # a new dict: SQLAlchemy sees the change


def _schema_of(channel: Any) -> type[BaseModel]:
    schema = getattr(channel, "options_schema", None)
    return schema if isinstance(schema, type) and issubclass(schema, BaseModel) else FreeformOptions


def _one_line_error(name: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append(f"{name}.{where}: {error['msg']}")
    return "; ".join(problems)


def validate_channel_options(channel: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked against ``channel``'s schema and in their stored form (JSON values, no None);
    raises :class:`InvalidChannelSettings`."""
    try:
        model = _schema_of(channel).model_validate(dict(options))
    except ValidationError as exc:
        raise InvalidChannelSettings(_one_line_error(str(channel.name), exc)) from None
    return model.model_dump(mode="json", exclude_none=True)


def store_channel_settings(athlete: Athlete, channel: Any, values: Mapping[str, Any], vault: Vault) -> None:
    """Merge ``values`` into ``athlete``'s settings for ``channel`` (an instance or class with ``name`` and
    optionally ``options_schema``, ``address_key``, ``secret_keys``, ``reset_on_change``), encrypting secret
    keys, and validate the result against the channel's schema (:class:`InvalidChannelSettings`).

    A None value removes a key; when only None values are given and the channel's address is gone (or no key
    is left) the channel is removed; other values without an address are refused. A fresh setting clears
    ``disabled_at`` and the channel's other ``reset_on_change`` marks.
    """
    secret_keys = tuple(getattr(channel, "secret_keys", ()))
    address_key = getattr(channel, "address_key", "address")
    current = channel_options(athlete, channel.name)
    for key in ("disabled_at", *getattr(channel, "reset_on_change", ())):
        current.pop(key, None)
    for key, value in values.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = vault.encrypt(str(value)) if key in secret_keys else value
    removing = all(value is None for value in values.values())
    if not current or (removing and address_key and not current.get(address_key)):
        put_channel_options(athlete, channel.name, None)
        return
    if address_key and not current.get(address_key):
        raise InvalidChannelSettings(f"{channel.name}.{address_key}: required (where this channel sends to)")
    put_channel_options(athlete, channel.name, validate_channel_options(channel, current))


def patch_channel_options(athlete: Athlete, name: str, **changes: Any) -> None:
    """Set (or with None, remove) single keys of a chosen channel's settings without the reset a fresh setting
    does: a receiver's ``disabled_at``, an email's ``unsubscribed_at``. Nothing happens for a channel the
    athlete does not have."""
    current = channel_options(athlete, name)
    if not current:
        return
    for key, value in changes.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value.isoformat() if isinstance(value, datetime) else value
    put_channel_options(athlete, name, current)


class SettingsChannel:
    """A base for channels whose per-athlete settings live in ``athlete.channel_settings[name]``.

    The athlete chooses the channel by giving it settings (``stridecare athlete set NAME --channel
    CHANNEL.KEY=VALUE``); the keys in ``secret_keys`` are stored encrypted and decrypted for ``target``.
    ``address_key`` names the setting that is the address, ``options_schema`` the schema every stored value
    is validated against (:class:`FreeformOptions` when a plugin declares none). Subclasses implement ``send``.
    """

    name: str = ""
    address_key: str = "address"
    secret_keys: tuple[str, ...] = ()
    options_schema: type[ChannelOptions] = FreeformOptions
    # Marks a fresh setting clears besides ``disabled_at`` (email: ``unsubscribed_at``).
    reset_on_change: tuple[str, ...] = ()

    def __init__(self, settings: Settings) -> None:
        """Keep the settings; subclasses read what they need from them."""
        self.settings = settings

    def options(self, athlete: Athlete) -> Mapping[str, Any]:
        """This channel's stored settings for ``athlete`` (secrets still encrypted); empty when not chosen."""
        return channel_options(athlete, self.name)

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
        patch_channel_options(athlete, self.name, disabled_at=now)


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
