"""Gzip-compressed activity files (``.fit.gz``, ``.gpx.gz``, ``.tcx.gz``): decompress, then decode with the
inner format's source.

Strava's bulk export and several sync tools store originals gzipped. The wrapper streams the file into a
temporary file (never into memory whole), refusing decompression bombs: more than 512 MB out, or more than
200× the compressed size once past 1 MiB (small files may compress extremely well and are harmless; real
activity files compress 2–20×). The decoded runs keep the inner format as their ``source`` ("fit", "gpx",
"tcx") and the *compressed* file's content hash in their ``source_key``, so the same ``.gz`` imported twice is
one import. The same activity as a plain file and as a ``.gz`` hashes differently and is two imports (the
content-hash import log cannot see through compression), but one session: ``ingest.dedupe`` links the two runs
by their overlapping time ranges, one stays primary, and the load counts once.

Each class here is constructed with the model constants, as the ``stridecare.sources`` entry points require.
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from pathlib import Path
from typing import Protocol

from ingest.fit import FitSource
from ingest.gpx import GpxSource
from ingest.tcx import TcxSource
from stridecare.domain.run import DecodeError, DecodeResult
from stridecare.domain.steps import DEFAULT_CADENCE, CadenceConstants
from stridecare.plugins import FileSource

MAX_DECOMPRESSED_BYTES = 512 * 1024 * 1024
MAX_RATIO = 200.0
# Below this output size the ratio is not checked: a tiny file cannot exhaust anything.
RATIO_FLOOR_BYTES = 1 << 20
_CHUNK = 1 << 20


class Readable(Protocol):
    """A binary stream: ``gzip.GzipFile``, ``zipfile.ZipExtFile``, an open file."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; empty at the end."""
        ...


def copy_capped(
    reader: Readable,
    dest: Path,
    *,
    label: str,
    compressed_size: int,
    max_bytes: int = MAX_DECOMPRESSED_BYTES,
    max_ratio: float = MAX_RATIO,
) -> int:
    """Copy a binary stream (``reader.read(n)``) into ``dest`` within the bomb limits; return bytes written.

    Raises ``DecodeError`` (one line naming ``label``) when the output passes ``max_bytes`` or, beyond
    ``RATIO_FLOOR_BYTES``, ``max_ratio`` × ``compressed_size``. The partial output is left for the caller's
    temporary directory to remove.
    """
    ratio_limit = max(RATIO_FLOOR_BYTES, int(max_ratio * max(compressed_size, 1)))
    total = 0
    with dest.open("wb") as out:
        while True:
            chunk = reader.read(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                limit = f"{max_bytes / 1e6:.0f} MB" if max_bytes >= 1_000_000 else f"{max_bytes} bytes"
                raise DecodeError(f"refused: {label} decompresses to more than {limit} (a decompression bomb?)")
            if total > ratio_limit:
                raise DecodeError(
                    f"refused: {label} expands more than {max_ratio:.0f}x its compressed size (a decompression bomb?)"
                )
            out.write(chunk)
    return total


def gunzip_capped(
    source: Path,
    dest: Path,
    *,
    max_bytes: int = MAX_DECOMPRESSED_BYTES,
    max_ratio: float = MAX_RATIO,
) -> int:
    """Decompress the gzip file ``source`` into ``dest`` within the bomb limits; return the bytes written.

    Every failure is a ``DecodeError`` with one line: not gzip, truncated, corrupt, a bomb, or empty.
    """
    try:
        compressed_size = source.stat().st_size
        with gzip.open(source, "rb") as fh:
            total = copy_capped(
                fh,
                dest,
                label=source.name,
                compressed_size=compressed_size,
                max_bytes=max_bytes,
                max_ratio=max_ratio,
            )
    except DecodeError:
        raise
    except gzip.BadGzipFile as exc:
        raise DecodeError(f"damaged gzip file: {' '.join(str(exc).split()) or 'not gzip data'}") from exc
    except EOFError as exc:
        raise DecodeError("damaged gzip file: ends unexpectedly (truncated)") from exc
    except zlib.error as exc:
        raise DecodeError(f"damaged gzip file: corrupt data ({' '.join(str(exc).split())})") from exc
    except OSError as exc:
        raise DecodeError(f"cannot read gzip file: {exc.strerror or type(exc).__name__}") from exc
    if total == 0:
        raise DecodeError("damaged gzip file: decompresses to nothing")
    return total


class GzipSource:
    """Decodes ``<inner suffix>.gz`` files by decompressing them and handing them to ``inner``.

    ``name`` is the inner format's, so the import log and the runs say "fit", "gpx" or "tcx".
    """

    name: str
    suffixes: tuple[str, ...]

    def __init__(
        self,
        inner: FileSource,
        *,
        max_bytes: int = MAX_DECOMPRESSED_BYTES,
        max_ratio: float = MAX_RATIO,
    ) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._max_ratio = max_ratio
        self.name = inner.name
        self.suffixes = tuple(suffix + ".gz" for suffix in inner.suffixes)

    def decode(self, path: Path, content_hash: str) -> DecodeResult:
        """Decompress ``path`` into a temporary file and decode it with the inner source.

        ``content_hash`` (the compressed file's) is passed on unchanged, so run keys follow the ``.gz`` file.
        """
        with tempfile.TemporaryDirectory(prefix="stridecare-gz-") as tmp:
            # A fixed inner name: the outer name may be anything, and the inner source only needs the suffix.
            target = Path(tmp) / ("activity" + self._inner.suffixes[0])
            gunzip_capped(path, target, max_bytes=self._max_bytes, max_ratio=self._max_ratio)
            return self._inner.decode(target, content_hash)


class FitGzSource(GzipSource):
    """``.fit.gz``: gzipped FIT files (Strava's export stores uploads this way)."""

    def __init__(self, constants: CadenceConstants = DEFAULT_CADENCE) -> None:
        super().__init__(FitSource(constants))


class GpxGzSource(GzipSource):
    """``.gpx.gz``: gzipped GPX files."""

    def __init__(self, constants: CadenceConstants = DEFAULT_CADENCE) -> None:
        super().__init__(GpxSource(constants))


class TcxGzSource(GzipSource):
    """``.tcx.gz``: gzipped TCX files."""

    def __init__(self, constants: CadenceConstants = DEFAULT_CADENCE) -> None:
        super().__init__(TcxSource(constants))


__all__ = [
    "MAX_DECOMPRESSED_BYTES",
    "MAX_RATIO",
    "FitGzSource",
    "GpxGzSource",
    "GzipSource",
    "Readable",
    "TcxGzSource",
    "copy_capped",
    "gunzip_capped",
]
