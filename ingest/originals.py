"""Kept originals: every imported file's bytes, stored once by content under ``<data home>/originals``.

A conversion fix or a model change is then re-applied to the athlete's history from the very bytes that were
imported (``stridecare recompute``), even after the watch folder was emptied. Each distinct content is copied
once (not hard-linked: a file rewritten in place in the inbox would change the kept original with it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FOLDER = "originals"


def _suffix(name: str) -> str:
    """The file's type suffixes (``.fit``, ``.fit.gz``), lowercased: sources are chosen by them."""
    lower = name.lower()
    for double in (".fit.gz", ".gpx.gz", ".tcx.gz"):
        if lower.endswith(double):
            return double
    return Path(lower).suffix[:16]


def relative_path(digest: str, name: str) -> str:
    """Where the original of content ``digest`` (a file called ``name``) is kept, relative to the data home."""
    return f"{FOLDER}/{digest[:2]}/{digest}{_suffix(name)}"


def keep(data_home: Path, path: Path, digest: str) -> str | None:
    """Keep ``path``'s bytes as the original of ``digest``; returns where (relative to ``data_home``), or None
    when it could not be kept (the file vanished, a full disk): the run is stored all the same."""
    relative = relative_path(digest, path.name)
    target = data_home / relative
    if target.exists():
        return relative
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        aside = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, aside)
        os.replace(aside, target)
    except OSError:
        return None
    return relative


def original(data_home: Path, relative: str) -> Path:
    """The kept original's path."""
    return data_home / relative
