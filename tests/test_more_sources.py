"""GPX, TCX and gzipped sources on files the tests write themselves (known truth), and their registration."""

from __future__ import annotations

import gzip
import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from factories import ingest_planned
from fitgen import write_activity
from gpxpy.geo import EARTH_RADIUS

from ingest.compressed import FitGzSource, GzipSource
from ingest.decode import decode_path, registered_sources
from ingest.fit import FitSource
from ingest.gpx import GpxSource
from ingest.tcx import TcxSource
from stridecare.domain.load import DEFAULT_CONSTANTS
from stridecare.domain.run import CadenceSource, DecodeError, DecodeResult, ParsedRun
from stridecare.plugins import source_classes, source_for
from stridecare.runtime import Runtime

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
HASH = "h" * 64
_M_PER_DEG = math.pi * EARTH_RADIUS / 180.0


# -- small generators -------------------------------------------------------------------------------------


def track_points(
    *,
    start: datetime = START,
    duration_s: int = 1800,
    speed_mps: float = 3.0,
    interval_s: int = 1,
    pauses: Sequence[tuple[int, int]] = (),
) -> list[tuple[datetime, float, float, float]]:
    """(time, lat, lon, cumulative metres) every ``interval_s`` timer seconds, heading north; a pause
    (timer second, length) writes nothing for its length and does not move."""
    out: list[tuple[datetime, float, float, float]] = []
    paused = 0
    pause_at = dict(pauses)
    for timer in range(0, duration_s + 1, interval_s):
        metres = speed_mps * timer
        out.append((start + timedelta(seconds=timer + paused), 48.0 + metres / _M_PER_DEG, 11.0, metres))
        paused += pause_at.get(timer, 0)
        if timer in pause_at:
            # The point where the athlete resumes, at the same place.
            out.append((start + timedelta(seconds=timer + paused), 48.0 + metres / _M_PER_DEG, 11.0, metres))
    return out


def gpx_xml(
    tracks: Sequence[tuple[str | None, list[tuple[datetime, float, float, float]], float | None]],
    *,
    ele: bool = True,
) -> str:
    """A GPX 1.1 file: one ``<trk>`` per (type, points, per-foot cadence or None for no extension)."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<gpx version="1.1" creator="stridecare tests" xmlns="http://www.topografix.com/GPX/1/1" '
        'xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1">',
    ]
    for i, (kind, points, cadence) in enumerate(tracks):
        parts.append(f"<trk><name>track {i}</name>")
        if kind is not None:
            parts.append(f"<type>{kind}</type>")
        parts.append("<trkseg>")
        for n, (t, lat, lon, _m) in enumerate(points):
            parts.append(f'<trkpt lat="{lat:.8f}" lon="{lon:.8f}">')
            if ele:
                parts.append(f"<ele>{500 + 10 * math.sin(n / 300):.1f}</ele>")
            parts.append(f"<time>{t.strftime('%Y-%m-%dT%H:%M:%SZ')}</time>")
            if cadence is not None:
                parts.append(
                    "<extensions><gpxtpx:TrackPointExtension><gpxtpx:hr>150</gpxtpx:hr>"
                    f"<gpxtpx:cad>{cadence:g}</gpxtpx:cad></gpxtpx:TrackPointExtension></extensions>"
                )
            parts.append("</trkpt>")
        parts.append("</trkseg></trk>")
    parts.append("</gpx>")
    return "\n".join(parts)


def tcx_xml(
    activities: Sequence[tuple[str, list[tuple[datetime, float, float, float]], float | None]],
    *,
    positions: bool = True,
    lap_cadence: float | None = None,
    lap_only: bool = False,
    split_track_at: datetime | None = None,
) -> str:
    """A TCX v2 file: one ``<Activity>`` per (Sport, points, per-foot RunCadence or None), one lap each.

    ``lap_only`` writes the lap totals without trackpoints; ``split_track_at`` closes the ``<Track>`` before
    that time and opens a new one (Garmin's way of marking a pause)."""
    ns = (
        'xmlns="http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2" '
        'xmlns:ns3="http://www.garmin.com/xmlschemas/ActivityExtension/v2"'
    )
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', f"<TrainingCenterDatabase {ns}>", "<Activities>"]
    for sport, points, cadence in activities:
        t0 = points[0][0].strftime("%Y-%m-%dT%H:%M:%S.000Z")
        # The device's timer: moving intervals of normal recording (a long gap is a stop).
        steps = [(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(points) if b[3] > a[3]]
        timer = sum(dt for dt in steps if dt <= 30)
        parts.append(f'<Activity Sport="{sport}"><Id>{t0}</Id>')
        parts.append(f'<Lap StartTime="{t0}"><TotalTimeSeconds>{timer:.1f}</TotalTimeSeconds>')
        parts.append(f"<DistanceMeters>{points[-1][3]:.1f}</DistanceMeters><Calories>300</Calories>")
        parts.append("<Intensity>Active</Intensity><TriggerMethod>Manual</TriggerMethod>")
        if not lap_only:
            parts.append("<Track>")
            for t, lat, lon, metres in points:
                if split_track_at is not None and t == split_track_at:
                    parts.append("</Track><Track>")
                parts.append(f"<Trackpoint><Time>{t.strftime('%Y-%m-%dT%H:%M:%SZ')}</Time>")
                if positions:
                    parts.append(
                        f"<Position><LatitudeDegrees>{lat:.8f}</LatitudeDegrees>"
                        f"<LongitudeDegrees>{lon:.8f}</LongitudeDegrees></Position>"
                    )
                parts.append(f"<AltitudeMeters>500.0</AltitudeMeters><DistanceMeters>{metres:.2f}</DistanceMeters>")
                if cadence is not None:
                    parts.append(
                        f"<Extensions><ns3:TPX><ns3:RunCadence>{cadence:g}</ns3:RunCadence></ns3:TPX></Extensions>"
                    )
                parts.append("</Trackpoint>")
            parts.append("</Track>")
        if lap_cadence is not None:
            parts.append(
                f"<Extensions><ns3:LX><ns3:AvgRunCadence>{lap_cadence:g}</ns3:AvgRunCadence></ns3:LX></Extensions>"
            )
        parts.append("</Lap>")
        parts.append(
            '<Creator xsi:type="Device_t" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            "<Name>Forerunner 245</Name></Creator></Activity>"
        )
    parts.append("</Activities></TrainingCenterDatabase>")
    return "\n".join(parts)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def gz(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


def only_run(result: DecodeResult) -> ParsedRun:
    assert len(result.runs) == 1, result
    return result.runs[0]


# -- GPX -------------------------------------------------------------------------------------------


def test_gpx_with_garmin_cadence_counts_the_stream(tmp_path: Path) -> None:
    path = write(tmp_path / "run.gpx", gpx_xml([("running", track_points(), 85.0)]))
    run = only_run(GpxSource().decode(path, HASH))
    assert run.source == "gpx"
    assert run.source_key == f"{HASH}:0"
    assert run.sport == "running"
    assert run.cadence_source == CadenceSource.STREAM
    assert run.start_time == START
    assert run.start_time.tzinfo is not None
    assert run.steps == pytest.approx(2 * 85 * 1800 / 60, rel=0.005)
    assert run.avg_cadence_spm == pytest.approx(170, rel=0.005)
    assert run.distance_m == pytest.approx(5400, rel=0.005)
    assert run.timer_s == pytest.approx(1800)
    assert run.elapsed_s == pytest.approx(1800)
    assert run.device == "stridecare tests"
    assert run.name == "track 0"
    assert run.ascent_m is not None
    assert run.ascent_m > 0
    assert len(run.samples) == 1801
    assert run.samples.speed_mps[10] == pytest.approx(3.0, rel=0.01)


def test_gpx_without_cadence_is_estimated_from_speed(tmp_path: Path) -> None:
    path = write(tmp_path / "run.gpx", gpx_xml([("running", track_points(interval_s=5), None)], ele=False))
    run = only_run(GpxSource().decode(path, HASH))
    assert run.cadence_source == CadenceSource.ESTIMATED
    # c(3 m/s) = 160 steps/min over 30 minutes.
    assert run.steps == pytest.approx(160 * 30, rel=0.01)
    assert run.ascent_m is None


def test_gpx_gap_without_movement_is_a_pause_but_a_moving_gap_counts(tmp_path: Path) -> None:
    paused = track_points(pauses=[(600, 120)])
    run = only_run(GpxSource().decode(write(tmp_path / "p.gpx", gpx_xml([("running", paused, 85.0)])), HASH))
    assert run.elapsed_s == pytest.approx(1920)
    assert run.timer_s == pytest.approx(1800)
    assert run.steps == pytest.approx(2 * 85 * 1800 / 60, rel=0.005)

    # Smart recording every 40 s while running: every interval counts.
    sparse = track_points(interval_s=40, duration_s=1800)
    run = only_run(GpxSource().decode(write(tmp_path / "s.gpx", gpx_xml([("running", sparse, 85.0)])), HASH))
    assert run.timer_s == pytest.approx(1800 - 1800 % 40)


@pytest.mark.parametrize(
    ("kind", "speed", "expected"),
    [
        (None, 3.0, "running"),
        ("", 1.0, "walking"),
        ("Other", 3.5, "running"),
        ("hiking", 1.0, "hiking"),
        ("9", 3.0, "running"),
        ("trail_running", 2.5, "running"),
        ("Walk", 1.2, "walking"),
    ],
)
def test_gpx_sport_from_type_or_speed(tmp_path: Path, kind: str | None, speed: float, expected: str) -> None:
    path = write(tmp_path / "t.gpx", gpx_xml([(kind, track_points(speed_mps=speed, duration_s=600), None)]))
    assert only_run(GpxSource().decode(path, HASH)).sport == expected


@pytest.mark.parametrize(("kind", "speed"), [(None, 10.0), (None, 0.2), ("cycling", 3.0), ("1", 6.0)])
def test_gpx_non_foot_or_implausible_tracks_are_skipped(tmp_path: Path, kind: str | None, speed: float) -> None:
    path = write(tmp_path / "t.gpx", gpx_xml([(kind, track_points(speed_mps=speed, duration_s=600), None)]))
    result = GpxSource().decode(path, HASH)
    assert result.runs == []
    assert len(result.skipped) == 1
    assert result.skipped[0].reason


def test_gpx_tracks_are_runs_by_index(tmp_path: Path) -> None:
    ride = track_points(speed_mps=8.0, duration_s=600)
    run = track_points(start=START + timedelta(hours=1), duration_s=600)
    result = GpxSource().decode(
        write(tmp_path / "two.gpx", gpx_xml([("cycling", ride, None), ("running", run, 85.0)])), HASH
    )
    assert [r.source_key for r in result.runs] == [f"{HASH}:1"]
    assert "cycling" in result.skipped[0].reason


def test_gpx_route_only_is_skipped_and_broken_xml_is_one_line(tmp_path: Path) -> None:
    route = write(
        tmp_path / "route.gpx",
        '<gpx version="1.1" creator="x" xmlns="http://www.topografix.com/GPX/1/1">'
        '<rte><rtept lat="48" lon="11"/><rtept lat="48.1" lon="11"/></rte></gpx>',
    )
    result = GpxSource().decode(route, HASH)
    assert result.runs == []
    assert "without tracks" in result.skipped[0].reason

    untimed = write(
        tmp_path / "untimed.gpx",
        '<gpx version="1.1" creator="x" xmlns="http://www.topografix.com/GPX/1/1">'
        '<trk><type>running</type><trkseg><trkpt lat="48" lon="11"/><trkpt lat="48.1" lon="11"/>'
        "</trkseg></trk></gpx>",
    )
    result = GpxSource().decode(untimed, HASH)
    assert result.runs == []
    assert "timed points" in result.skipped[0].reason

    text = gpx_xml([("running", track_points(duration_s=60), None)])
    broken = write(tmp_path / "broken.gpx", text[: len(text) // 2])
    with pytest.raises(DecodeError) as info:
        GpxSource().decode(broken, HASH)
    assert "GPX" in str(info.value)
    assert "\n" not in str(info.value)

    binary = tmp_path / "binary.gpx"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DecodeError) as info:
        GpxSource().decode(binary, HASH)
    assert "\n" not in str(info.value)


# -- TCX -------------------------------------------------------------------------------------------


def test_tcx_run_cadence_extension_counts_the_stream(tmp_path: Path) -> None:
    path = write(tmp_path / "run.tcx", tcx_xml([("Running", track_points(), 85.0)]))
    run = only_run(TcxSource().decode(path, HASH))
    assert run.source == "tcx"
    assert run.source_key == f"{HASH}:0"
    assert run.sport == "running"
    assert run.cadence_source == CadenceSource.STREAM
    assert run.start_time == START
    assert run.steps == pytest.approx(5100, rel=0.005)
    assert run.distance_m == pytest.approx(5400, rel=0.001)  # the lap's DistanceMeters
    assert run.timer_s == pytest.approx(1800)
    assert run.device == "Forerunner 245"


def test_tcx_without_cadence_is_estimated_and_lap_cadence_is_session(tmp_path: Path) -> None:
    plain = write(tmp_path / "plain.tcx", tcx_xml([("Running", track_points(), None)]))
    run = only_run(TcxSource().decode(plain, HASH))
    assert run.cadence_source == CadenceSource.ESTIMATED
    assert run.steps == pytest.approx(160 * 30, rel=0.01)

    laps = write(tmp_path / "laps.tcx", tcx_xml([("Running", track_points(), None)], lap_only=True, lap_cadence=84))
    run = only_run(TcxSource().decode(laps, HASH))
    assert run.cadence_source == CadenceSource.SESSION
    assert len(run.samples) == 0
    assert run.steps == pytest.approx(2 * 84 * 1800 / 60)
    assert run.distance_m == pytest.approx(5400, rel=0.001)


def test_tcx_treadmill_without_positions_keeps_its_distance(tmp_path: Path) -> None:
    path = write(tmp_path / "tm.tcx", tcx_xml([("Running", track_points(interval_s=2), 86.0)], positions=False))
    run = only_run(TcxSource().decode(path, HASH))
    assert len(run.samples) == 901
    assert run.samples.distance_m[-1] == pytest.approx(5400, rel=0.001)
    assert run.steps == pytest.approx(2 * 86 * 1800 / 60, rel=0.005)


def test_tcx_new_track_inside_a_lap_is_a_pause(tmp_path: Path) -> None:
    # The athlete walks on slowly while the timer is stopped: the gap rule alone would count it.
    points = track_points(duration_s=1200)
    resume = points[601][0] + timedelta(seconds=90)
    shifted = points[:601] + [
        (t + timedelta(seconds=90), lat + 50 / _M_PER_DEG, lon, m + 50) for t, lat, lon, m in points[601:]
    ]
    path = write(tmp_path / "pause.tcx", tcx_xml([("Running", shifted, 85.0)], split_track_at=resume))
    run = only_run(TcxSource().decode(path, HASH))
    assert run.elapsed_s == pytest.approx(1290)
    assert run.steps == pytest.approx(2 * 85 * 1200 / 60, rel=0.005)


def test_tcx_activities_sports_and_damage(tmp_path: Path) -> None:
    later = START + timedelta(hours=2)
    path = write(
        tmp_path / "multi.tcx",
        tcx_xml(
            [
                ("Biking", track_points(speed_mps=8.0, duration_s=600), None),
                ("Running", track_points(start=later, duration_s=600), 85.0),
                (
                    "Other",
                    track_points(start=later + timedelta(hours=1), speed_mps=1.1, duration_s=600),
                    None,
                ),
            ]
        ),
    )
    result = TcxSource().decode(path, HASH)
    assert [(r.source_key, r.sport) for r in result.runs] == [
        (f"{HASH}:1", "running"),
        (f"{HASH}:2", "walking"),
    ]
    assert len(result.skipped) == 1
    assert "Biking" in result.skipped[0].reason

    text = tcx_xml([("Running", track_points(duration_s=60), None)])
    with pytest.raises(DecodeError) as info:
        TcxSource().decode(write(tmp_path / "cut.tcx", text[:-200]), HASH)
    assert "TCX" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(DecodeError, match="not a TCX file"):
        TcxSource().decode(write(tmp_path / "gpx.tcx", gpx_xml([("running", track_points(duration_s=60), None)])), HASH)

    course = write(
        tmp_path / "course.tcx",
        '<TrainingCenterDatabase xmlns="http://www.garmin.com/xmlschemas/'
        'TrainingCenterDatabase/v2"><Courses/></TrainingCenterDatabase>',
    )
    assert TcxSource().decode(course, HASH).runs == []


# -- gzip ------------------------------------------------------------------------------------------


def _key(run: ParsedRun) -> tuple[object, ...]:
    return (
        run.source,
        run.source_key,
        run.sport,
        run.start_time,
        round(run.steps, 6),
        round(run.distance_m, 6),
        run.cadence_source,
        len(run.samples),
    )


def test_gzip_variants_decode_to_the_same_runs(tmp_path: Path) -> None:
    fit = tmp_path / "run.fit"
    write_activity(fit, start=START, duration_s=1200, speed_mps=3.2, cadence_rpm=86)
    gpx = write(tmp_path / "run.gpx", gpx_xml([("running", track_points(duration_s=1200), 85.0)]))
    tcx = write(tmp_path / "run.tcx", tcx_xml([("Running", track_points(duration_s=1200), None)]))
    sources = registered_sources()
    for plain in (fit, gpx, tcx):
        packed = gz(plain)
        outer = source_for(packed, sources)
        inner = source_for(plain, sources)
        assert outer is not None
        assert inner is not None
        assert outer.name == inner.name
        assert isinstance(outer, GzipSource)
        assert [_key(r) for r in outer.decode(packed, HASH).runs] == [_key(r) for r in inner.decode(plain, HASH).runs]
        decoded = decode_path(packed, None, 64 << 20, DEFAULT_CONSTANTS)
        assert decoded.error is None
        assert decoded.source == inner.name
        assert decoded.result is not None
        assert decoded.result.runs[0].source == inner.name
        # The compressed file's own hash keys the runs: the same .gz twice is one import.
        assert decoded.content_hash is not None
        assert decoded.result.runs[0].source_key.startswith(decoded.content_hash)


def test_gzip_bombs_and_damage_are_one_line_errors(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.fit.gz"
    bomb.write_bytes(gzip.compress(b"\0" * (8 << 20), compresslevel=9))
    with pytest.raises(DecodeError) as info:
        FitGzSource().decode(bomb, HASH)
    assert "refused" in str(info.value)
    assert "200x" in str(info.value)
    assert "\n" not in str(info.value)

    fit = tmp_path / "run.fit"
    write_activity(fit, start=START, duration_s=600)
    small_cap = GzipSource(FitSource(), max_bytes=1000)
    with pytest.raises(DecodeError, match="more than 1000 bytes"):
        small_cap.decode(gz(fit), HASH)

    corrupt = tmp_path / "corrupt.fit.gz"
    corrupt.write_bytes(b"this is not gzip at all" * 10)
    truncated = tmp_path / "truncated.gpx.gz"
    truncated.write_bytes(gzip.compress(gpx_xml([("running", track_points(), None)]).encode())[:500])
    flipped = tmp_path / "flipped.fit.gz"
    data = bytearray(gz(fit).read_bytes())
    data[-6] ^= 0xFF  # inside the CRC trailer
    flipped.write_bytes(bytes(data))
    for path in (bomb, corrupt, truncated, flipped):
        decoded = decode_path(path, None, 64 << 20, DEFAULT_CONSTANTS)
        assert decoded.result is None, path
        assert decoded.error, path
        assert "\n" not in decoded.error
    assert "damaged gzip" in (decode_path(corrupt, None, 64 << 20, DEFAULT_CONSTANTS).error or "")
    assert "truncated" in (decode_path(truncated, None, 64 << 20, DEFAULT_CONSTANTS).error or "")

    # An inner file that is damaged keeps the inner source's reason.
    bad_inner = tmp_path / "bad.fit.gz"
    bad_inner.write_bytes(gzip.compress(fit.read_bytes()[:300]))
    assert "FIT" in (decode_path(bad_inner, None, 64 << 20, DEFAULT_CONSTANTS).error or "")


def test_entry_points_register_every_format() -> None:
    classes = source_classes()
    for name in ("fit", "gpx", "tcx", "fit_gz", "gpx_gz", "tcx_gz"):
        assert name in classes, name
    sources = registered_sources()
    picked = source_for(Path("A.FIT.GZ"), sources)
    assert isinstance(picked, FitGzSource)
    assert picked.name == "fit"
    assert isinstance(source_for(Path("x.gpx"), sources), GpxSource)
    assert isinstance(source_for(Path("x.tcx"), sources), TcxSource)
    assert source_for(Path("x.kml"), sources) is None


def test_gpx_and_gzip_store_once(rt: Runtime, tmp_path: Path) -> None:
    gpx = write(tmp_path / "run.gpx", gpx_xml([("running", track_points(), 85.0)]))
    first = ingest_planned(rt.db, rt.settings, "me", gpx, START + timedelta(days=1))
    assert first.status == "ingested"
    assert first.runs[0]["source"] == "gpx"
    assert first.runs[0]["cadence_source"] == "stream"
    assert first.runs[0]["load"] is not None
    copy = tmp_path / "copy.gpx"
    copy.write_bytes(gpx.read_bytes())
    assert ingest_planned(rt.db, rt.settings, "me", copy, START + timedelta(days=1)).status == "duplicate"
    packed = gz(gpx)
    assert ingest_planned(rt.db, rt.settings, "me", packed, START + timedelta(days=1)).status == "ingested"
    again = tmp_path / "again.gpx.gz"
    again.write_bytes(packed.read_bytes())
    assert ingest_planned(rt.db, rt.settings, "me", again, START + timedelta(days=1)).status == "duplicate"
