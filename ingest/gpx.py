"""GPX tracks → ``ParsedRun``s, through ``gpxpy``.

One ``ParsedRun`` per track (``<trk>``) whose sport is a foot sport; the segments of a track are read as one
stream. ``source_key`` is ``f"{content_hash}:{index}"`` with the track's index in the file, so skipped tracks
do not shift the keys of the others.

Policies (see the foot-load model, section 1):

* Sport: the track's ``<type>`` (Garmin Connect and Strava write ``running``, ``walking``, ``hiking``,
  ``trail_running``…; older Strava exports write numeric activity types: 9 run, 10 walk, 4 hike, 1 ride).
  A type naming another sport (cycling, swimming, skiing…) is skipped with a reason. A missing or
  unrecognised type is judged by the track's median moving speed: 1.5–7 m/s counts as running, 0.5–1.5 m/s as
  walking, anything else is skipped. 7 m/s (2:23/km) is faster than any sustained human run, so a track above
  it is a ride or a drive; below 0.5 m/s nobody is walking a route. Known limit: an unlabelled slow bike ride
  (< 7 m/s) is counted as a run; a label always wins over the speed.
* Cadence: Garmin's TrackPointExtension ``cad`` (also a bare ``cadence`` or ``RunCadence`` element, written by
  some apps), strides per minute per foot, converted with ``normalise_cadence`` (the unit trap applies).
* Timer: GPX has no timer events. Devices with auto-pause, and apps when the athlete presses pause, simply
  stop writing points, so a pause shows as a gap. A gap of more than 30 s in which the athlete moved less
  than 10 m is taken as a pause (the interval does not count); a longer gap with movement is smart recording
  or lost GPS while running and counts (the model says not to drop long gaps). 30 s is above the longest
  smart-recording interval (~9 s) with margin for GPS dropouts; 10 m is about the GPS error of a watch
  standing still.
* Distance: haversine between consecutive positions (``gpxpy.geo.haversine_distance``, 2-D, elevation
  ignored as the devices' own totals do); speed: that distance over the time between the points. Altitude
  from ``<ele>``.
* Times: GPX times are UTC (the schema's ``xsd:dateTime`` with ``Z``); a time without a zone is taken as UTC.
  The local UTC offset is unknown (``utc_offset_s`` None).
* Steps: the cadence stream when any timed sample carries a positive cadence (``stream``), else an estimate
  from speed (``estimated``; the default ``c(v)`` or the athlete model given to the source).
* A track without at least two timed points (a planned route), or a file without tracks, is skipped with a
  reason; XML that does not parse raises a one-line ``DecodeError``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.parsers import expat

if TYPE_CHECKING:
    import gpxpy.gpx

from ingest.files import read_regular
from stridecare.domain.normalise import RunHeader, normalised_run
from stridecare.domain.run import (
    DecodeError,
    DecodeResult,
    ParsedRun,
    Samples,
    SkippedSession,
)
from stridecare.domain.steps import (
    DEFAULT_CADENCE,
    CadenceConstants,
    interval_weights,
    normalise_cadence,
    timed_seconds,
)

# Deeper than any GPX or TCX file nests (7 and 9 levels with extensions), far below what crashes a parser.
MAX_XML_DEPTH = 64
# A gap longer than this with less movement than PAUSE_MAX_MOVE_M is a pause (see the module docstring).
PAUSE_MIN_GAP_S = 30.0
PAUSE_MAX_MOVE_M = 10.0
# Median moving speed ranges for tracks whose type says nothing (m/s, lower bound inclusive).
RUNNING_SPEED_MPS = (1.5, 7.0)
WALKING_SPEED_MPS = (0.5, 1.5)

# Exact type labels (lower case, "-" and " " read as "_"). Numeric codes: Strava's old GPX export.
_TYPES: dict[str, tuple[str, str | None]] = {
    "running": ("running", None),
    "run": ("running", None),
    "jogging": ("running", None),
    "street_running": ("running", None),
    "track_running": ("running", "track"),
    "trail": ("running", "trail"),
    "trail_running": ("running", "trail"),
    "trailrun": ("running", "trail"),
    "treadmill": ("running", "treadmill"),
    "treadmill_running": ("running", "treadmill"),
    "virtualrun": ("running", "virtual"),
    "virtual_run": ("running", "virtual"),
    "walking": ("walking", None),
    "walk": ("walking", None),
    "hiking": ("hiking", None),
    "hike": ("hiking", None),
    "9": ("running", None),
    "10": ("walking", None),
    "4": ("hiking", None),
}
# Fragments that name a sport which does not load the feet like running (checked after the exact labels).
_NON_FOOT = (
    "bik",
    "cycl",
    "ride",
    "swim",
    "ski",
    "snowboard",
    "row",
    "paddl",
    "kayak",
    "canoe",
    "surf",
    "skat",
    "drive",
    "motor",
    "sail",
    "golf",
    "yoga",
    "elliptical",
    "wheelchair",
)
# Strava's numeric ride types in old exports: 1 ride, 17 virtual ride, 18 e-bike ride.
_NON_FOOT_CODES = frozenset({"1", "17", "18"})
_CADENCE_TAGS = frozenset({"cad", "cadence", "runcadence"})


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """One timed point of a GPX track or TCX lap, before it becomes a sample.

    ``distance_m`` and ``speed_mps`` are what the device recorded (TCX), None when it recorded nothing (GPX):
    then both are derived from the positions.
    """

    time: datetime  # timezone-aware, UTC
    after_break: bool = False  # first point after a recording break the format marks as a pause
    lat: float | None = None
    lon: float | None = None
    ele: float | None = None
    cadence_raw: float | None = None  # as recorded: strides per minute per foot, or already steps/min
    distance_m: float | None = None  # cumulative
    speed_mps: float | None = None


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive time is read as UTC (GPX and TCX times are UTC by their schemas)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def sport_from_label(label: str | None) -> tuple[str, str | None] | str | None:
    """Map an activity label (GPX ``<type>``, TCX ``Sport``) to ``(sport, sub_sport)``.

    Returns the normalised label (a str) when it names a sport that is not a foot sport, and None when the
    label is missing or unrecognised (the caller then judges by speed).
    """
    if label is None:
        return None
    key = "_".join(label.strip().lower().replace("-", " ").split())
    if not key or key in ("other", "generic", "unknown", "workout", "activity", "0"):
        return None
    if key in _TYPES:
        return _TYPES[key]
    if key in _NON_FOOT_CODES or any(fragment in key for fragment in _NON_FOOT):
        return key
    if "walk" in key:
        return ("walking", None)
    if "hik" in key:
        return ("hiking", None)
    if "run" in key or "jog" in key:
        return ("running", "trail" if "trail" in key else None)
    return None


def sport_from_speed(samples: Samples) -> tuple[str, str | None] | str:
    """Classify an unlabelled activity by the median speed of its timed intervals (see module docstring).

    Returns ``(sport, None)`` or a one-line reason for skipping it.
    """
    weights = interval_weights(samples)
    speeds = [v for v, w in zip(samples.speed_mps, weights, strict=True) if v is not None and w > 0]
    if not speeds:
        return "unknown activity type and no timed movement to judge it by"
    return sport_from_median_speed(statistics.median(speeds))


def sport_from_median_speed(median: float) -> tuple[str, str | None] | str:
    """``(sport, None)`` for a median (or average) moving speed in the running or walking range, else a
    one-line reason for skipping the activity."""
    if RUNNING_SPEED_MPS[0] <= median <= RUNNING_SPEED_MPS[1]:
        return ("running", None)
    if WALKING_SPEED_MPS[0] <= median < WALKING_SPEED_MPS[1]:
        return ("walking", None)
    return f"unknown activity type with median speed {median:.1f} m/s: not a run or a walk"


def build_samples(points: Sequence[TrackPoint], start: datetime) -> Samples:
    """Samples of a track: ``t`` since ``start``, cumulative distance, speed, cadence in steps/min, altitude,
    and the timer state inferred from gaps (see the module docstring). ``points`` must be sorted by time."""
    from gpxpy.geo import haversine_distance  # deferred: start-up time (gpxpy, as in GpxSource.decode)

    t: list[float] = []
    distance: list[float | None] = []
    speed: list[float | None] = []
    altitude: list[float | None] = []
    running: list[bool] = []
    raw_cadence: list[float | None] = []
    cum = 0.0
    prev_device_distance: float | None = None
    prev_pos: tuple[float, float] | None = None
    prev_t: float | None = None
    known = False  # no distance before the first point with a position or a device distance
    for p in points:
        ts = (p.time - start).total_seconds()
        # Distance moved since the previous point: the device's own cumulative distance when it has one
        # (footpods and treadmills have no positions), else the great-circle distance between positions.
        moved: float | None = None
        if p.distance_m is not None and math.isfinite(p.distance_m):
            if prev_device_distance is not None:
                moved = max(0.0, p.distance_m - prev_device_distance)
            prev_device_distance = p.distance_m
        elif p.lat is not None and p.lon is not None and prev_pos is not None:
            moved = haversine_distance(prev_pos[0], prev_pos[1], p.lat, p.lon)
        if p.lat is not None and p.lon is not None:
            prev_pos = (p.lat, p.lon)
        if moved is not None:
            cum += moved
        dt = None if prev_t is None else ts - prev_t
        v = p.speed_mps
        if v is None and moved is not None and dt is not None and dt > 0:
            v = moved / dt
        paused = p.after_break or (
            dt is not None and dt > PAUSE_MIN_GAP_S and moved is not None and moved < PAUSE_MAX_MOVE_M
        )
        known = known or moved is not None or p.distance_m is not None or p.lat is not None
        t.append(ts)
        distance.append(cum if known else None)
        speed.append(v)
        altitude.append(p.ele)
        running.append(not paused)
        raw_cadence.append(p.cadence_raw)
        prev_t = ts
    spm, _doubled = normalise_cadence(raw_cadence)
    return Samples(
        t=t, distance_m=distance, speed_mps=speed, cadence_spm=spm, altitude_m=altitude, timer_running=running
    )


def xml_header(
    source: str,
    source_key: str,
    mapped: tuple[str, str | None],
    start: datetime,
    elapsed_s: float,
    timer_s: float,
    distance_m: float,
) -> RunHeader:
    """The header of a GPX or TCX session; neither format records the UTC offset."""
    sport, sub_sport = mapped
    return RunHeader(
        source=source,
        source_key=source_key,
        sport=sport,
        sub_sport=sub_sport,
        start_time=start,
        utc_offset_s=None,
        elapsed_s=elapsed_s,
        timer_s=timer_s,
        distance_m=distance_m,
    )


def _local(tag: Any) -> str:
    return str(tag).rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _extension_cadence(extensions: Iterable[Any]) -> float | None:
    """The first cadence value in a point's extensions (any namespace, any nesting)."""
    for ext in extensions:
        iterator = getattr(ext, "iter", None)
        if iterator is None:
            continue
        for element in iterator():
            if _local(element.tag) in _CADENCE_TAGS and element.text:
                try:
                    value = float(element.text.strip())
                except ValueError:
                    return None
                return value if math.isfinite(value) and value >= 0 else None
    return None


def _one_line(prefix: str, exc: BaseException) -> str:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    reason = f"{prefix}: {detail}"
    return reason if len(reason) <= 220 else reason[:217] + "..."


def read_xml_text(path: Path, kind: str) -> str:
    """The file as text for an XML parser: BOM and leading whitespace removed (some exporters write blank
    lines before the XML declaration, which parsers reject), undecodable files refused in one line."""
    try:
        data = read_regular(path)
    except OSError as exc:
        raise DecodeError(f"cannot read {kind} file: {exc.strerror or type(exc).__name__}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # The XML default is UTF-8; a few old tools wrote Latin-1 and declared it. Decoding as Latin-1 never
        # fails, so a binary file is caught by the XML parser instead.
        text = data.decode("latin-1")
    text = text.lstrip()
    if text.startswith("<?xml"):
        # The declaration may name an encoding that no longer applies to an already decoded str.
        end = text.find("?>")
        if end != -1:
            text = text[end + 2 :]
    return text


class _Hostile(Exception):
    """Raised from inside the pre-scan's expat callbacks; carries the one-line reason."""


def prescan_xml(text: str, kind: str) -> None:
    """Refuse XML that would make a tree-building parser blow up, before one sees it; ``DecodeError`` if so.

    One streaming pass with expat, keeping nothing: elements nested deeper than ``MAX_XML_DEPTH`` (200,000
    levels crash ElementTree under ``copy.deepcopy``) and any entity declaration. No GPX or TCX writer declares
    entities, and without them there is no amplification: expat's own ratio limit still lets a 10 MB file
    expand a hundredfold, which took 2 GB in the tree."""
    parser = expat.ParserCreate()
    depth = 0

    def start(_name: str, _attrs: object) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_XML_DEPTH:
            raise _Hostile(f"refused {kind} file: elements nested more than {MAX_XML_DEPTH} levels deep")

    def end(_name: str) -> None:
        nonlocal depth
        depth -= 1

    def entity(*_args: object) -> None:
        raise _Hostile(f"refused {kind} file: it declares XML entities, which no {kind} writer does")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = entity
    parser.ordered_attributes = True  # a list per element, not a dict: the attributes are not looked at
    try:
        parser.Parse(text, True)
    except _Hostile as exc:
        raise DecodeError(str(exc)) from None
    except expat.ExpatError as exc:
        raise DecodeError(_one_line(f"damaged {kind} file: invalid XML", exc)) from None


class GpxSource:
    """Decodes GPX files (``.gpx``) into one ``ParsedRun`` per foot-sport track.

    ``constants`` are the model's (the application passes those built from its settings); they decide the steps of
    a track without cadence.
    """

    name = "gpx"
    suffixes: tuple[str, ...] = (".gpx",)

    def __init__(self, constants: CadenceConstants = DEFAULT_CADENCE) -> None:
        self._constants = constants

    def decode(self, path: Path, content_hash: str) -> DecodeResult:
        """Decode ``path``; raise ``DecodeError`` with a one-line reason when it is not readable GPX."""
        # deferred: start-up time: every process loads every registered source to learn its suffixes, and one
        # that never reads GPX need not load gpxpy.
        import gpxpy
        import gpxpy.gpx

        text = read_xml_text(path, "GPX")
        prescan_xml(text, "GPX")
        try:
            gpx = gpxpy.parse(text)
        except gpxpy.gpx.GPXXMLSyntaxException as exc:
            raise DecodeError(_one_line("damaged GPX file: invalid XML", exc.__cause__ or exc)) from exc
        except (
            gpxpy.gpx.GPXException,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            OverflowError,
            KeyError,
        ) as exc:
            raise DecodeError(_one_line("damaged GPX file", exc)) from exc
        if not gpx.tracks:
            what = "routes or waypoints only" if gpx.routes or gpx.waypoints else "empty"
            skip = SkippedSession("unknown", None, f"GPX file without tracks ({what})")
            return DecodeResult(runs=[], skipped=[skip])

        runs: list[ParsedRun] = []
        skipped: list[SkippedSession] = []
        device = (gpx.creator or "").strip()[:100] or None
        for index, track in enumerate(gpx.tracks):
            outcome = self._track(track, index, content_hash, device)
            if isinstance(outcome, ParsedRun):
                runs.append(outcome)
            else:
                skipped.append(outcome)
        return DecodeResult(runs=runs, skipped=skipped)

    def _track(
        self, track: gpxpy.gpx.GPXTrack, index: int, content_hash: str, device: str | None
    ) -> ParsedRun | SkippedSession:
        label = track.type
        mapped = sport_from_label(label)
        if isinstance(mapped, str):
            return SkippedSession(mapped, None, f"track {index}: not a foot sport ({label})")
        points = self._points(track)
        if len(points) < 2:
            return SkippedSession(
                label or "unknown", None, f"track {index}: fewer than two timed points (a planned route?)"
            )
        start = points[0].time
        samples = build_samples(points, start)
        if mapped is None:
            judged = sport_from_speed(samples)
            if isinstance(judged, str):
                return SkippedSession(label or "unknown", None, f"track {index}: {judged}")
            mapped = judged
        distance = next((d for d in reversed(samples.distance_m) if d is not None), 0.0)
        return normalised_run(
            samples,
            self._constants,
            xml_header(
                "gpx", f"{content_hash}:{index}", mapped, start, samples.t[-1], timed_seconds(samples), distance
            ),
            device=device,
            name=(track.name or "").strip()[:300] or None,
        )

    @staticmethod
    def _points(track: gpxpy.gpx.GPXTrack) -> list[TrackPoint]:
        points: list[TrackPoint] = []
        for segment in track.segments:
            for p in segment.points:
                if p.time is None:
                    continue  # an untimed point cannot be placed on the run's time axis
                points.append(
                    TrackPoint(
                        time=as_utc(p.time),
                        lat=p.latitude,
                        lon=p.longitude,
                        ele=p.elevation if p.elevation is not None and math.isfinite(p.elevation) else None,
                        cadence_raw=_extension_cadence(p.extensions),
                    )
                )
        # Stable sort: merged segments or edited files can step back in time; integration needs order.
        points.sort(key=lambda q: q.time)
        return points


__all__ = [
    "GpxSource",
    "TrackPoint",
    "as_utc",
    "build_samples",
    "read_xml_text",
    "sport_from_label",
    "sport_from_median_speed",
    "sport_from_speed",
    "xml_header",
]
