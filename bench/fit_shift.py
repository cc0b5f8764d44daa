"""Copies of a real device's FIT file moved in time: every timestamp shifted by a whole number of days and the
CRCs made right again, so that one real file becomes many distinct runs (new content, new session) for the
benchmarks, instead of generated files that flatter the import.

Only the benchmarks use it; it walks the FIT record structure with ``tests/fit_walk.py`` and rewrites the
``date_time`` fields in place. ``NotFit`` (from there) marks a file left out of the benchmark.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fit_walk import Definition, NotFit, messages

from ingest.fit_integrity import fit_crc

# (global message number, field number) of the date_time fields moved besides every message's timestamp (253):
# file_id.time_created, session and lap start_time, activity.local_timestamp, timestamp_correlation's local time.
_DATE_FIELDS = {(0, 4), (18, 2), (19, 2), (34, 5), (162, 3)}
_TIMESTAMP = 253
DAY_S = 86_400  # a multiple of 32 s: compressed timestamp headers stay right


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
    for message in messages(out, pos, end):
        if message.is_data:
            _shift_data(out, message.start + 1, message.definition, seconds)


def _shift_data(out: bytearray, pos: int, definition: Definition, seconds: int) -> None:
    for field, size in definition.fields:
        if size == 4 and (field == _TIMESTAMP or (definition.number, field) in _DATE_FIELDS):
            (value,) = struct.unpack_from(definition.endian + "I", out, pos)
            if 0x10000000 <= value < 0xFFFFFFFF:  # an absolute time (not device-relative, not invalid)
                struct.pack_into(definition.endian + "I", out, pos, value + seconds)
        pos += size
