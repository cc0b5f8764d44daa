"""Plugin interfaces and their discovery through Python entry points.

Sources (``stridecare.sources``) turn files into runs; channels (``stridecare.channels``) deliver prompts. A new
watch format or delivery channel is a module with a class registered under one of these groups, not a change to
the core.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from stridecare.domain.run import DecodeResult

SOURCES_GROUP = "stridecare.sources"
CHANNELS_GROUP = "stridecare.channels"


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


@runtime_checkable
class Channel(Protocol):
    """Delivers a rendered prompt to one kind of target."""

    name: str

    def send(self, message: OutgoingMessage, target: str, secret: str | None) -> DeliveryOutcome:
        """Attempt one delivery. Must not raise for network trouble: report it in the outcome."""
        ...


def _load(group: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        found[ep.name] = ep.load()
    return found


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
