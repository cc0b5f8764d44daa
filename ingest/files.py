"""The filesystem adapter: safe reading, hashing and quarantining of files that land in watched folders.

Only regular files are ever opened. A FIFO blocks ``open()`` until a writer appears, a device may do anything
when opened, a socket cannot be opened at all: each is refused from ``os.stat`` alone, and the open itself uses
``O_NONBLOCK`` and checks the opened descriptor again, so a file swapped for a FIFO between the check and the
open cannot hang the reader either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat as st_mode
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20
REASON_SUFFIX = ".reason.txt"


class RefusedFile(OSError):
    """A file we will not read (outside its folder, too large, not a regular file). One-line reason.

    An ``OSError``: to a caller that only wants the bytes, a FIFO is as unreadable as a missing file."""


@dataclass(frozen=True, slots=True)
class FileStat:
    """What a rescan compares to decide whether a file changed since we last read it."""

    path: Path
    size: int
    mtime_ns: int


def kind_of(mode: int) -> str | None:
    """``None`` for a regular file, else what it is instead, in words ("a FIFO", "a socket"...)."""
    if st_mode.S_ISREG(mode):
        return None
    if st_mode.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if st_mode.S_ISSOCK(mode):
        return "a socket"
    if st_mode.S_ISCHR(mode) or st_mode.S_ISBLK(mode):
        return "a device"
    if st_mode.S_ISDIR(mode):
        return "a folder"
    if st_mode.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _not_regular(path: Path, kind: str) -> RefusedFile:
    return RefusedFile(f"refused: {path.name} is {kind}, not a regular file")


def check_file(path: Path, *, root: Path | None, max_bytes: int) -> FileStat:
    """Refuse links that lead outside ``root``, non-regular files and files over the size cap (never opens it)."""
    if root is not None:
        real_root = root.resolve()
        real = path.resolve()
        if real != real_root and real_root not in real.parents:
            raise RefusedFile(f"refused: {path.name} is a link leading outside {root}")
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise RefusedFile(f"refused: {path} no longer exists") from exc
    kind = kind_of(st.st_mode)
    if kind is not None:
        raise _not_regular(path, kind)
    if st.st_size > max_bytes:
        raise RefusedFile(
            f"refused: {path.name} is {st.st_size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB cap "
            "(STRIDECARE_MAX_FILE_MB)"
        )
    if st.st_size == 0:
        raise RefusedFile(f"refused: {path.name} is empty")
    return FileStat(path, st.st_size, st.st_mtime_ns)


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading in binary, or ``RefusedFile`` if it is not a regular file; never blocks.

    Checked before the open (a device is not even opened) and again on the descriptor (the name may have been
    swapped meanwhile). ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer;
    it changes nothing for a regular file."""
    kind = kind_of(os.stat(path).st_mode)
    if kind is not None:
        raise _not_regular(path, kind)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = kind_of(os.fstat(fd).st_mode)
        if kind is not None:
            raise _not_regular(path, kind)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path) -> bytes:
    """The whole content of a regular file (see ``open_regular``)."""
    with open_regular(path) as fh:
        return fh.read()


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes: the same content under any name or folder is one import."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomically(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` so that a reader sees either no file or the whole of it."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def reason_file(quarantined: Path) -> Path:
    """The reason file that sits beside a quarantined file."""
    return quarantined.with_name(quarantined.name + REASON_SUFFIX)


def quarantine(path: Path, quarantine_dir: Path, reason: str, when: datetime) -> Path:
    """Move a damaged file out of the inbox, with a ``.reason.txt`` beside it; never overwrite anything.

    The reason is written first, atomically, and the file moved after: whoever sees the quarantined file also
    finds why it is there. The first line is ``<when>\\t<original path>``, which ``take_back`` reads."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / path.name
    n = 1
    while target.exists() or reason_file(target).exists():
        target = quarantine_dir / f"{path.stem}.{n}{path.suffix}"
        n += 1
    write_atomically(reason_file(target), f"{when.isoformat()}\t{path}\n{reason}\n")
    try:
        shutil.move(str(path), target)
    except OSError:
        # Across file systems a move is a copy and a removal: when the removal is refused (a watch mounted
        # read-only) the copy is not a quarantined file, the original still is the file.
        if path.exists():
            target.unlink(missing_ok=True)
        reason_file(target).unlink(missing_ok=True)
        raise
    return target


def changed_since_quarantine(quarantined: Path) -> bool:
    """True if the quarantined file was written to after it was quarantined (its writer was not done).

    The reason file is written just before the move, and a move keeps the file's modification time, so a file
    newer than its reason file changed afterwards."""
    try:
        return quarantined.stat().st_mtime_ns > reason_file(quarantined).stat().st_mtime_ns
    except OSError:
        return False


def original_path(quarantined: Path) -> Path | None:
    """Where a quarantined file came from, as its reason file records it."""
    try:
        first = reason_file(quarantined).read_text(encoding="utf-8").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return None
    _when, sep, original = first.partition("\t")
    return Path(original) if sep and original else None


def take_back(quarantined: Path, roots: list[Path]) -> Path | None:
    """Move a quarantined file that changed afterwards back where it came from, if that is inside one of
    ``roots`` and free; its reason file goes. The new path, or None when it stays."""
    if not changed_since_quarantine(quarantined):
        return None
    original = original_path(quarantined)
    if original is None or original.exists() or original.is_symlink():
        return None
    if not any(original.parent == r or r in original.parents for r in roots):
        return None
    original.parent.mkdir(parents=True, exist_ok=True)
    try:
        # link + unlink, not rename: a rename would replace a file that appeared at the original path meanwhile.
        os.link(quarantined, original)
    except FileExistsError:
        return None
    except OSError:
        if original.exists():
            return None
        shutil.move(str(quarantined), original)
    else:
        quarantined.unlink()
    reason_file(quarantined).unlink(missing_ok=True)
    return original


def iter_files(folder: Path) -> list[Path]:
    """Every file below ``folder`` (following no directory links), sorted for stable order.

    Non-regular files (FIFOs, sockets, devices) are listed too, so that the caller can refuse them with a
    reason; nothing here opens them."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith((".part", ".tmp", ".crdownload", REASON_SUFFIX)):
                continue
            found.append(Path(dirpath) / name)
    return found
