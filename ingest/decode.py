"""Decoding one file with whichever registered source claims it. Runs in worker processes: no database here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ingest.files import FileStat, RefusedFile, check_file, content_hash
from stridecare.domain.load import DEFAULT_CONSTANTS, LoadConstants
from stridecare.domain.run import DecodeError, DecodeResult
from stridecare.plugins import CompletenessCheck, FileSource, source_classes, source_for

log = logging.getLogger(__name__)


@cache
def registered_sources(constants: LoadConstants = DEFAULT_CONSTANTS) -> tuple[FileSource, ...]:
    """One instance of every file source registered under the ``stridecare.sources`` entry point group, each
    built with the model ``constants`` (those of the settings, for decoding: they decide the steps of a run
    without cadence). Built once per set of constants per process."""
    return tuple(cls(constants) for cls in source_classes().values())


def supported_suffixes() -> tuple[str, ...]:
    """File endings some registered source can read."""
    return tuple(sorted({s for src in registered_sources() for s in src.suffixes}))


def known_complete(path: Path) -> bool:
    """True if the source that claims ``path`` can tell from its content that the file is whole (see
    ``CompletenessCheck``); False for sources that cannot tell, and for paths no source claims."""
    source = source_for(path, registered_sources())
    if source is None or not isinstance(source, CompletenessCheck):
        return False
    try:
        return bool(source.is_complete(path))
    except Exception:
        # A plugin that breaks the "must not raise" rule must not take the watcher thread down with it; the
        # file then simply waits to settle.
        log.warning("%s: is_complete failed for %s", source.name, path.name, exc_info=True)
        return False


@dataclass(frozen=True, slots=True)
class Decoded:
    """The outcome of reading one file, picklable so that a process pool can hand it back."""

    path: Path
    stat: FileStat | None
    content_hash: str | None
    source: str | None
    result: DecodeResult | None
    error: str | None  # one line, for refused or damaged files
    refused: bool = False  # refused before reading (link, size): nothing to quarantine
    # The reading did not finish for reasons that need not be the file's (a timeout on a busy machine, the
    # reader dying): read again later with a larger budget, never taken for damaged.
    retryable: bool = False


# What the caller already knows of a file it checked and hashed: (size, mtime in ns, SHA-256 hex digest).
Known = tuple[int, int, str]


def known_digest(stat: FileStat, known: Known | None) -> str | None:
    """The caller's digest when the file still has the size and time it had when the caller hashed it."""
    if known is not None and (stat.size, stat.mtime_ns) == known[:2]:
        return known[2]
    return None


def decode_path(
    path: Path, root: Path | None, max_bytes: int, constants: LoadConstants, known: Known | None = None
) -> Decoded:
    """Check, hash and decode ``path`` with sources built with the model ``constants``; every failure becomes a
    one-line reason, never an exception. ``known``: the caller hashed the file already; it is not hashed again
    unless its size or time changed since."""
    try:
        stat = check_file(path, root=root, max_bytes=max_bytes)
    except RefusedFile as exc:
        return Decoded(path, None, None, None, None, str(exc), refused=True)
    source = source_for(path, registered_sources(constants))
    if source is None:
        supported = ", ".join(supported_suffixes())
        return Decoded(
            path,
            stat,
            None,
            None,
            None,
            f"refused: {path.name} is not a supported file ({supported})",
            refused=True,
        )
    try:
        digest = known_digest(stat, known) or content_hash(path)
    except OSError as exc:
        return Decoded(path, stat, None, source.name, None, f"unreadable: {exc.strerror or exc}", refused=True)
    try:
        result = source.decode(path, digest)
    except DecodeError as exc:
        return Decoded(path, stat, digest, source.name, None, str(exc).splitlines()[0] if str(exc) else "damaged")
    except MemoryError:
        return Decoded(path, stat, digest, source.name, None, "damaged: file needs more memory than allowed")
    return Decoded(path, stat, digest, source.name, result, None)
