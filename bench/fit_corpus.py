"""The shared FIT corpus of the decoding and ingest benchmarks: its distinct files and the bare-fitparse floor."""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "fit"


def distinct_files(corpus: Path) -> list[Path]:
    """One path per distinct FIT file content below ``corpus`` (the corpus keeps byte-identical copies)."""
    seen: dict[str, Path] = {}
    for path in sorted(corpus.rglob("*")):
        if path.is_file() and path.suffix.lower() == ".fit":
            seen.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return list(seen.values())


def bare_fitparse(path: Path) -> None:
    """Read every message of ``path`` with fitparse alone, the floor every decoder is compared with."""
    import fitparse

    # Damaged files count as decoded work here.
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        for _ in fitparse.UncachedFitFile(str(path)):
            pass
