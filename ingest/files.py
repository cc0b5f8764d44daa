"""The filesystem adapter: safe reading, hashing and quarantining of files that land in watched folders."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_CHUNK = 1 << 20


class RefusedFile(Exception):
    """A file we will not read (outside its folder, too large, not a regular file). One-line reason."""


@dataclass(frozen=True, slots=True)
class FileStat:
    """What a rescan compares to decide whether a file changed since we last read it."""

    path: Path
    size: int
    mtime_ns: int


def check_file(path: Path, *, root: Path | None, max_bytes: int) -> FileStat:
    """Refuse links that lead outside ``root``, non-regular files and files over the size cap."""
    if root is not None:
        real_root = root.resolve()
        real = path.resolve()
        if real != real_root and real_root not in real.parents:
            raise RefusedFile(f"refused: {path.name} is a link leading outside {root}")
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise RefusedFile(f"refused: {path} no longer exists") from exc
    if not path.is_file():
        raise RefusedFile(f"refused: {path.name} is not a regular file")
    if st.st_size > max_bytes:
        raise RefusedFile(
            f"refused: {path.name} is {st.st_size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB cap "
            "(STRIDECARE_MAX_FILE_MB)"
        )
    if st.st_size == 0:
        raise RefusedFile(f"refused: {path.name} is empty")
    return FileStat(path, st.st_size, st.st_mtime_ns)


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes: the same content under any name or folder is one import."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def quarantine(path: Path, quarantine_dir: Path, reason: str, when: datetime) -> Path:
    """Move a damaged file out of the inbox, with a ``.reason.txt`` beside it; never overwrite anything."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / path.name
    n = 1
    while target.exists():
        target = quarantine_dir / f"{path.stem}.{n}{path.suffix}"
        n += 1
    shutil.move(str(path), target)
    reason_file = target.with_name(target.name + ".reason.txt")
    reason_file.write_text(f"{when.isoformat()}\t{path}\n{reason}\n")
    return target


def iter_files(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (following no directory links), sorted for stable order."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith((".part", ".tmp", ".crdownload", ".reason.txt")):
                continue
            found.append(Path(dirpath) / name)
    return found
