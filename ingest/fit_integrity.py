"""Is a FIT file known to be complete? A structural walk plus the file CRCs, without decoding any message.

A FIT file is self-describing: each segment is a header (byte 0 = header size, 12 or 14; bytes 4..7 = data
size, uint32 little-endian; bytes 8..11 = ``.FIT``), ``data size`` bytes of records, then a 2-byte file CRC
(little-endian, the FIT SDK's CRC-16 over that segment's header and data). Chained files are several segments
back to back. The watcher uses this to hand a file on as soon as it is whole instead of waiting for its size
to hold still.

``fit_file_complete`` is True only when the segments tile the file exactly and every segment's CRC matches.
False means "not known complete" (still being written, not FIT, damaged, unreadable), never "damaged": the
caller then falls back to waiting. A stored file CRC of 0 counts as unknown (False) — a writer that
pre-allocates the file, or has not yet written the CRC, leaves zeros there — although fitparse tolerates a
zero only for the optional *header* CRC. A 14-byte header's own CRC must match when it is non-zero, as
fitparse requires.

The structural walk reads only 14 bytes per segment plus its 2 CRC bytes, so a partial file is rejected in
microseconds; only a file whose segments already tile it is CRC'd, in chunks (never whole in memory).
"""

from __future__ import annotations

import io
import os
import struct
import sys
from array import array
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

from ingest.files import open_regular

# The FIT SDK's nibble table (FitCRC_Get16); everything below is derived from it.
# fmt: off
_NIBBLE_TABLE = (
    0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401,
    0xA001, 0x6C00, 0x7800, 0xB401, 0x5000, 0x9C01, 0x8801, 0x4400,
)
# fmt: on
_HEADER_SIZES = frozenset({12, 14})
_SIGNATURE = b".FIT"
# Even, so that every chunk but a segment's last splits into whole 16-bit words.
_CHUNK = 1 << 16


def _nibble_crc_byte(crc: int, byte: int) -> int:
    """One byte through the SDK's two nibble steps, low nibble first (the reference definition)."""
    tmp = _NIBBLE_TABLE[crc & 0xF]
    crc = (crc >> 4) & 0x0FFF
    crc = crc ^ tmp ^ _NIBBLE_TABLE[byte & 0xF]
    tmp = _NIBBLE_TABLE[crc & 0xF]
    crc = (crc >> 4) & 0x0FFF
    return crc ^ tmp ^ _NIBBLE_TABLE[(byte >> 4) & 0xF]


# crc' = (crc >> 8) ^ _BYTE_TABLE[(crc ^ byte) & 0xFF]: the usual table form of this reflected CRC-16 (poly
# 0xA001). Entry b is the nibble CRC of the single byte b from 0, which is what the table form needs.
_BYTE_TABLE: tuple[int, ...] = tuple(_nibble_crc_byte(0, b) for b in range(256))


@cache
def _word_table() -> array[int]:
    """Two bytes per lookup: the register is 16 bits wide, so after xoring in a little-endian word the next
    state depends on that 16-bit value alone. About 2.5× the speed of the byte table in CPython; 128 KiB, built
    on first use (~15 ms) so importing this module stays free."""
    table = array("H", bytes(2 * 65536))
    byte_table = _BYTE_TABLE
    for v in range(65536):
        u = (v >> 8) ^ byte_table[v & 0xFF]
        table[v] = (u >> 8) ^ byte_table[u & 0xFF]
    return table


def fit_crc(data: bytes, crc: int = 0) -> int:
    """The FIT CRC-16 of ``data``, continuing from ``crc`` (so a long stream can be fed in pieces)."""
    even = len(data) & ~1
    if even:
        words = array("H", data[:even] if even != len(data) else data)
        if sys.byteorder == "big":  # FIT words are little-endian: low byte is the earlier one
            words.byteswap()
        table = _word_table()
        for w in words:
            crc = table[crc ^ w]
    if even != len(data):
        crc = (crc >> 8) ^ _BYTE_TABLE[(crc ^ data[-1]) & 0xFF]
    return crc


@dataclass(frozen=True, slots=True)
class _Segment:
    start: int  # offset of the header
    covered: int  # header + data bytes, the span the file CRC covers
    stored_crc: int


def _read_exact(fh: BinaryIO, offset: int, n: int) -> bytes | None:
    fh.seek(offset)
    data = fh.read(n)
    return data if len(data) == n else None


def _segments(fh: BinaryIO, size: int) -> list[_Segment] | None:
    """The segments if their headers tile ``size`` bytes exactly and each has a non-zero stored CRC."""
    if size <= 0:
        return None
    out: list[_Segment] = []
    pos = 0
    while pos < size:
        head = _read_exact(fh, pos, min(14, size - pos))
        if head is None or len(head) < 12:
            return None
        header_size = head[0]
        if header_size not in _HEADER_SIZES or head[8:12] != _SIGNATURE or len(head) < header_size:
            return None
        if header_size == 14:
            # fitparse checks the optional header CRC and accepts 0 as "not written"; do the same, so that a
            # True here never precedes a CRC error from the decoder.
            header_crc = int.from_bytes(head[12:14], "little")
            if header_crc != 0 and header_crc != fit_crc(head[:12]):
                return None
        (data_size,) = struct.unpack_from("<I", head, 4)
        covered = header_size + data_size
        end = pos + covered + 2
        if end > size:
            return None  # still being written (or cut short)
        crc_bytes = _read_exact(fh, pos + covered, 2)
        if crc_bytes is None:
            return None
        stored = int.from_bytes(crc_bytes, "little")
        if stored == 0:
            return None  # not written yet, or pre-allocated zeros: unknown
        out.append(_Segment(pos, covered, stored))
        pos = end
    return out


def _segment_crc_matches(fh: BinaryIO, segment: _Segment, chunk_size: int) -> bool:
    fh.seek(segment.start)
    remaining = segment.covered
    crc = 0
    while remaining > 0:
        chunk = fh.read(min(chunk_size, remaining))
        if not chunk:
            return False  # shrank under us
        crc = fit_crc(chunk, crc)
        remaining -= len(chunk)
        # A short read of odd length would leave the word alignment to fit_crc's byte tail, which is still
        # correct: fit_crc handles any length, chunk sizes only matter for speed.
    return crc == segment.stored_crc


def _stream_complete(fh: BinaryIO, size: int, chunk_size: int) -> bool:
    segments = _segments(fh, size)
    if segments is None:
        return False
    return all(_segment_crc_matches(fh, segment, chunk_size) for segment in segments)


def fit_bytes_complete(data: bytes) -> bool:
    """``fit_file_complete`` for bytes already in memory."""
    return _stream_complete(io.BytesIO(data), len(data), _CHUNK)


def fit_file_complete(path: Path, *, chunk_size: int = _CHUNK) -> bool:
    """True only if ``path`` is a whole FIT file (or chain of them) whose every file CRC matches.

    Any OSError is False, and so is anything but a regular file (opened without blocking: a FIFO never holds
    the caller). The file's size is taken once when it is opened and checked again at the end: a file that grew
    meanwhile has bytes the walk did not account for, so it is not known complete. The CRC reads at most
    ``chunk_size`` bytes at a time, which bounds the memory the check holds; the verdict never depends on it.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if not _stream_complete(fh, size, chunk_size):
                return False
            return os.fstat(fh.fileno()).st_size == size
    except OSError:
        return False


# More messages than any real activity holds: a day at one record a second is under 100,000 records (plus laps,
# events, HRV), so a million is several days of 1 Hz recording. Without a bound, a file of minimal records
# (one byte each, valid CRC) costs the decoder hundreds of bytes and ~12 µs per record: 8 MB took 2.2 GB, 98 s.
MAX_FIT_MESSAGES = 1_000_000


class TooManyMessages(ValueError):
    """A FIT file holds more messages than ``MAX_FIT_MESSAGES``."""


def _count_segment(data: bytes, start: int, end: int, limit: int, count: int) -> int:
    """Messages in one segment's records ``data[start:end]`` added to ``count``; stops at a header it cannot
    size (the decoder then reports the damage) or once ``limit`` is passed."""
    sizes: dict[int, int] = {}  # local message type -> data message size
    pos = start
    while pos < end:
        header = data[pos]
        pos += 1
        if header & 0x80:  # compressed timestamp header: a data message of local type 0..3
            size = sizes.get((header >> 5) & 0x3)
            if size is None:
                return count
            pos += size
        elif header & 0x40:  # definition message
            if pos + 5 > end:
                return count
            n_fields = data[pos + 4]
            pos += 5
            size = sum(data[pos + 3 * i + 1] for i in range(n_fields) if pos + 3 * i + 1 < end)
            pos += 3 * n_fields
            if header & 0x20 and pos < end:  # developer fields follow
                n_dev = data[pos]
                pos += 1
                size += sum(data[pos + 3 * i + 1] for i in range(n_dev) if pos + 3 * i + 1 < end)
                pos += 3 * n_dev
            sizes[header & 0x0F] = size
        else:
            size = sizes.get(header & 0x0F)
            if size is None:
                return count
            pos += size
        count += 1
        if count > limit:
            raise TooManyMessages(f"too many records: over {limit:,} messages, more than any activity holds")
    return count


def check_message_count(path: Path, limit: int = MAX_FIT_MESSAGES) -> None:
    """Raise ``TooManyMessages`` if the FIT file at ``path`` holds more than ``limit`` messages.

    A walk over the record headers and definitions only (no field is decoded). Every message takes at least one
    byte, so a file smaller than ``limit`` bytes is let through unread. Malformed structure ends the count
    quietly: reporting damage is the decoder's job."""
    with open_regular(path) as fh:
        if os.fstat(fh.fileno()).st_size <= limit:
            return
        data = fh.read()
    count = 0
    pos = 0
    while pos + 12 <= len(data):
        header_size = data[pos]
        if header_size not in _HEADER_SIZES or data[pos + 8 : pos + 12] != _SIGNATURE:
            return
        (data_size,) = struct.unpack_from("<I", data, pos + 4)
        start = pos + header_size
        end = min(start + data_size, len(data))
        count = _count_segment(data, start, end, limit, count)
        pos = start + data_size + 2


__all__ = [
    "MAX_FIT_MESSAGES",
    "TooManyMessages",
    "check_message_count",
    "fit_bytes_complete",
    "fit_crc",
    "fit_file_complete",
]
