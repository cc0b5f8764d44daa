"""Known-complete FIT files: segments tile the file and every CRC matches; anything else is "not known"."""

from __future__ import annotations

import gzip
import os
import random
import struct
import warnings
from datetime import UTC, datetime
from pathlib import Path

import fitparse
import pytest
from fitgen import write_activity, write_chained
from fitparse.records import Crc

from ingest.decode import known_complete
from ingest.fit import FitSource
from ingest.fit_integrity import fit_bytes_complete, fit_crc, fit_file_complete

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def fit_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fit") / "run.fit"
    write_activity(path, start=START, duration_s=1800)
    return path.read_bytes()


def _fitparse_reads(data: bytes, tmp_path: Path) -> bool:
    """The decoder's own verdict, CRC checks on: every True of ours must also pass here."""
    path = tmp_path / "check.fit"
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fitparse.UncachedFitFile(str(path), check_crc=True)
            for _ in fit:
                pass
            fit.close()
    except fitparse.FitParseError:
        return False
    return True


def _with_14_byte_header(data: bytes, header_crc: int | None) -> bytes:
    """The same single-segment file with a 14-byte header (fit_tool writes 12). ``header_crc`` None = correct."""
    assert data[0] == 12
    head = bytearray(data[:12])
    head[0] = 14
    crc = fit_crc(bytes(head)) if header_crc is None else header_crc
    body = bytes(head) + struct.pack("<H", crc) + data[12:-2]
    return body + struct.pack("<H", fit_crc(body))


def test_crc_matches_the_sdk_nibble_definition_as_fitparse_implements_it() -> None:
    rng = random.Random(7)
    for n in (0, 1, 2, 3, 255, 256, 4097):
        data = rng.randbytes(n)
        assert fit_crc(data) == Crc.calculate(data), n
    data = rng.randbytes(10_001)
    # Fed in odd-sized pieces the result is the same: chunks only matter for speed.
    crc = 0
    for i in range(0, len(data), 333):
        crc = fit_crc(data[i : i + 333], crc)
    assert crc == fit_crc(data) == Crc.calculate(data)


def test_a_generated_file_is_complete(fit_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "run.fit"
    path.write_bytes(fit_bytes)
    assert fit_file_complete(path)
    assert fit_bytes_complete(fit_bytes)
    assert FitSource().is_complete(path)
    assert known_complete(path)


def test_no_proper_prefix_of_a_file_is_complete(fit_bytes: bytes) -> None:
    # Every cut: mid-header, header only, mid-data, data without its CRC, half a CRC.
    named = {"mid-header": 5, "header only": 12, "mid-data": len(fit_bytes) // 2, "no CRC": len(fit_bytes) - 2}
    for what, n in named.items():
        assert not fit_bytes_complete(fit_bytes[:n]), what
    assert not any(fit_bytes_complete(fit_bytes[:n]) for n in range(len(fit_bytes)))


def test_a_truncated_file_on_disk_is_not_complete(fit_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "cut.fit"
    for n in (1, 11, 13, 100, len(fit_bytes) - 2, len(fit_bytes) - 1):
        path.write_bytes(fit_bytes[:n])
        assert not fit_file_complete(path), n


def test_one_flipped_byte_anywhere_is_not_complete(fit_bytes: bytes) -> None:
    rng = random.Random(3)
    # Header (size, data size, signature), data, and both CRC bytes.
    positions = [0, 1, 4, 5, 7, 8, 11, len(fit_bytes) // 2, len(fit_bytes) - 2, len(fit_bytes) - 1]
    positions += rng.sample(range(12, len(fit_bytes) - 2), 40)
    for pos in positions:
        damaged = bytearray(fit_bytes)
        damaged[pos] ^= 0x01
        assert not fit_bytes_complete(bytes(damaged)), pos


def test_chained_files_are_complete_and_agree_with_fitparse(fit_bytes: bytes, tmp_path: Path) -> None:
    other = tmp_path / "other.fit"
    write_activity(other, start=START.replace(day=3), duration_s=900)
    first = tmp_path / "first.fit"
    first.write_bytes(fit_bytes)
    chained = write_chained([first, other], tmp_path / "chained.fit")
    assert fit_file_complete(chained)
    assert _fitparse_reads(chained.read_bytes(), tmp_path)
    # Odd, tiny chunks exercise the CRC carried across reads inside a segment.
    assert fit_file_complete(chained, chunk_size=1001)
    data = chained.read_bytes()
    assert not fit_bytes_complete(data[:-1])
    assert not fit_bytes_complete(data[: len(fit_bytes) + 5])  # second header cut short
    # Known limitation, by construction: a chain cut exactly after a whole segment is a complete file.
    assert fit_bytes_complete(data[: len(fit_bytes)])


def test_trailing_bytes_are_not_complete(fit_bytes: bytes) -> None:
    for tail in (b"\0", b"\0\0", b"garbage!" * 10, fit_bytes[:20], os.urandom(1000)):
        assert not fit_bytes_complete(fit_bytes + tail), tail[:8]


def test_a_zero_file_crc_means_unknown(fit_bytes: bytes, tmp_path: Path) -> None:
    zeroed = fit_bytes[:-2] + b"\0\0"
    assert not fit_bytes_complete(zeroed)
    assert not _fitparse_reads(zeroed, tmp_path)  # fitparse accepts 0 only for the header CRC


def test_a_14_byte_header_is_checked_like_fitparse_does(fit_bytes: bytes, tmp_path: Path) -> None:
    good = _with_14_byte_header(fit_bytes, None)
    unwritten = _with_14_byte_header(fit_bytes, 0)
    wrong = _with_14_byte_header(fit_bytes, 0x1234)
    assert fit_bytes_complete(good) and _fitparse_reads(good, tmp_path)
    assert fit_bytes_complete(unwritten) and _fitparse_reads(unwritten, tmp_path)
    assert not fit_bytes_complete(wrong) and not _fitparse_reads(wrong, tmp_path)
    assert fit_bytes_complete(good + fit_bytes)  # mixed header sizes in one chain
    assert not fit_bytes_complete(good[:13])


def test_files_that_are_not_fit_are_not_complete(fit_bytes: bytes, tmp_path: Path) -> None:
    gz = tmp_path / "run.fit.gz"
    gz.write_bytes(gzip.compress(fit_bytes))
    text = tmp_path / "notes.fit"
    text.write_text("this is not a FIT file, just text long enough to hold a header\n")
    empty = tmp_path / "empty.fit"
    empty.write_bytes(b"")
    assert not fit_file_complete(gz)
    assert not known_complete(gz)  # the gzip source cannot tell: it has no is_complete
    assert not fit_file_complete(text)
    assert not fit_file_complete(empty)
    assert not fit_bytes_complete(os.urandom(5000))
    bad_signature = bytearray(fit_bytes)
    bad_signature[8:12] = b"XFIT"
    assert not fit_bytes_complete(bytes(bad_signature))
    odd_header = bytearray(fit_bytes)
    odd_header[0] = 16
    assert not fit_bytes_complete(bytes(odd_header))


def test_unreadable_paths_are_not_complete(fit_bytes: bytes, tmp_path: Path) -> None:
    assert not fit_file_complete(tmp_path / "missing.fit")
    assert not fit_file_complete(tmp_path)  # a directory
    gpx = tmp_path / "run.gpx"
    gpx.write_bytes(fit_bytes)
    assert not known_complete(gpx)  # the GPX source has no completeness check
    assert not known_complete(tmp_path / "run.txt")  # no source at all


def test_a_two_megabyte_chain_is_checked_in_chunks(fit_bytes: bytes, tmp_path: Path) -> None:
    # No timing asserted: this only runs the CRC over a watch-sized file (≈ 2 MB, ~80 segments).
    path = tmp_path / "big.fit"
    copies = 2_000_000 // len(fit_bytes) + 1
    with path.open("wb") as fh:
        for _ in range(copies):
            fh.write(fit_bytes)
    assert fit_file_complete(path)
    with path.open("r+b") as fh:
        fh.seek(path.stat().st_size - 100)
        fh.write(b"\xff")
    assert not fit_file_complete(path)
