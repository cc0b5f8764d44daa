"""Copies of a real device's FIT file moved in time: every timestamp shifted by a whole number of days and the
CRCs made right again, so that one real file becomes many distinct runs (new content, new session) for the
benchmarks, instead of generated files that flatter the import.

Only the benchmarks use it; it walks the FIT record structure (definition and data messages, compressed
timestamp headers, developer fields) and rewrites the ``date_time`` fields in place.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.fit_integrity import fit_crc

# (global message number, field number) of the date_time fields moved besides every message's timestamp (253):
# file_id.time_created, session and lap start_time, activity.local_timestamp, timestamp_correlation's local time.
_DATE_FIELDS = {(0, 4), (18, 2), (19, 2), (34, 5), (162, 3)}
_TIMESTAMP = 253
DAY_S = 86_400  # a multiple of 32 s: compressed timestamp headers stay right


class NotFit(ValueError):
    """The bytes are not a FIT file this walker understands (left out of the benchmark)."""


def shifted(data: bytes, seconds: int) -> bytes:
    """``data`` with every date_time field moved by ``seconds`` (a multiple of 32) and its CRCs recomputed."""
    if seconds % 32:
        raise ValueError("shift by a multiple of 32 s, or compressed timestamps go wrong")
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        header = out[pos]
        if header not in (12, 14) or out[pos + 8 : pos + 12] != b".FIT":
            raise NotFit("bad header")
        (size,) = struct.unpack_from("<I", out, pos + 4)
        _walk(out, pos + header, pos + header + size, seconds)
        if header == 14 and out[pos + 12 : pos + 14] != b"\0\0":
            out[pos + 12 : pos + 14] = fit_crc(bytes(out[pos : pos + 12])).to_bytes(2, "little")
        end = pos + header + size
        out[end : end + 2] = fit_crc(bytes(out[pos:end])).to_bytes(2, "little")
        pos = end + 2
    return bytes(out)


def _walk(out: bytearray, pos: int, end: int, seconds: int) -> None:
    definitions: dict[int, tuple[int, str, list[tuple[int, int]], int]] = {}
    while pos < end:
        head = out[pos]
        pos += 1
        if head & 0x80:  # compressed timestamp header: a data message of local type 0-3, offsets stay valid
            local = (head >> 5) & 0x3
            pos = _data(out, pos, definitions, local, seconds)
        elif head & 0x40:
            local = head & 0x0F
            arch = out[pos + 1]
            endian = ">" if arch == 1 else "<"
            (number,) = struct.unpack_from(endian + "H", out, pos + 2)
            count = out[pos + 4]
            fields = [(out[pos + 5 + 3 * i], out[pos + 6 + 3 * i]) for i in range(count)]
            pos += 5 + 3 * count
            dev = 0
            if head & 0x20:
                n_dev = out[pos]
                dev = sum(out[pos + 2 + 3 * i] for i in range(n_dev))
                pos += 1 + 3 * n_dev
            definitions[local] = (number, endian, fields, dev)
        else:
            pos = _data(out, pos, definitions, head & 0x0F, seconds)
    if pos != end:
        raise NotFit("records do not end where the header says")


def _data(
    out: bytearray, pos: int, definitions: dict[int, tuple[int, str, list[tuple[int, int]], int]], local: int, s: int
) -> int:
    if local not in definitions:
        raise NotFit("data before its definition")
    number, endian, fields, dev = definitions[local]
    for field, size in fields:
        if size == 4 and (field == _TIMESTAMP or (number, field) in _DATE_FIELDS):
            (value,) = struct.unpack_from(endian + "I", out, pos)
            if 0x10000000 <= value < 0xFFFFFFFF:  # an absolute time (not device-relative, not invalid)
                struct.pack_into(endian + "I", out, pos, value + s)
        pos += size
    return pos + dev
