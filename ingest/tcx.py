"""TCX (Garmin Training Center) activities → ``ParsedRun``s, with ``tcxreader``'s trackpoint parser.

One ``ParsedRun`` per ``<Activity>`` whose ``Sport`` is a foot sport (also inside a ``MultiSportSession``);
``source_key`` is ``f"{content_hash}:{index}"`` with the activity's index in the file.

Why not ``TCXReader.read``: it folds every activity of a file into one exercise (the last ``Sport`` wins),
drops trackpoints without a position (every treadmill run) and laps without trackpoints (summary-only
laps), and reads neither lap start times nor lap timer totals. This module walks activities and laps itself
and hands each ``<Trackpoint>`` to ``TCXReader.trackpoint_parser``, which reads the time, position,
altitude, distance, cadence and the ``TPX`` extension (``RunCadence``, ``Speed``) tolerantly.

Policies (see the foot-load model, section 1, and ``ingest.gpx`` for the shared rules):

* Sport: ``Running``, ``Walking`` (not in the TCX schema, but written by some tools) and hiking labels are
  foot sports; ``Biking`` and other named sports are skipped with a reason; ``Other`` is judged by median
  speed like an unlabelled GPX track.
* Cadence: the trackpoint's ``RunCadence`` extension, else its ``Cadence`` element, per foot, converted with
  ``normalise_cadence``. Without a stream: the laps' ``AvgRunCadence`` (or ``Cadence``) × lap time
  (``session``), else an estimate from speed (``estimated``).
* Timer: TCX has no timer events. Garmin closes a ``<Track>`` when the timer stops and opens a new one when
  it resumes, so a new track inside a lap marks a pause; across laps, and in files from other tools, the
  GPX gap rule applies (> 30 s with < 10 m moved is a pause). Timer time is the sum of the laps'
  ``TotalTimeSeconds`` (the device's timer), else the timed part of the samples.
* Distance: the sum of the laps' ``DistanceMeters``, else the trackpoints' cumulative ``DistanceMeters``,
  else haversine between positions. Speed: the ``Speed`` extension, else from distance over time.
* A trackpoint whose time cannot be read is dropped; a file that is not XML or not TCX raises a one-line
  ``DecodeError``; a TCX file without activities (a course, a workout) is skipped with a reason.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tcxreader.tcx_track_point import TCXTrackPoint
from tcxreader.tcxreader import GARMIN_XML_EXTENSIONS, GARMIN_XML_SCHEMA, TCXReader

from ingest.gpx import (
    TrackPoint,
    as_utc,
    build_samples,
    prescan_xml,
    read_xml_text,
    sport_from_label,
    sport_from_median_speed,
    sport_from_speed,
    xml_header,
)
from stridecare.domain.normalise import normalised_run
from stridecare.domain.run import DecodeError, DecodeResult, ParsedRun, Samples, SkippedSession, heart_rate_bpm
from stridecare.domain.steps import (
    DEFAULT_CADENCE,
    CadenceConstants,
    steps_from_summary,
    timed_seconds,
)

_NS = GARMIN_XML_SCHEMA
_EXT = GARMIN_XML_EXTENSIONS


@dataclass(slots=True)
class _Lap:
    start: datetime | None
    timer_s: float | None
    distance_m: float | None
    avg_cadence: float | None  # per foot, as recorded
    points: list[TrackPoint] = field(default_factory=list)


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _child_float(element: ET.Element, tag: str) -> float | None:
    child = element.find(_NS + tag)
    return None if child is None else _float(child.text)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _one_line(prefix: str, exc: BaseException) -> str:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    reason = f"{prefix}: {detail}"
    return reason if len(reason) <= 220 else reason[:217] + "..."


class TcxSource:
    """Decodes TCX files (``.tcx``) into one ``ParsedRun`` per foot-sport activity.

    ``constants`` are the model's (see ``GpxSource``); they decide the steps of an activity without cadence.
    """

    name = "tcx"
    suffixes: tuple[str, ...] = (".tcx",)

    def __init__(self, constants: CadenceConstants = DEFAULT_CADENCE) -> None:
        self._constants = constants
        self._reader = TCXReader()

    def decode(self, path: Path, content_hash: str) -> DecodeResult:
        """Decode ``path``; raise ``DecodeError`` with a one-line reason when it is not readable TCX."""
        text = read_xml_text(path, "TCX")
        prescan_xml(text, "TCX")
        try:
            # ElementTree resolves no external entities or DTDs, and the bundled expat (>= 2.4.1) caps
            # entity expansion, so a hostile file cannot read local files or blow up memory here.
            root = ET.fromstring(text)  # noqa: S314
        except ET.ParseError as exc:
            raise DecodeError(_one_line("damaged TCX file: invalid XML", exc)) from exc
        local = root.tag.rsplit("}", 1)[-1]
        if local != "TrainingCenterDatabase":
            raise DecodeError(f"not a TCX file: root element is <{local[:60]}>")
        if root.tag != _NS + "TrainingCenterDatabase":
            raise DecodeError("unsupported TCX file: not the TrainingCenterDatabase v2 namespace")
        activities = [a for node in root.findall(_NS + "Activities") for a in node.iter(_NS + "Activity")]
        if not activities:
            return DecodeResult(
                runs=[], skipped=[SkippedSession("unknown", None, "TCX file without activities (a course?)")]
            )
        runs: list[ParsedRun] = []
        skipped: list[SkippedSession] = []
        for index, activity in enumerate(activities):
            try:
                outcome = self._activity(activity, index, content_hash)
            except (ValueError, TypeError, AttributeError, OverflowError, KeyError) as exc:
                # One malformed activity is reported; the other activities of the file still count.
                outcome = SkippedSession("unknown", None, _one_line(f"activity {index}: unreadable", exc))
            if isinstance(outcome, ParsedRun):
                runs.append(outcome)
            else:
                skipped.append(outcome)
        return DecodeResult(runs=runs, skipped=skipped)

    def _activity(self, activity: ET.Element, index: int, content_hash: str) -> ParsedRun | SkippedSession:
        label = activity.get("Sport")
        mapped = sport_from_label(label)
        if isinstance(mapped, str):
            return SkippedSession(mapped, None, f"activity {index}: not a foot sport ({label})")
        laps = [self._lap(node) for node in activity.findall(_NS + "Lap")]
        points = [p for lap in laps for p in lap.points]
        points.sort(key=lambda q: q.time)
        lap_starts = [lap.start for lap in laps if lap.start is not None]
        starts = [*lap_starts, *(p.time for p in points[:1])]
        activity_id = _parse_time(activity.findtext(_NS + "Id"))
        if activity_id is not None:
            starts.append(activity_id)
        if not starts:
            return SkippedSession(label or "unknown", None, f"activity {index}: no start time")
        # The earliest of lap starts, first point and Id: all mark the start; a device writes them equal.
        start = min(starts)
        samples = build_samples(points, start) if points else Samples.empty()

        lap_timer = [lap.timer_s for lap in laps if lap.timer_s is not None and lap.timer_s > 0]
        timer = sum(lap_timer) if lap_timer else (timed_seconds(samples) if len(samples) else 0.0)
        lap_distances = [lap.distance_m for lap in laps if lap.distance_m is not None]
        if lap_distances:
            distance = sum(lap_distances)
        else:
            distance = next((d for d in reversed(samples.distance_m) if d is not None), 0.0)
        ends = [samples.t[-1]] if len(samples) else []
        ends += [
            (lap.start - start).total_seconds() + lap.timer_s
            for lap in laps
            if lap.start is not None and lap.timer_s is not None
        ]
        elapsed = max([timer, *ends])
        if timer <= 0 and not len(samples):
            reason = f"activity {index}: no laps with time and no trackpoints"
            return SkippedSession(label or "unknown", None, reason)

        if mapped is None:
            if len(samples):
                judged = sport_from_speed(samples)
            elif timer > 0:
                judged = sport_from_median_speed(distance / timer)
            else:
                judged = "unknown activity type and no speed"

            if isinstance(judged, str):
                return SkippedSession(label or "unknown", None, f"activity {index}: {judged}")
            mapped = judged
        device = (activity.findtext(f"{_NS}Creator/{_NS}Name") or "").strip()[:100] or None
        heart = [
            bpm
            for node in activity.iter(f"{_NS}HeartRateBpm")  # trackpoints' own; lap figures have other tags
            if (bpm := heart_rate_bpm(_float(node.findtext(f"{_NS}Value")))) is not None
        ]
        return normalised_run(
            samples,
            self._constants,
            xml_header("tcx", f"{content_hash}:{index}", mapped, start, elapsed, timer, distance),
            session_steps=self._lap_steps(laps),
            device=device,
            avg_heart_rate_bpm=sum(heart) / len(heart) if heart else None,
            max_heart_rate_bpm=max(heart) if heart else None,
        )

    @staticmethod
    def _lap_steps(laps: list[_Lap]) -> float | None:
        """Steps from lap average cadences, only when every timed lap has one (a partial sum undercounts)."""
        timed = [lap for lap in laps if lap.timer_s is not None and lap.timer_s > 0]
        if not timed or any(lap.avg_cadence is None or lap.avg_cadence <= 0 for lap in timed):
            return None
        return sum(steps_from_summary(lap.avg_cadence or 0.0, lap.timer_s or 0.0) for lap in timed)

    def _lap(self, node: ET.Element) -> _Lap:
        avg_cadence: float | None = None
        lx = node.find(f"{_NS}Extensions/{_EXT}LX")
        if lx is not None:
            avg_cadence = _float(lx.findtext(_EXT + "AvgRunCadence"))
        if avg_cadence is None:
            avg_cadence = _child_float(node, "Cadence")
        lap = _Lap(
            start=_parse_time(node.get("StartTime")),
            timer_s=_child_float(node, "TotalTimeSeconds"),
            distance_m=_child_float(node, "DistanceMeters"),
            avg_cadence=avg_cadence,
        )
        for track_no, track in enumerate(node.findall(_NS + "Track")):
            first = True
            for element in track.findall(_NS + "Trackpoint"):
                point = self._point(element, after_break=first and track_no > 0)
                if point is not None:
                    lap.points.append(point)
                    first = False
        return lap

    def _point(self, element: ET.Element, *, after_break: bool) -> TrackPoint | None:
        tp = TCXTrackPoint(tpx_ext={})
        try:
            self._reader.trackpoint_parser(tp, element)
        except ValueError:
            return None  # a time that cannot be read: the point cannot be placed on the run's time axis
        if not isinstance(tp.time, datetime):
            return None
        ext = tp.tpx_ext if isinstance(tp.tpx_ext, dict) else {}
        cadence = _number(ext.get("RunCadence"))
        if cadence is None:
            cadence = _number(tp.cadence)
        return TrackPoint(
            time=as_utc(tp.time),
            lat=_number(tp.latitude),
            lon=_number(tp.longitude),
            ele=_number(tp.elevation),
            cadence_raw=cadence if cadence is None or cadence >= 0 else None,
            distance_m=_number(tp.distance),
            speed_mps=_number(ext.get("Speed")),
            after_break=after_break,
        )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


__all__ = ["TcxSource"]
