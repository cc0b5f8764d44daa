"""Synthetic FIT activity files for the project's own fixtures, written with ``fit_tool`` (an encoder).

Typical use::

    info = write_activity(tmp / "run.fit", start=datetime(2026, 3, 2, 6, 30, tzinfo=UTC),
                          duration_s=3000, speed_mps=3.333, cadence_rpm=85)
    info.steps      # the true step count of what was written (2 × 85 × 3000 / 60 = 8500)

    write_activity(path, start=..., multisport=[
        Segment("cycling", duration_s=1800, speed_mps=8, cadence_rpm=90),
        Segment("running", duration_s=1200, speed_mps=3.2, cadence_rpm=86, pauses=[(600, 60)]),
    ])

Files carry file_id, device_info, timer start/stop events (stop/start around every pause), records (none
during pauses), one lap and one session per segment, and an activity message with local time. ``cadence_rpm``
is written as-is into ``record.cadence`` (+ ``fractional_cadence``): strides per minute normally, or steps
per minute to exercise the unit trap. Timestamps are whole seconds, as FIT stores them.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import os
import pickle
import shutil
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fit_tool.definition_message import DefinitionMessage
from fit_tool.field import Field
from fit_tool.fit_file_builder import FitFileBuilder
from fit_tool.fit_file_header import FitFileHeader
from fit_tool.profile.messages.activity_message import ActivityMessage
from fit_tool.profile.messages.device_info_message import DeviceInfoMessage
from fit_tool.profile.messages.event_message import EventMessage
from fit_tool.profile.messages.file_id_message import FileIdMessage
from fit_tool.profile.messages.lap_message import LapMessage
from fit_tool.profile.messages.record_message import RecordMessage
from fit_tool.profile.messages.session_message import SessionMessage
from fit_tool.profile.profile_type import Activity, Event, EventType, FileType, Manufacturer, Sport, SubSport
from fit_tool.utils.crc import crc16

FIT_EPOCH_UNIX_S = 631065600  # 1989-12-31T00:00:00Z
# A folder (set by the test session) where written files are kept by their arguments: fit_tool needs about
# 1 s for a 2-hour file, and several tests, and the worker processes some of them start, write the same ones.
CACHE_ENV = "STRIDECARE_TEST_FITGEN_CACHE"

Altitude = Callable[[float], float]  # seconds since the segment's start → metres


@dataclass(frozen=True)
class Segment:
    """One session of an activity (a whole run, or one leg of a multisport file)."""

    sport: str = "running"
    sub_sport: str | None = None
    duration_s: int = 1800  # timer time, pauses excluded
    speed_mps: float = 3.0
    cadence_rpm: float | None = 85.0  # written raw into record.cadence; None = no cadence field at all
    pauses: Sequence[tuple[int, int]] = ()  # (timer seconds into the segment, pause length s)
    altitude: Altitude | None = None
    total_strides: float | None = None  # device total to write; None = the true count; use write_total_strides
    write_total_strides: bool = True
    include_records: bool = True
    sample_interval_s: int = 1
    heart_rate_bpm: tuple[int, int] | None = None  # (average, maximum) written on lap and session
    # (first, last) bpm written on every record, rising evenly over the segment; None = no record heart rate
    record_heart_rate_bpm: tuple[int, int] | None = None


@dataclass
class SegmentInfo:
    """What was written for one segment: the truth a decoder should recover."""

    sport: str
    sub_sport: str | None
    start: datetime
    elapsed_s: float
    timer_s: float
    distance_m: float
    steps: float  # true steps (2 × cadence unless cadence_rpm was already > 120) over timer time
    ascent_m: float
    descent_m: float


@dataclass
class ActivityInfo:
    """Summary of a written file."""

    path: Path
    start: datetime
    end: datetime
    segments: list[SegmentInfo] = field(default_factory=list)

    @property
    def steps(self) -> float:
        """True steps of all foot segments."""
        return sum(s.steps for s in self.segments if s.sport in ("running", "walking", "hiking"))

    @property
    def distance_m(self) -> float:
        """Total distance of all segments."""
        return sum(s.distance_m for s in self.segments)

    @property
    def timer_s(self) -> float:
        """Total timer time of all segments."""
        return sum(s.timer_s for s in self.segments)


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _enum(enum_type: type, name: str | None) -> object:
    if name is None:
        return None
    return enum_type[name.upper()]


def _steps_per_min(cadence_rpm: float) -> float:
    # Mirrors the model's unit trap: a raw value above 120 is already steps per minute.
    return cadence_rpm if cadence_rpm > 120 else 2.0 * cadence_rpm


def _write_activity(
    path: Path | str,
    *,
    start: datetime,
    duration_s: int = 1800,
    speed_mps: float = 3.0,
    cadence_rpm: float | None = 85.0,
    sport: str = "running",
    sub_sport: str | None = None,
    sample_interval_s: int = 1,
    pauses: Sequence[tuple[int, int]] = (),
    altitude: Altitude | None = None,
    include_cadence: bool = True,
    include_records: bool = True,
    total_strides: float | None = None,
    write_total_strides: bool = True,
    multisport: Sequence[Segment] | None = None,
    heart_rate_bpm: tuple[int, int] | None = None,
    record_heart_rate_bpm: tuple[int, int] | None = None,
    utc_offset_s: int | None = 0,
    manufacturer: str = "development",
    product: int = 1,
) -> ActivityInfo:
    """Write a valid FIT activity file and return what it contains.

    A single run is described by the keyword arguments; ``multisport`` (a list of ``Segment``) replaces them
    and writes one session per segment, back to back. ``start`` must be timezone-aware. ``utc_offset_s`` sets
    the activity's local timestamp (None leaves it out).
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    start = start.replace(microsecond=0)
    segments = (
        list(multisport)
        if multisport
        else [
            Segment(
                sport=sport,
                sub_sport=sub_sport,
                duration_s=duration_s,
                speed_mps=speed_mps,
                cadence_rpm=cadence_rpm if include_cadence else None,
                pauses=pauses,
                altitude=altitude,
                total_strides=total_strides,
                write_total_strides=write_total_strides,
                include_records=include_records,
                sample_interval_s=sample_interval_s,
                heart_rate_bpm=heart_rate_bpm,
                record_heart_rate_bpm=record_heart_rate_bpm,
            )
        ]
    )

    builder = _Builder(auto_define=True, min_string_size=16)
    file_id = FileIdMessage()
    file_id.type = FileType.ACTIVITY
    file_id.manufacturer = Manufacturer[manufacturer.upper()].value
    file_id.product = product
    file_id.serial_number = 0x1234_5678
    file_id.time_created = _ms(start)
    builder.add(file_id)

    device = DeviceInfoMessage()
    device.timestamp = _ms(start)
    device.manufacturer = Manufacturer[manufacturer.upper()].value
    device.product = product
    device.software_version = 1.0
    builder.add(device)

    info = ActivityInfo(path=Path(path), start=start, end=start)
    laps: list[LapMessage] = []
    sessions: list[SessionMessage] = []
    clock = start
    for index, seg in enumerate(segments):
        seg_info, clock = _write_segment(builder, seg, clock, index, laps, sessions)
        info.segments.append(seg_info)
    for lap in laps:
        builder.add(lap)
    for session in sessions:
        builder.add(session)

    activity = ActivityMessage()
    activity.timestamp = _ms(clock)
    activity.total_timer_time = info.timer_s
    activity.num_sessions = len(sessions)
    activity.type = Activity.MANUAL
    activity.event = Event.ACTIVITY
    activity.event_type = EventType.STOP
    if utc_offset_s is not None:
        activity.local_timestamp = int(clock.timestamp()) - FIT_EPOCH_UNIX_S + utc_offset_s
    builder.add(activity)

    info.end = clock
    Path(path).write_bytes(builder.to_bytes())
    return info


@functools.wraps(_write_activity)
def write_activity(path: Path | str, **kwargs: object) -> ActivityInfo:
    cache = os.environ.get(CACHE_ENV)
    altitudes = [kwargs.get("altitude")] + [seg.altitude for seg in kwargs.get("multisport") or ()]  # type: ignore[attr-defined]
    if not cache or any(a is not None for a in altitudes):
        # No cache folder, or an altitude function: a function has no stable identity to key a file by.
        return _write_activity(path, **kwargs)  # type: ignore[arg-type]
    key = hashlib.sha256(repr(sorted(kwargs.items())).encode()).hexdigest()[:32]
    data_file, info_file = Path(cache) / f"{key}.fit", Path(cache) / f"{key}.info"
    if data_file.exists() and info_file.exists():
        shutil.copyfile(data_file, path)
        return replace(copy.deepcopy(pickle.loads(info_file.read_bytes())), path=Path(path))
    info = _write_activity(path, **kwargs)  # type: ignore[arg-type]
    # Written aside and renamed: two processes writing the same entry at once leave one whole copy.
    tmp = Path(cache) / f"{key}.{os.getpid()}.tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, data_file)
    tmp.write_bytes(pickle.dumps(info))
    os.replace(tmp, info_file)
    return info


_RECORD_PROTOTYPE = RecordMessage()
# The record fields that _write_segment's record() sets, by the names of the properties it sets them through.
_RECORD_FIELDS_SET = frozenset(
    f.field_id
    for f in _RECORD_PROTOTYPE.fields
    if f.name
    in {"timestamp", "distance", "enhanced_speed", "cadence", "fractional_cadence", "enhanced_altitude", "heart_rate"}
)


def _fresh_record() -> RecordMessage:
    """A blank record message that encodes as ``RecordMessage()`` does, at a small part of the cost.

    Building a record's 84 field descriptions takes three quarters of fit_tool's time on a long file. A copy
    owns the fields fitgen sets and shares the others, which stay unset and are never encoded.
    """
    msg: RecordMessage = object.__new__(RecordMessage)
    msg.__dict__.update(_RECORD_PROTOTYPE.__dict__)
    fields = []
    for proto in _RECORD_PROTOTYPE.fields:
        if proto.field_id in _RECORD_FIELDS_SET:
            field: Field = object.__new__(Field)
            field.__dict__.update(proto.__dict__)
            field.encoded_values = list(proto.encoded_values)
            fields.append(field)
        else:
            fields.append(proto)
    msg.fields = fields
    msg.developer_fields = []
    return msg


# Off only in the test that holds the packed records to fit_tool's own encoding, byte for byte.
PACK_RECORDS = True
_RECORD_FIELDS_BY_NAME = {f.name: f for f in _RECORD_PROTOTYPE.fields}


class _Packer:
    """Packs record messages of one set of fields under one definition, as fit_tool's DataMessage would."""

    def __init__(self, definition: DefinitionMessage, names: tuple[str, ...]) -> None:
        self.definition = definition
        by_id = {_RECORD_FIELDS_BY_NAME[name].field_id: name for name in names}
        order = [fd.field_id for fd in definition.field_definitions]
        sizes_fit = all(
            fd.size == _RECORD_FIELDS_BY_NAME[by_id[fd.field_id]].base_type.size
            for fd in definition.field_definitions
            if fd.field_id in by_id
        )
        # Only a definition of exactly these fields, each one value wide: anything else takes fit_tool's path.
        self.usable = sizes_fit and sorted(order) == sorted(by_id) and not definition.developer_field_definitions
        self.fields = [_RECORD_FIELDS_BY_NAME[by_id[i]] for i in order if i in by_id]
        self.names = [by_id[i] for i in order if i in by_id]
        header = definition.local_id & 0x0F  # a normal data record's header
        self.header = bytes([header])
        self.struct = struct.Struct("<" + "".join(f.base_type.struct_format for f in self.fields))

    def pack(self, values: dict[str, float | int]) -> bytes | None:
        """The record's bytes, or None where fit_tool must judge a value (out of range, invalid)."""
        encoded = []
        for field_, name in zip(self.fields, self.names, strict=True):
            value = field_.encode_value(values[name])
            if value is None or not field_.base_type.is_valid(value):
                return None
            encoded.append(value)
        return self.header + self.struct.pack(*encoded)


class _Builder(FitFileBuilder):  # type: ignore[misc]
    """fit_tool's builder, with the records of a long file packed here: fit_tool builds and validates each
    message field by field (about 0.3 ms a record, the most of this module's time in the suite), and the
    bytes are the same (tests/test_fitgen.py)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._packers: dict[tuple[str, ...], _Packer] = {}

    def add_record(self, values: dict[str, float | int]) -> None:
        """Add one record message with these field values (by fit_tool's property names)."""
        key = tuple(values)
        packer = self._packers.get(key)
        if PACK_RECORDS and packer is not None and packer.usable and self.definition_map.get(0) is packer.definition:
            data = packer.pack(values)
            if data is not None:
                self.records.append(data)
                return
        msg = _fresh_record()
        for name, value in values.items():
            setattr(msg, name, value)
        self.add(msg)
        self._packers[key] = _Packer(self.definition_map[msg.local_id], key)

    def to_bytes(self) -> bytes:
        """The whole file: header, records (fit_tool's and packed ones) and the file CRC."""
        if not PACK_RECORDS:
            return bytes(self.build().to_bytes())
        self.validate()
        body = b"".join(r if isinstance(r, bytes) else r.to_bytes() for r in self.records)
        header = FitFileHeader(records_size=len(body)).to_bytes()
        return bytes(header) + body + struct.pack("<H", crc16(body, crc=crc16(header)))


def _write_segment(
    builder: FitFileBuilder,
    seg: Segment,
    seg_start: datetime,
    index: int,
    laps: list[LapMessage],
    sessions: list[SessionMessage],
) -> tuple[SegmentInfo, datetime]:
    interval = max(1, int(seg.sample_interval_s))
    pauses = sorted((int(at), int(length)) for at, length in seg.pauses)
    spm = _steps_per_min(seg.cadence_rpm) if seg.cadence_rpm is not None else 0.0

    def event(when: datetime, event_type: EventType) -> None:
        msg = EventMessage()
        msg.timestamp = _ms(when)
        msg.event = Event.TIMER
        msg.event_type = event_type
        msg.event_group = 0
        builder.add(msg)

    def record(when: datetime, elapsed: float, distance: float) -> None:
        if not seg.include_records:
            return
        values: dict[str, float | int] = {"timestamp": _ms(when), "distance": distance, "enhanced_speed": seg.speed_mps}
        if seg.cadence_rpm is not None:
            whole = math.floor(seg.cadence_rpm)
            values["cadence"] = int(whole)
            values["fractional_cadence"] = seg.cadence_rpm - whole
        if seg.altitude is not None:
            values["enhanced_altitude"] = seg.altitude(elapsed)
        if seg.record_heart_rate_bpm is not None:
            first, last = seg.record_heart_rate_bpm
            values["heart_rate"] = round(first + (last - first) * min(1.0, elapsed / max(1, seg.duration_s)))
        builder.add_record(values)

    event(seg_start, EventType.START)
    timer = 0  # timer seconds so far
    paused = 0  # paused seconds so far
    distance = 0.0
    ascent = descent = 0.0
    last_alt = seg.altitude(0.0) if seg.altitude else None
    record(seg_start, 0.0, 0.0)
    pause_iter = iter(pauses)
    next_pause = next(pause_iter, None)
    while timer < seg.duration_s:
        step = min(interval, seg.duration_s - timer)
        if next_pause is not None and timer < next_pause[0] < timer + step:
            step = next_pause[0] - timer
        timer += step
        distance += seg.speed_mps * step
        now = seg_start + timedelta(seconds=timer + paused)
        record(now, float(timer + paused), distance)
        if seg.altitude is not None and last_alt is not None:
            alt = seg.altitude(float(timer + paused))
            ascent += max(0.0, alt - last_alt)
            descent += max(0.0, last_alt - alt)
            last_alt = alt
        if next_pause is not None and timer == next_pause[0] and timer < seg.duration_s:
            event(now, EventType.STOP_ALL)
            paused += next_pause[1]
            resume = seg_start + timedelta(seconds=timer + paused)
            event(resume, EventType.START)
            record(resume, float(timer + paused), distance)
            next_pause = next(pause_iter, None)
    seg_end = seg_start + timedelta(seconds=timer + paused)
    event(seg_end, EventType.STOP_ALL)

    steps = spm * seg.duration_s / 60.0
    written_strides = seg.total_strides if seg.total_strides is not None else steps / 2.0
    for msg in (LapMessage(), SessionMessage()):
        msg.timestamp = _ms(seg_end)
        msg.start_time = _ms(seg_start)
        msg.total_elapsed_time = float(timer + paused)
        msg.total_timer_time = float(timer)
        msg.total_distance = distance
        msg.sport = _enum(Sport, seg.sport)
        if seg.sub_sport is not None:
            msg.sub_sport = _enum(SubSport, seg.sub_sport)
        msg.event = Event.LAP if isinstance(msg, LapMessage) else Event.SESSION
        msg.event_type = EventType.STOP
        if seg.altitude is not None:
            msg.total_ascent = round(ascent)
            msg.total_descent = round(descent)
        if seg.write_total_strides and seg.cadence_rpm is not None and seg.sport in ("running", "walking"):
            msg.total_strides = int(written_strides)
            msg.total_fractional_cycles = written_strides - int(written_strides)
        if seg.heart_rate_bpm is not None:
            msg.avg_heart_rate, msg.max_heart_rate = seg.heart_rate_bpm
        if isinstance(msg, SessionMessage):
            msg.message_index = index
            msg.first_lap_index = index
            msg.num_laps = 1
            sessions.append(msg)
        else:
            msg.message_index = index
            laps.append(msg)
    info = SegmentInfo(
        sport=seg.sport,
        sub_sport=seg.sub_sport,
        start=seg_start,
        elapsed_s=float(timer + paused),
        timer_s=float(timer),
        distance_m=distance,
        steps=steps,
        ascent_m=ascent,
        descent_m=descent,
    )
    return info, seg_end


# -- damaged files -------------------------------------------------------------------------------------------


def write_truncated(source: Path, dest: Path, keep_fraction: float = 0.6) -> Path:
    """Copy ``source`` cut after ``keep_fraction`` of its bytes (an interrupted transfer)."""
    data = source.read_bytes()
    dest.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return dest


def write_bad_crc(source: Path, dest: Path) -> Path:
    """Copy ``source`` with one data byte flipped in the middle, so the file CRC no longer matches."""
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0x01
    dest.write_bytes(bytes(data))
    return dest


def write_bad_header(source: Path, dest: Path) -> Path:
    """Copy ``source`` with the ``.FIT`` signature of its header destroyed."""
    data = bytearray(source.read_bytes())
    data[8:12] = b"XFIT"
    dest.write_bytes(bytes(data))
    return dest


def write_chained(sources: Sequence[Path], dest: Path) -> Path:
    """Concatenate complete FIT files into one chained file (several headers in one file)."""
    dest.write_bytes(b"".join(p.read_bytes() for p in sources))
    return dest


def write_non_activity(dest: Path) -> Path:
    """A valid FIT file that is not an activity (a settings file: file_id only)."""
    builder = FitFileBuilder(auto_define=True)
    file_id = FileIdMessage()
    file_id.type = FileType.SETTINGS
    file_id.manufacturer = Manufacturer.DEVELOPMENT.value
    file_id.product = 1
    file_id.time_created = _ms(datetime(2026, 1, 1, tzinfo=UTC))
    builder.add(file_id)
    builder.build().to_file(str(dest))
    return dest
