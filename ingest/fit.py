"""FIT activity files → ``ParsedRun``s, through python-fitparse's streaming decoder.

One pass over the file with ``fitparse.UncachedFitFile`` (CRC checks on) keeps only what the runs need:
sessions, timer events, a few header messages, and the record stream in compact ``array`` columns (≈ 40 bytes
a record), so an 8-hour file stays at a few MB. Everything that goes wrong inside the parser becomes a
one-line ``DecodeError``.

Policies (see the foot-load model, section 1):

* Records are assigned to sessions by time: a record belongs to the last session that started at or before it,
  while inside that session's end (``start_time + total_elapsed_time``, or ``timestamp`` when later). Session
  ``timestamp`` is not trusted alone: some devices write it equal to ``start_time``.
* Timer state comes from ``event`` messages (event ``timer``: ``start`` resumes, any ``stop*`` pauses).
  Before any timer event the timer counts as running: several devices write no start event (or only the last
  leg's) in multisport files. A sample is marked not running when the timer was stopped at it or at any
  moment since the previous sample, so an interval spanning a pause never counts (see
  ``steps.interval_weights``).
* Steps: the cadence stream when the session's records carry any positive cadence (``stream``; it wins over a
  disagreeing device total), else the session's ``total_strides`` × 2 or average cadence (``session``), else
  an estimate from speed (``estimated``; the default ``c(v)``, or the athlete model given to ``FitSource``).
* Device-relative (integer) timestamps are anchored by a ``timestamp_correlation`` message, else by the
  activity message's ``local_timestamp`` (then the UTC offset is unknown and the wall-clock time is stored as
  UTC), else by the FIT epoch (1989-12-31) so that the run is still counted, visibly misdated.
* Files that are valid FIT but not activities (settings, workouts, monitoring), or activities without
  sessions and without foot records, return an empty ``DecodeResult`` with a ``SkippedSession`` saying why:
  they are not damaged, so they must not be quarantined. Unreadable files raise ``DecodeError``.
* Chained FIT files are read as one stream; a session repeated by a chained copy (same sport, start and
  length) is kept once, and records are sorted by time so duplicated records add no steps.
"""

from __future__ import annotations

import bisect
import math
import struct
import warnings
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fitparse
from fitparse.records import DevFieldDefinition

from ingest.fit_common import (
    FIT_EPOCH,
    FIT_EPOCH_NAIVE,
    RECORD_FIELDS,
    RELATIVE_TS_LIMIT,
    SESSION_FIELDS,
    TIMER_STOPS,
    Records,
    Scan,
    device_name,
    enum_name,
    heart_rate_of_records,
    is_foot,
    num,
)
from ingest.fit_integrity import TooManyMessages, check_message_count, fit_file_complete
from stridecare.domain.normalise import RunHeader, normalised_run
from stridecare.domain.run import (
    FOOT_SPORTS,
    DecodeError,
    DecodeResult,
    ParsedRun,
    Samples,
    SkippedSession,
    heart_rate_bpm,
)
from stridecare.domain.steps import (
    DEFAULT_CADENCE,
    CadenceConstants,
    normalise_cadence,
    steps_from_summary,
    timed_seconds,
)

# Slack when assigning records to a session end: devices round session lengths to whole seconds.
_END_SLACK_S = 1.0


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else value


def _fit_seconds(value: Any) -> float | None:
    """A FIT timestamp in seconds on the file's axis (since the FIT epoch, or device-relative if small)."""
    if isinstance(value, datetime):
        naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        return (naive - FIT_EPOCH_NAIVE).total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _values(message: Any, wanted: frozenset[str]) -> dict[str, Any]:
    """The wanted native fields of a message; developer fields never shadow native ones (a dev "cadence" may
    be in other units), and the first valid value wins over an invalid native one."""
    out: dict[str, Any] = {}
    for fd in message.fields:
        if isinstance(fd.field_def, DevFieldDefinition):
            continue
        name = fd.name
        if name in wanted and fd.value is not None and name not in out:
            out[name] = fd.value
    return out


def _scan(path: Path) -> Scan:
    scan = Scan()
    records = scan.records
    fit = fitparse.UncachedFitFile(str(path), check_crc=True)
    try:
        for message in fit:
            name = message.name
            if name == "record":
                values = _values(message, RECORD_FIELDS)
                t = _fit_seconds(values.get("timestamp"))
                if t is not None:
                    records.append(t, values)
            elif name == "event":
                values = _values(message, frozenset({"timestamp", "event", "event_type"}))
                t = _fit_seconds(values.get("timestamp"))
                if values.get("event") == "timer" and t is not None:
                    event_type = values.get("event_type")
                    if event_type == "start":
                        scan.timer_events.append((t, True))
                    elif event_type in TIMER_STOPS:
                        scan.timer_events.append((t, False))
            elif name == "session":
                scan.sessions.append(_values(message, SESSION_FIELDS))
            elif name == "file_id":
                values = message.get_values()
                if scan.file_type is None:
                    scan.file_type = enum_name(values.get("type"))
                if scan.device is None:
                    scan.device = device_name(values)
            elif name == "activity":
                values = message.get_values()
                scan.activity_ts = _fit_seconds(values.get("timestamp"))
                local = values.get("local_timestamp")
                scan.activity_local = local if isinstance(local, datetime) else None
            elif name == "timestamp_correlation":
                values = message.get_values()
                absolute = _fit_seconds(values.get("timestamp"))
                relative = _fit_seconds(values.get("system_timestamp"))
                if absolute is not None and relative is not None and absolute >= RELATIVE_TS_LIMIT:
                    scan.correlation_offset_s = absolute - relative
            elif name == "sport" and scan.sport_msg is None:
                values = message.get_values()
                sport = enum_name(values.get("sport"))
                if sport is not None:
                    scan.sport_msg = (sport, enum_name(values.get("sub_sport")))
    finally:
        fit.close()
    return scan


def _one_line(exc: BaseException) -> str:
    """A damaged file's reason in one short line (the import log and quarantine note show it verbatim)."""
    if isinstance(exc, fitparse.utils.FitCRCError):
        reason = "CRC mismatch"
    elif isinstance(exc, fitparse.utils.FitHeaderError):
        reason = f"invalid file header ({exc})"
    elif isinstance(exc, fitparse.utils.FitEOFError | EOFError):
        reason = "file ends unexpectedly (truncated)"
    elif isinstance(exc, AttributeError | TypeError | KeyError | IndexError):
        # The parser tripped over malformed content: its own words ("'NoneType' object has no attribute …")
        # tell a runner nothing.
        reason = "malformed content the decoder cannot read"
    else:
        detail = " ".join(str(exc).split()) or "no detail"
        reason = f"{type(exc).__name__}: {detail}"
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return f"damaged FIT file: {reason}"


@dataclass(frozen=True, slots=True)
class _Span:
    index: int
    start: float
    end: float
    values: dict[str, Any]


class FitSource:
    """Decodes FIT activity files (``.fit``) into one ``ParsedRun`` per foot session.

    ``constants`` are the model's (the application passes those built from its settings); they decide the steps
    of a session without cadence.
    """

    name = "fit"
    suffixes: tuple[str, ...] = (".fit",)

    def __init__(
        self,
        constants: CadenceConstants = DEFAULT_CADENCE,
        *,
        fast: bool = True,
    ) -> None:
        self._constants = constants
        # ``fast=False`` decodes with fitparse alone: the reference the fast scan is tested against.
        self._fast = fast

    def decode(self, path: Path, content_hash: str) -> DecodeResult:
        """Decode ``path``; raise ``DecodeError`` with a one-line reason for a damaged or unreadable file."""
        try:
            with warnings.catch_warnings():
                # fitparse warns about oddities it then raises on or tolerates; the outcome is what matters
                # here.
                warnings.simplefilter("ignore")
                # Before either decoder: their cost grows with the number of messages, not with bytes.
                check_message_count(path)
                scan = self._fast_scan(path) if self._fast else None
                if scan is None:
                    scan = _scan(path)
        except DecodeError:
            raise
        except TooManyMessages as exc:
            raise DecodeError(f"refused FIT file: {exc}") from exc
        except OSError as exc:
            raise DecodeError(f"cannot read FIT file: {exc.strerror or type(exc).__name__}") from exc
        except (
            fitparse.FitParseError,
            KeyError,
            ValueError,
            TypeError,
            IndexError,
            AttributeError,
            struct.error,
            EOFError,
            OverflowError,
            ZeroDivisionError,
            UnicodeDecodeError,
            RecursionError,
        ) as exc:
            raise DecodeError(_one_line(exc)) from exc
        try:
            return self._build(scan, content_hash)
        except (KeyError, ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError) as exc:
            # Values valid for the parser but absurd for a run (e.g. an out-of-range date) end here.
            raise DecodeError(f"unusable FIT file: {' '.join(str(exc).split())[:200]}") from exc

    @staticmethod
    def _fast_scan(path: Path) -> Scan | None:
        # deferred: start-up time: every process loads every source to learn its suffixes, and the fast scan
        # brings NumPy and the native decoder, which only a process that decodes needs (the sandbox preloads it).
        from ingest import fit_fast

        return fit_fast.scan(path)

    def is_complete(self, path: Path) -> bool:
        """True only if ``path`` is known to be a whole FIT file (segments tile it, CRCs match): the watcher
        may then skip its settle wait. False means "not known", never "damaged"."""
        return fit_file_complete(path)

    # -- building runs ------------------------------------------------------------------------------------

    def _build(self, scan: Scan, content_hash: str) -> DecodeResult:
        if scan.file_type is not None and scan.file_type != "activity":
            return DecodeResult(
                runs=[],
                skipped=[SkippedSession("unknown", None, f"not an activity file (type {scan.file_type})")],
            )
        records = scan.records
        records.sort_by_time()
        anchor, utc_offset = self._anchor(scan)
        spans = self._spans(scan)
        if not spans:
            return DecodeResult(runs=[], skipped=[self._no_session_skip(scan)])

        events = sorted(scan.timer_events, key=lambda e: e[0])
        runs: list[ParsedRun] = []
        skipped: list[SkippedSession] = []
        starts = [s.start for s in spans]
        for position, span in enumerate(spans):
            sport = enum_name(span.values.get("sport")) or "generic"
            sub_sport = enum_name(span.values.get("sub_sport"))
            if not is_foot(sport, sub_sport):
                skipped.append(SkippedSession(sport, sub_sport, f"not a foot sport ({sport}/{sub_sport})"))
                continue
            if sport not in FOOT_SPORTS:
                # e.g. fitness_equipment/treadmill: a run on a treadmill, stored as one.
                sport = "running"
            next_start = starts[position + 1] if position + 1 < len(starts) else math.inf
            lo, hi = self._record_range(records.t, span.start, min(span.end + _END_SLACK_S, next_start))
            runs.append(self._run(scan, span, sport, sub_sport, lo, hi, events, anchor, utc_offset, content_hash))
        return DecodeResult(runs=runs, skipped=skipped)

    def _anchor(self, scan: Scan) -> tuple[float, int | None]:
        """Seconds to add to the file's time axis to get seconds since the FIT epoch, and the UTC offset."""
        utc_offset: int | None = None
        if scan.activity_local is not None and scan.activity_ts is not None:
            local_s = _fit_seconds(scan.activity_local)
            if local_s is not None and scan.activity_ts >= RELATIVE_TS_LIMIT:
                # Offsets are whole quarter hours; rounding absorbs a second of skew between the two fields.
                offset = round((local_s - scan.activity_ts) / 900.0) * 900
                if abs(offset) <= 14 * 3600:
                    utc_offset = offset
        first = self._first_time(scan)
        if first is None or first >= RELATIVE_TS_LIMIT:
            return 0.0, utc_offset
        if scan.correlation_offset_s is not None:
            return scan.correlation_offset_s, utc_offset
        if scan.activity_local is not None and scan.activity_ts is not None and scan.activity_ts < RELATIVE_TS_LIMIT:
            local_s = _fit_seconds(scan.activity_local)
            if local_s is not None:
                return local_s - scan.activity_ts, None
        return 0.0, utc_offset

    @staticmethod
    def _first_time(scan: Scan) -> float | None:
        for values in scan.sessions:
            t = _fit_seconds(values.get("start_time"))
            if t is not None:
                return t
        return scan.records.t[0] if len(scan.records.t) else None

    def _spans(self, scan: Scan) -> list[_Span]:
        """Sessions with their time range, deduplicated (chained copies) and ordered by start."""
        spans: list[_Span] = []
        seen: set[tuple[Any, ...]] = set()
        records_t = scan.records.t
        sessions = scan.sessions
        if not sessions and len(records_t) and scan.sport_msg is not None:
            # A file with records and a sport message but no session (some phone apps and bike computers).
            sport, sub_sport = scan.sport_msg
            sessions = [{"sport": sport, "sub_sport": sub_sport}]
        for values in sessions:
            start = _fit_seconds(values.get("start_time"))
            stamp = _fit_seconds(values.get("timestamp"))
            elapsed = values.get("total_elapsed_time")
            if start is None:
                start = records_t[0] if len(records_t) else stamp
            if start is None:
                continue
            end = start + float(elapsed) if isinstance(elapsed, int | float) else start
            if stamp is not None and stamp > end:
                end = stamp
            if not isinstance(elapsed, int | float) and len(records_t) and end <= start:
                end = records_t[-1]
            key = (values.get("sport"), values.get("sub_sport"), start, elapsed, values.get("total_distance"))
            if key in seen:
                continue
            seen.add(key)
            spans.append(_Span(len(spans), start, end, values))
        spans.sort(key=lambda s: s.start)
        return [_Span(i, s.start, s.end, s.values) for i, s in enumerate(spans)]

    @staticmethod
    def _no_session_skip(scan: Scan) -> SkippedSession:
        if not scan.sessions and not len(scan.records.t):
            return SkippedSession("unknown", None, "activity file without sessions or records")
        return SkippedSession("unknown", None, "activity file without a session or sport: cannot tell the sport")

    @staticmethod
    def _record_range(t: array[float], start: float, end: float) -> tuple[int, int]:
        return bisect.bisect_left(t, start), bisect.bisect_right(t, end)

    def _run(
        self,
        scan: Scan,
        span: _Span,
        sport: str,
        sub_sport: str | None,
        lo: int,
        hi: int,
        events: list[tuple[float, bool]],
        anchor: float,
        utc_offset: int | None,
        content_hash: str,
    ) -> ParsedRun:
        v = span.values
        rec = scan.records
        samples = self._samples(rec, lo, hi, span.start, events)
        # A session summary without heart rate: the records' own, when they carry it.
        recorded_hr = heart_rate_of_records(rec, lo, hi) if v.get("avg_heart_rate") is None else (None, None)

        timer_s = num(v.get("total_timer_time"))
        elapsed_s = num(v.get("total_elapsed_time"))
        if math.isnan(elapsed_s):
            elapsed_s = max(span.end - span.start, samples.t[-1] if len(samples) else 0.0)
        if math.isnan(timer_s):
            timer_s = timed_seconds(samples) if len(samples) else elapsed_s

        distance = num(v.get("total_distance"))
        if math.isnan(distance):
            distance = _records_distance(samples)

        device_steps: float | None = None
        strides = v.get("total_strides")
        if strides is None:
            strides = v.get("total_cycles")
        if isinstance(strides, int | float) and strides > 0:
            frac = num(v.get("total_fractional_cycles"))
            device_steps = 2.0 * (float(strides) + (0.0 if math.isnan(frac) else frac))

        # Only cadence that counts towards steps decides for the stream (``steps.count_steps``); without it the
        # session's own count, from total strides or else its average cadence, comes next.
        session_steps = device_steps
        avg = v.get("avg_running_cadence")
        if avg is None:
            avg = v.get("avg_cadence")
        if session_steps is None and isinstance(avg, int | float) and avg > 0 and timer_s > 0:
            frac = num(v.get("avg_fractional_cadence"))
            session_steps = steps_from_summary(float(avg) + (0.0 if math.isnan(frac) else frac), timer_s)
        return normalised_run(
            samples,
            self._constants,
            RunHeader(
                source="fit",
                source_key=f"{content_hash}:{span.index}",
                sport=sport,
                sub_sport=sub_sport,
                start_time=FIT_EPOCH + timedelta(seconds=span.start + anchor),
                utc_offset_s=utc_offset,
                elapsed_s=elapsed_s,
                timer_s=timer_s,
                distance_m=distance,
            ),
            session_steps=session_steps,
            source_ascent_m=_opt(num(v.get("total_ascent"))),
            source_descent_m=_opt(num(v.get("total_descent"))),
            device=scan.device,
            device_total_strides=device_steps,
            avg_heart_rate_bpm=heart_rate_bpm(v.get("avg_heart_rate")) or recorded_hr[0],
            max_heart_rate_bpm=heart_rate_bpm(v.get("max_heart_rate")) or recorded_hr[1],
        )

    @staticmethod
    def _samples(rec: Records, lo: int, hi: int, start: float, events: list[tuple[float, bool]]) -> Samples:
        running_flags: list[bool] = []
        # Each session starts with its timer running, and only events after its start apply: devices close a
        # leg with stop_all and often write no start for the next one.
        state = True
        e = bisect.bisect_right(events, (start, True))
        prev_t = start
        for i in range(lo, hi):
            t = rec.t[i]
            stopped_between = False
            # Events at exactly this sample's time act on the next interval: a stop written with the last
            # record ends the timer after it, and a start written with a record follows a pause that ended
            # there.
            while e < len(events) and events[e][0] < t:
                event_t, state = events[e]
                if not state and event_t >= prev_t:
                    stopped_between = True
                e += 1
            running_flags.append(state and not stopped_between)
            prev_t = t
        raw_cadence = [_opt(rec.cadence[i]) for i in range(lo, hi)]
        spm, _doubled = normalise_cadence(raw_cadence)
        return Samples(
            t=[rec.t[i] - start for i in range(lo, hi)],
            distance_m=[_opt(rec.distance[i]) for i in range(lo, hi)],
            speed_mps=[_opt(rec.speed[i]) for i in range(lo, hi)],
            cadence_spm=spm,
            altitude_m=[_opt(rec.altitude[i]) for i in range(lo, hi)],
            timer_running=running_flags,
        )


def _records_distance(samples: Samples) -> float:
    values = [d for d in samples.distance_m if d is not None]
    if len(values) >= 2:
        return max(0.0, values[-1] - values[0]) if values[0] <= values[-1] else max(values)
    return 0.0


def iter_messages(path: Path) -> Iterator[Any]:
    """Every message of a FIT file, streamed with CRC checks on (for benchmarks and debugging tools)."""
    fit = fitparse.UncachedFitFile(str(path), check_crc=True)
    try:
        yield from fit
    finally:
        fit.close()


__all__ = ["FIT_EPOCH", "FitSource", "iter_messages"]
