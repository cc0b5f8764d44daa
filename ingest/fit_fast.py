"""The fast FIT scan: the same ``Scan`` as ``ingest.fit``'s fitparse pass, from the native ``fitfast`` decoder.

``fitfast`` (BSD-3-Clause, a binding of the Rust ``rustyfit`` crate, abi3 wheels) decodes a whole file in
memory and returns one message kind at a time as NumPy columns, with CRCs checked. Each kind asked for is one
native pass over the bytes it is given, so only the kinds the file holds are asked for, the small ones from a
copy without records (below), and a file whose sessions are all non-foot sports is answered from its session
messages alone, without building its records.

fitparse stays the reference: this module returns ``None`` ("decode it with fitparse") whenever it could not
give exactly what the fitparse pass would —

* the native decoder refuses the file (damaged, truncated, or a construct it does not read): fitparse then
  gives the same one-line reason the import log always had, or decodes what it can;
* the file is larger than ``MAX_BYTES``: whole-file decoding holds every record in native memory at once, so
  big files keep fitparse's streaming pass and its few MB;
* a developer field bears the name of a native field this scan reads (fitparse never lets one shadow a
  native field; the columns here are keyed by name), or a field description appears where the check below
  cannot see it.

Enum values are named with fitparse's own profile and the header messages (``file_id``) are read by fitparse
itself (it stops after the first few messages), so names and device strings are fitparse's exactly.

The file is decoded once natively: a walk over its message headers (no field is decoded) counts the messages
of each kind and copies every message but the records into a small FIT file of its own; the full decode of
the records checks the whole file's structure and CRCs, and the few other kinds are read from the small copy,
where each costs next to nothing. A file the walk cannot split exactly (a non-record message timed by a
compressed timestamp header, which needs the records' times, or a structure it does not follow) is read kind
by kind from the whole file, as before (``one_pass=False``: the reference the split is tested against).

One quirk is worked around: ``rustyfit`` computes a segment's file CRC without its header when the optional
header CRC is 0 (which the FIT protocol allows and several older Garmin devices write), and so refuses those
files. Their CRCs are checked here (``fit_integrity``) and the header CRC filled in on a copy of the bytes.
"""

from __future__ import annotations

import math
import struct
import warnings
from array import array
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fitparse
import numpy as np
import numpy.typing as npt
from fitparse.profile import FIELD_TYPES

from ingest.fit_common import (
    FIT_EPOCH_NAIVE,
    RECORD_FIELDS,
    RELATIVE_TS_LIMIT,
    SESSION_FIELDS,
    TIMER_STOPS,
    Scan,
    device_name,
    enum_name,
    is_foot,
)
from ingest.fit_integrity import fit_crc

try:
    import fitfast
except ImportError:  # the decoder is a wheel; without one for the platform, fitparse does all the work
    fitfast = None  # type: ignore[assignment]

# Files above these are streamed by fitparse (see the module note). Native decoding holds every message at
# once: 100,000 records (28 hours at 1 Hz) peak at about 90 MB for the whole process, against 60 MB for
# fitparse's stream; an eight-hour run at 1 Hz is about 29,000 records and 1 MB.
MAX_BYTES = 4_000_000
MAX_RECORDS = 100_000

# fitfast gives date_time fields as Unix seconds; FIT counts from 1989-12-31 00:00 UTC.
_FIT_EPOCH_UNIX = 631065600.0
_EVENT_FIELDS = frozenset({"timestamp", "event", "event_type"})
# The enum fields this scan reads, with the profile type fitparse names their values by.
_ENUMS = {"sport": "sport", "sub_sport": "sub_sport", "event": "event", "event_type": "event_type"}
_MOTION_FIELDS = frozenset({"speed", "enhanced_speed", "distance"})
_SESSION_TIMES = frozenset({"timestamp", "start_time"})
# Names a developer field must not have for the name-keyed columns to mean what fitparse's native fields mean.
_SHADOWABLE = RECORD_FIELDS | SESSION_FIELDS | _EVENT_FIELDS | {"system_timestamp", "local_timestamp"}

Columns = dict[str, npt.NDArray[np.float64]]


def available() -> bool:
    """True when the native decoder is installed."""
    return fitfast is not None


def scan(
    path: Path, *, max_bytes: int = MAX_BYTES, max_records: int = MAX_RECORDS, one_pass: bool = True
) -> Scan | None:
    """The fitparse pass's ``Scan`` of ``path``, or None when fitparse must decode it (see the module note).

    A file over ``max_bytes`` bytes or ``max_records`` records is left to fitparse's streaming pass: these bound
    the native decoder's memory (a process with less room to spare may pass lower ones). Raises OSError when
    the file cannot be read, like the fitparse pass. ``one_pass=False`` reads each message kind from the whole
    file (the reference for the split, see the module note).
    """
    if fitfast is None or path.stat().st_size > max_bytes:
        return None
    data = _with_header_crcs(path.read_bytes())
    if data is None:
        return None
    split = _split(data) if one_pass else None
    try:
        if split is None:
            counts = fitfast.message_counts(data)  # decodes the whole file: structure and CRCs checked
            others, checked = data, True
        else:
            counts, others = split
            checked = False  # until the records' full decode (or a count) has read the whole file
        if counts.get("record", 0) > max_records:
            return None
        return _scan_bytes(path, data, others, counts, checked)
    except fitfast.FitDecodeError:
        return None


def _scan_bytes(path: Path, data: bytes, others: bytes, counts: dict[str, int], checked: bool) -> Scan | None:
    """The scan of ``data``, its records from ``data`` and every other kind from ``others`` (``data`` itself, or
    the split copy without records). ``checked``: the whole of ``data`` was decoded natively already; else it
    is now, before anything else reads the file, so a damaged or hostile file meets the native decoder (and
    its memory limit) first, as with a count."""
    sessions = _sessions(fitfast.records(others, "session")) if counts.get("session") else []
    # The sessions alone decide a file whose every session is a non-foot sport: none needs a record.
    non_foot = _all_non_foot(sessions)
    columns: Columns | None = None
    if counts.get("record") and not non_foot:
        columns = fitfast.records(data, "record")  # the whole file decoded: structure and CRCs checked
    elif not checked:
        fitfast.message_counts(data)  # raises FitDecodeError for a damaged file
    result = _file_id(path)
    if result is None:
        return None
    if result.file_type is not None and result.file_type != "activity":
        return result  # FitSource reports it as "not an activity file" from the type alone
    if counts.get("field_description") and _shadows_native(others):
        return None
    result.sessions = sessions
    if non_foot:
        return result  # every session is reported as skipped
    if columns is not None:
        if columns and not _MOTION_FIELDS & columns.keys():
            # Old devices pack speed and distance into compressed_speed_distance, a byte field the columns
            # leave out and only fitparse expands; a file without either gains nothing from the fast scan.
            return None
        _fill_records(result, columns)
    if counts.get("event"):
        result.timer_events = _timer_events(fitfast.records(others, "event"))
    if counts.get("activity"):
        _fill_activity(result, fitfast.records(others, "activity"))
    if counts.get("timestamp_correlation"):
        _fill_correlation(result, fitfast.records(others, "timestamp_correlation"))
    if counts.get("sport"):
        result.sport_msg = _first_sport(fitfast.records(others, "sport"))
    return result


# -- the split: one walk over the message headers --------------------------------------------------------------

# Global message numbers of the kinds this scan counts (FIT profile).
_KIND_NAMES = {
    0: "file_id",
    12: "sport",
    18: "session",
    20: "record",
    21: "event",
    34: "activity",
    162: "timestamp_correlation",
    206: "field_description",
}
_RECORD = 20


def _split(data: bytes) -> tuple[dict[str, int], bytes] | None:
    """The message counts of the kinds this scan reads, and ``data`` without its record messages (every
    definition and every other message kept, in order, one segment per segment, CRCs made anew); None when
    the walk cannot tell the messages apart exactly (see the module note). Nothing is decoded or checked here:
    the records' native decode checks the whole file."""
    segments = _segments(data)
    if segments is None:
        return None
    counts: dict[str, int] = {}
    out = bytearray()
    for pos, header_size, data_size in segments:
        start = pos + header_size
        body = bytearray()
        if not _split_segment(data, start, start + data_size, body, counts):
            return None
        head = bytearray(data[pos : pos + 12])
        head[0] = 12  # no header CRC: the file CRC covers the header
        struct.pack_into("<I", head, 4, len(body))
        segment = bytes(head + body)
        out += segment
        out += fit_crc(segment).to_bytes(2, "little")
    return counts, bytes(out)


def _segments(data: bytes) -> list[tuple[int, int, int]] | None:
    """Each chained segment of ``data`` as (offset, header size, data size); None when they do not tile the
    file (a header that is no FIT header, or a segment running past the end)."""
    segments: list[tuple[int, int, int]] = []
    pos = 0
    size = len(data)
    while pos < size:
        header_size = data[pos]
        if header_size not in (12, 14) or pos + header_size > size or data[pos + 8 : pos + 12] != b".FIT":
            return None
        (data_size,) = struct.unpack_from("<I", data, pos + 4)
        if pos + header_size + data_size + 2 > size:
            return None
        segments.append((pos, header_size, data_size))
        pos += header_size + data_size + 2
    return segments


def _split_segment(data: bytes, pos: int, end: int, out: bytearray, counts: dict[str, int]) -> bool:
    """Walk one segment's messages ``data[pos:end]``: count them, copy all but records to ``out``."""
    sizes = [-1] * 16  # local message type -> its data messages' size (-1: not defined yet)
    kinds = [-1] * 16  # local message type -> global message number
    records = 0
    others: dict[int, int] = {}
    while pos < end:
        header = data[pos]
        if header < 0x10:  # a normal data message header (the most common case: records)
            size = sizes[header]
            if size < 0:
                return False
            following = pos + 1 + size
            kind = kinds[header]
            if kind == _RECORD:
                records += 1
            else:
                others[kind] = others.get(kind, 0) + 1
                out += data[pos:following]
            pos = following
        elif header & 0x80:  # compressed timestamp header: a data message of local type 0..3
            local = (header >> 5) & 0x3
            if sizes[local] < 0 or kinds[local] != _RECORD:
                return False  # its time follows the records' times, which the copy leaves out
            records += 1
            pos += 1 + sizes[local]
        elif header & 0x40 and not header & 0x10:  # a definition message
            if pos + 6 > end:
                return False
            arch = data[pos + 2]
            if arch > 1:
                return False
            kind = int.from_bytes(data[pos + 3 : pos + 5], "big" if arch else "little")
            n_fields = data[pos + 5]
            following = pos + 6 + 3 * n_fields
            if following > end:
                return False
            message_size = sum(data[pos + 7 : following : 3])
            if header & 0x20:  # developer fields follow
                if following >= end:
                    return False
                n_dev = data[following]
                dev_end = following + 1 + 3 * n_dev
                if dev_end > end:
                    return False
                message_size += sum(data[following + 2 : dev_end : 3])
                following = dev_end
            local = header & 0x0F
            sizes[local], kinds[local] = message_size, kind
            out += data[pos:following]
            pos = following
        else:
            return False  # reserved header bits set: left to the decoders
    if pos != end:
        return False
    counts["record"] = counts.get("record", 0) + records
    for kind, n in others.items():
        name = _KIND_NAMES.get(kind)
        if name is not None:
            counts[name] = counts.get(name, 0) + n
    return True


def _file_id(path: Path) -> Scan | None:
    """The file type and device from the first ``file_id`` message, read by fitparse (which stops there)."""
    result = Scan()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fitparse.UncachedFitFile(str(path), check_crc=False)
        try:
            for message in fit:
                if message.name == "file_id":
                    values = message.get_values()
                    result.file_type = enum_name(values.get("type"))
                    result.device = device_name(values)
                    break
        except (fitparse.FitParseError, ValueError, KeyError, TypeError, struct.error, EOFError):
            return None
        finally:
            fit.close()
    return result


def _shadows_native(data: bytes) -> bool:
    """True when a developer field bears the name of a native field this scan reads.

    Field names are strings, which the column form leaves out: the message form builds every message of
    ``data``, so it is given the split copy without records where there is one; paid only by files that carry
    developer fields.
    """
    descriptions = fitfast.parse(data).get("field_description", [])
    return any(d.get("field_name") in _SHADOWABLE for d in descriptions)


def _with_header_crcs(data: bytes) -> bytes | None:
    """``data`` with every zero header CRC filled in, after checking each segment's file CRC here; None when
    the segments do not tile the file or a CRC does not match (fitparse then says why)."""
    segments = _segments(data)
    if segments is None:
        return None
    patched: bytearray | None = None
    for pos, header_size, data_size in segments:
        covered = header_size + data_size
        if header_size == 14 and data[pos + 12 : pos + 14] == b"\0\0":
            stored = int.from_bytes(data[pos + covered : pos + covered + 2], "little")
            if fit_crc(data[pos : pos + covered]) != stored:
                return None
            if patched is None:
                patched = bytearray(data)
            header_crc = fit_crc(data[pos : pos + 12])
            patched[pos + 12 : pos + 14] = header_crc.to_bytes(2, "little")
            # The decoder checks the file CRC over the header too: give it the one of the filled-in header.
            patched[pos + covered : pos + covered + 2] = fit_crc(bytes(patched[pos : pos + covered])).to_bytes(
                2, "little"
            )
    return bytes(patched) if patched is not None else data


# -- columns → the fitparse pass's values -------------------------------------------------------------------


def _value(name: str, raw: float) -> Any:
    """One column value as fitparse's ``_values`` holds it; None when not recorded."""
    if math.isnan(raw):
        return None
    profile_type = _ENUMS.get(name)
    if profile_type is not None:
        number = int(raw)
        named: Any = FIELD_TYPES[profile_type].values.get(number, number)
        return named
    return raw


def _fit_seconds(unix: float) -> float:
    return unix - _FIT_EPOCH_UNIX


def _as_datetime(unix: float) -> datetime | float:
    """A date_time value as fitparse gives it: a naive UTC datetime, or seconds when device-relative."""
    seconds = _fit_seconds(unix)
    if seconds < RELATIVE_TS_LIMIT:
        return seconds
    return FIT_EPOCH_NAIVE + timedelta(seconds=seconds)


def _sessions(columns: Columns) -> list[dict[str, Any]]:
    wanted = [name for name in columns if name in SESSION_FIELDS]
    sessions: list[dict[str, Any]] = []
    n = _length(columns)
    for i in range(n):
        values: dict[str, Any] = {}
        for name in wanted:
            raw = float(columns[name][i])
            if math.isnan(raw):
                continue
            values[name] = _as_datetime(raw) if name in _SESSION_TIMES else _value(name, raw)
        sessions.append(values)
    return sessions


def _all_non_foot(sessions: list[dict[str, Any]]) -> bool:
    if not sessions:
        return False
    for values in sessions:
        if values.get("start_time") is None:
            return False  # its span would start at the first record: the records decide
        if is_foot(enum_name(values.get("sport")) or "generic", enum_name(values.get("sub_sport"))):
            return False
    return True


def _length(columns: Columns) -> int:
    return max((len(col) for col in columns.values()), default=0)


def _nan_column(n: int) -> npt.NDArray[np.float64]:
    return np.full(n, np.nan)


def _fill_records(result: Scan, columns: Columns) -> None:
    n = _length(columns)
    t = columns.get("timestamp")
    if t is None or n == 0:
        return
    keep = ~np.isnan(t)

    def col(name: str) -> npt.NDArray[np.float64]:
        values = columns.get(name)
        return values[keep] if values is not None else _nan_column(int(keep.sum()))

    def preferred(first: str, second: str) -> npt.NDArray[np.float64]:
        a, b = col(first), col(second)
        return np.where(np.isnan(a), b, a)

    # The 16-bit fields first: where the decoder expands them into their 32-bit "enhanced" form it can round
    # down by one unit (1.007 m/s becomes 1.006); fitparse's expansion is exact, so both agree on the 16-bit value.
    cadence = col("cadence")
    fractional = col("fractional_cadence")
    cadence = np.where(np.isnan(fractional), cadence, cadence + fractional)
    records = result.records
    records.t = _array(t[keep] - _FIT_EPOCH_UNIX)
    records.distance = _array(col("distance"))
    records.speed = _array(preferred("speed", "enhanced_speed"))
    records.cadence = _array(cadence)
    records.altitude = _array(preferred("altitude", "enhanced_altitude"))
    records.heart_rate = _array(col("heart_rate"))


def _array(values: npt.NDArray[np.float64]) -> array[float]:
    out = array("d")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return out


def _timer_events(columns: Columns) -> list[tuple[float, bool]]:
    events: list[tuple[float, bool]] = []
    t, kind, kind_type = columns.get("timestamp"), columns.get("event"), columns.get("event_type")
    if t is None or kind is None or kind_type is None:
        return events
    for stamp, event, event_type in zip(t.tolist(), kind.tolist(), kind_type.tolist(), strict=True):
        if math.isnan(stamp) or _value("event", event) != "timer":
            continue
        name = _value("event_type", event_type)
        if name == "start":
            events.append((_fit_seconds(stamp), True))
        elif name in TIMER_STOPS:
            events.append((_fit_seconds(stamp), False))
    return events


def _last(columns: Columns, name: str) -> float | None:
    values = columns.get(name)
    if values is None or not len(values):
        return None
    raw = float(values[-1])
    return None if math.isnan(raw) else raw


def _fill_activity(result: Scan, columns: Columns) -> None:
    # The fitparse pass keeps the last activity message's values.
    stamp = _last(columns, "timestamp")
    result.activity_ts = _fit_seconds(stamp) if stamp is not None else None
    local = _last(columns, "local_timestamp")
    # fitparse gives local_date_time as a naive datetime whatever its size.
    result.activity_local = FIT_EPOCH_NAIVE + timedelta(seconds=_fit_seconds(local)) if local is not None else None


def _fill_correlation(result: Scan, columns: Columns) -> None:
    absolute, relative = columns.get("timestamp"), columns.get("system_timestamp")
    if absolute is None or relative is None:
        return
    for a, r in zip(absolute.tolist(), relative.tolist(), strict=True):
        if math.isnan(a) or math.isnan(r):
            continue
        if _fit_seconds(a) >= RELATIVE_TS_LIMIT:
            result.correlation_offset_s = _fit_seconds(a) - _fit_seconds(r)


def _first_sport(columns: Columns) -> tuple[str, str | None] | None:
    sports, subs = columns.get("sport"), columns.get("sub_sport")
    if sports is None:
        return None
    for i, raw in enumerate(sports.tolist()):
        sport = enum_name(_value("sport", raw))
        if sport is not None:
            sub = enum_name(_value("sub_sport", float(subs[i]))) if subs is not None else None
            return sport, sub
    return None


__all__ = ["MAX_BYTES", "MAX_RECORDS", "available", "scan"]
