"""Where a connector's downloads land: one file per activity under the data home, written aside then renamed,
so that a file at its final name is always whole (a pull killed mid-write leaves only a ``.part``)."""

from __future__ import annotations

import gzip
import io
import os
import re
import zipfile
from pathlib import Path
from typing import IO

from stridecare.settings import Settings

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
# A FIT file names itself at bytes 8-11 of its header.
FIT_SIGNATURE = b".FIT"
# Decompressed originals are capped like any file (a gzip bomb must not fill the disk).
_CHUNK = 1 << 16


class OriginalRefused(Exception):
    """The downloaded bytes are not a file we can read (a zip with no FIT in it, a bomb)."""


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", text).lstrip(".")[:100] or "_"


def account_folder(settings: Settings, provider: str, account_key: str) -> Path:
    """``<data_home>/connectors/<provider>/<account>``: the root the files are checked against. Keyed by the
    provider's account, so an account connected again finds the originals it already has."""
    return settings.data_home / "connectors" / _safe_name(provider) / _safe_name(account_key)


def suffix_for(data: bytes) -> str:
    """The file name suffix that the unpacked bytes' content names (FIT, GPX or TCX); ``.fit`` otherwise,
    which the FIT reader then rejects with its own reason."""
    if data[8:12] == FIT_SIGNATURE:
        return ".fit"
    head = data[:2048].lstrip().lower()
    if b"<trainingcenterdatabase" in head:
        return ".tcx"
    if b"<gpx" in head:
        return ".gpx"
    return ".fit"


def original_path(folder: Path, activity_id: str, suffix: str = ".fit") -> Path:
    """Where the activity's file is once whole."""
    return folder / f"{_safe_name(activity_id)}{suffix}"


def existing_original(folder: Path, activity_id: str) -> Path | None:
    """The activity's whole file if an earlier pull wrote it (and died before recording it)."""
    for suffix in (".fit", ".gpx", ".tcx"):
        path = original_path(folder, activity_id, suffix)
        if path.is_file():
            return path
    return None


def unpack(data: bytes, max_bytes: int) -> bytes:
    """The FIT (or other) file inside ``data``: gzip and zip are recognised by their magic bytes and unpacked
    (a zip's first ``.fit`` member, else its only member); anything else is returned as it is."""
    if data.startswith(GZIP_MAGIC):
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            return _read_capped(fh, max_bytes)
    if data.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                fits = [m for m in members if m.filename.lower().endswith(".fit")]
                chosen = fits[0] if fits else members[0] if len(members) == 1 else None
                if chosen is None:
                    raise OriginalRefused(f"the original is a zip without a FIT file ({len(members)} members)")
                with zf.open(chosen) as fh:
                    return _read_capped(fh, max_bytes)
        except zipfile.BadZipFile as exc:
            raise OriginalRefused(f"the original is a damaged zip: {exc}") from exc
    return data


def _read_capped(fh: IO[bytes] | gzip.GzipFile, max_bytes: int) -> bytes:
    out = bytearray()
    try:
        while chunk := fh.read(_CHUNK):
            out += chunk
            if len(out) > max_bytes:
                raise OriginalRefused(f"the original unpacks to more than {max_bytes // (1024 * 1024)} MB")
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise OriginalRefused(f"the original cannot be unpacked: {exc}") from exc
    return bytes(out)


def write_original(path: Path, data: bytes, mtime: float) -> None:
    """Write ``data`` to ``path`` whole or not at all: aside, flushed to disk, then renamed.

    The file's modification time is set to ``mtime`` (in the past): the file is whole by construction, so the
    reader must not take a damaged original for one still being written and wait for it to hold still."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.utime(part, (mtime, mtime))
    os.replace(part, path)
