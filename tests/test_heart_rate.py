"""Heart rate, where the source recorded it: FIT session, TCX trackpoints, Strava summary; stored and shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from factories import ingest_planned
from fake_strava import make_activity
from fitgen import write_activity
from sqlalchemy import select
from test_more_sources import tcx_xml
from webclient import admin

from ingest.fit import FitSource
from ingest.strava.convert import convert_activity
from ingest.tcx import TcxSource
from stridecare.db.models import Run
from stridecare.domain.load import DEFAULT_CONSTANTS
from stridecare.domain.run import ParsedRun
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app

START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


def test_fit_session_heart_rate_is_read_by_both_decoders(tmp_path: Path) -> None:
    path = tmp_path / "hr.fit"
    write_activity(path, start=START, duration_s=1200, heart_rate_bpm=(148, 171))
    for source in (FitSource(), FitSource(fast=False)):
        (run,) = source.decode(path, "h").runs
        assert (run.avg_heart_rate_bpm, run.max_heart_rate_bpm) == (148.0, 171.0)
    bare = tmp_path / "bare.fit"
    write_activity(bare, start=START, duration_s=1200)
    (run,) = FitSource().decode(bare, "h").runs
    assert run.avg_heart_rate_bpm is None and run.max_heart_rate_bpm is None


def test_fit_heart_rate_recorded_per_sample_counts_when_the_session_names_none(tmp_path: Path) -> None:
    path = tmp_path / "strap.fit"
    write_activity(path, start=START, duration_s=1200, sample_interval_s=2, record_heart_rate_bpm=(120, 160))
    for source in (FitSource(), FitSource(fast=False)):
        (run,) = source.decode(path, "h").runs
        assert run.avg_heart_rate_bpm is not None and abs(run.avg_heart_rate_bpm - 140.0) < 0.5
        assert run.max_heart_rate_bpm == 160.0
    both = tmp_path / "both.fit"  # the session's own figures win where it has them
    write_activity(both, start=START, duration_s=1200, heart_rate_bpm=(148, 171), record_heart_rate_bpm=(120, 160))
    (run,) = FitSource().decode(both, "h").runs
    assert (run.avg_heart_rate_bpm, run.max_heart_rate_bpm) == (148.0, 171.0)


def test_tcx_heart_rate_is_the_mean_and_max_of_its_trackpoints(tmp_path: Path) -> None:
    points = [(START + timedelta(seconds=i), 48.0 + i * 1e-5, 11.0, 3.0 * i) for i in range(0, 600, 2)]
    xml = tcx_xml([("Running", points, 85.0)])
    # Trackpoint heart rates 140…179; the lap average (another tag, 99 bpm) must not count.
    bpm = [140 + i % 40 for i in range(len(points))]
    rates = iter(bpm)
    xml = xml.replace("</DistanceMeters>\n<Extensions>", "</DistanceMeters>{hr}<Extensions>")
    assert xml.count("{hr}") == len(points)
    while "{hr}" in xml:
        xml = xml.replace("{hr}", f"<HeartRateBpm><Value>{next(rates)}</Value></HeartRateBpm>", 1)
    xml = xml.replace(
        "<Calories>300</Calories>",
        "<Calories>300</Calories><AverageHeartRateBpm><Value>99</Value></AverageHeartRateBpm>",
    )
    path = tmp_path / "hr.tcx"
    path.write_text(xml)
    (run,) = TcxSource().decode(path, "h").runs
    assert run.avg_heart_rate_bpm == sum(bpm) / len(bpm)
    assert run.max_heart_rate_bpm == 179


def test_strava_summary_heart_rate_and_nonsense_values() -> None:
    activity = make_activity(1, START) | {"average_heartrate": 151.4, "max_heartrate": 178.0}
    run = convert_activity(activity, DEFAULT_CONSTANTS)
    assert isinstance(run, ParsedRun)
    assert (run.avg_heart_rate_bpm, run.max_heart_rate_bpm) == (151.4, 178.0)
    odd = convert_activity(make_activity(2, START) | {"average_heartrate": 0, "max_heartrate": 900}, DEFAULT_CONSTANTS)
    assert isinstance(odd, ParsedRun)
    assert odd.avg_heart_rate_bpm is None and odd.max_heart_rate_bpm is None


def test_heart_rate_is_stored_and_shown_on_the_run_page(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "hr.fit"
    write_activity(path, start=rt.now() - timedelta(hours=2), duration_s=1800, heart_rate_bpm=(152, 176))
    assert ingest_planned(rt.db, rt.settings, "me", path, rt.now()).status == "ingested"
    with rt.db.transaction() as session:
        run = session.scalars(select(Run)).one()
        assert (run.avg_heart_rate_bpm, run.max_heart_rate_bpm) == (152.0, 176.0)
        run_id = run.id
    page = admin(create_app(rt), rt).get(f"/dashboard/me/runs/{run_id}")
    assert page.status_code == 200
    assert "152 bpm" in page.text and "max 176 bpm" in page.text
    assert "not recorded by this source" not in page.text
