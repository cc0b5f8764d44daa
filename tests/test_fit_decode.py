"""FitSource on synthetic files written by ``fitgen`` (known truth)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fitgen import (
    Segment,
    write_activity,
    write_bad_crc,
    write_bad_header,
    write_chained,
    write_non_activity,
    write_truncated,
)

from ingest.fit import FitSource
from stridecare.domain.run import CadenceSource, DecodeError
from stridecare.plugins import FileSource

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)


def _decode(path: Path):  # type: ignore[no-untyped-def]
    return FitSource().decode(path, "hash")


def test_fit_source_is_a_file_source() -> None:
    assert isinstance(FitSource(), FileSource)
    assert FitSource.name == "fit"
    assert FitSource.suffixes == (".fit",)


def test_worked_example_run(tmp_path: Path) -> None:
    info = write_activity(
        tmp_path / "run.fit",
        start=START,
        duration_s=3000,
        speed_mps=10000 / 3000,
        cadence_rpm=85,
        utc_offset_s=3600,
        sample_interval_s=1,
    )
    result = _decode(info.path)
    assert result.skipped == []
    (run,) = result.runs
    assert run.source == "fit"
    assert run.source_key == "hash:0"
    assert run.sport == "running"
    assert run.sub_sport is None
    assert run.start_time == START
    assert run.start_time.tzinfo is not None
    assert run.utc_offset_s == 3600
    assert run.timer_s == pytest.approx(3000)
    assert run.elapsed_s == pytest.approx(3000)
    assert run.distance_m == pytest.approx(10000, rel=1e-3)
    assert run.steps == pytest.approx(8500, rel=1e-3)
    assert run.avg_cadence_spm == pytest.approx(170, rel=1e-3)
    assert run.cadence_source is CadenceSource.STREAM
    assert run.device_total_strides == pytest.approx(8500, abs=2)
    assert run.device == "development 1"
    samples = run.samples
    assert len(samples) == 3001
    assert samples.t[0] == 0.0
    assert samples.t[-1] == 3000.0
    assert set(samples.cadence_spm) == {170.0}
    assert samples.speed_mps[10] == pytest.approx(3.333, abs=1e-3)


def test_smart_recording_pauses_are_excluded(tmp_path: Path) -> None:
    info = write_activity(
        tmp_path / "paused.fit",
        start=START,
        duration_s=2400,
        speed_mps=3.0,
        cadence_rpm=88.5,
        sample_interval_s=7,
        pauses=[(600, 300), (1500, 45)],
    )
    (run,) = _decode(info.path).runs
    assert run.elapsed_s == pytest.approx(2400 + 345)
    assert run.timer_s == pytest.approx(2400)
    # Counting the paused intervals would add 345 s × 177 spm ≈ 1018 steps.
    assert run.steps == pytest.approx(177 * 2400 / 60, rel=1e-3)
    assert run.samples.timer_running.count(False) == 2


def test_unit_trap_170_rpm_in_the_file_is_not_doubled(tmp_path: Path) -> None:
    info = write_activity(tmp_path / "spm.fit", start=START, duration_s=600, cadence_rpm=170)
    (run,) = _decode(info.path).runs
    assert run.steps == pytest.approx(1700, rel=1e-3)
    assert run.avg_cadence_spm == pytest.approx(170, rel=1e-3)


def test_stream_wins_over_a_wrong_device_total(tmp_path: Path) -> None:
    info = write_activity(tmp_path / "wrong.fit", start=START, duration_s=1200, cadence_rpm=85, total_strides=85.0)
    (run,) = _decode(info.path).runs
    assert run.device_total_strides == pytest.approx(170)
    assert run.steps == pytest.approx(3400, rel=1e-3)
    assert run.cadence_source is CadenceSource.STREAM


def test_multisport_one_run_per_foot_session_and_the_ride_is_skipped(tmp_path: Path) -> None:
    info = write_activity(
        tmp_path / "multi.fit",
        start=START,
        multisport=[
            Segment("running", duration_s=900, speed_mps=3.2, cadence_rpm=84),
            Segment("cycling", duration_s=1800, speed_mps=8.0, cadence_rpm=95),
            Segment(
                "running",
                sub_sport="trail",
                duration_s=1200,
                speed_mps=2.8,
                cadence_rpm=80,
                altitude=lambda t: 200.0 + 0.1 * t,
            ),
        ],
    )
    result = _decode(info.path)
    assert [(s.sport, s.sub_sport) for s in result.skipped] == [("cycling", None)]
    assert "cycling" in result.skipped[0].reason
    first, trail = result.runs
    assert (first.sport, trail.sport, trail.sub_sport) == ("running", "running", "trail")
    assert first.source_key == "hash:0"
    assert trail.source_key == "hash:2"
    # The ride's 95 rpm never leaks into a run's steps.
    assert first.steps == pytest.approx(168 * 15, rel=1e-3)
    assert trail.steps == pytest.approx(160 * 20, rel=1e-3)
    assert trail.start_time == START + timedelta(seconds=2700)
    assert trail.distance_m == pytest.approx(2.8 * 1200, rel=1e-3)
    assert trail.ascent_m == pytest.approx(120, abs=1)


def test_missing_cadence_is_estimated_from_speed(tmp_path: Path) -> None:
    info = write_activity(tmp_path / "nocad.fit", start=START, duration_s=1800, speed_mps=4.0, include_cadence=False)
    (run,) = _decode(info.path).runs
    assert run.cadence_source is CadenceSource.ESTIMATED
    assert run.steps == pytest.approx(168 * 30, rel=1e-3)  # c(4 m/s) = 168 spm
    assert all(c is None for c in run.samples.cadence_spm)


def test_file_without_records_uses_session_totals(tmp_path: Path) -> None:
    info = write_activity(
        tmp_path / "summary.fit",
        start=START,
        duration_s=2000,
        speed_mps=3.0,
        cadence_rpm=87,
        include_records=False,
    )
    (run,) = _decode(info.path).runs
    assert len(run.samples) == 0
    assert run.cadence_source is CadenceSource.SESSION
    assert run.steps == pytest.approx(2 * 87 * 2000 / 60, abs=2)
    assert run.distance_m == pytest.approx(6000, rel=1e-3)


def test_file_without_records_or_strides_is_estimated_from_average_speed(tmp_path: Path) -> None:
    info = write_activity(
        tmp_path / "bare.fit",
        start=START,
        duration_s=2000,
        speed_mps=2.0,
        cadence_rpm=87,
        include_records=False,
        write_total_strides=False,
    )
    (run,) = _decode(info.path).runs
    assert run.cadence_source is CadenceSource.ESTIMATED
    assert run.steps == pytest.approx(152 * 2000 / 60, rel=1e-3)


def test_chained_copy_of_the_same_activity_counts_once(tmp_path: Path) -> None:
    info = write_activity(tmp_path / "one.fit", start=START, duration_s=600, cadence_rpm=85)
    chained = write_chained([info.path, info.path], tmp_path / "chained.fit")
    (run,) = _decode(chained).runs
    assert run.steps == pytest.approx(1700, rel=1e-3)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda src, dst: write_truncated(src, dst, 0.6), "truncated"),
        (write_bad_crc, "CRC mismatch"),
        (write_bad_header, "header"),
        (lambda src, dst: write_truncated(src, dst, 0.01), "damaged FIT file"),
    ],
)
def test_damaged_file_is_a_one_line_decode_error(tmp_path: Path, damage, fragment: str) -> None:  # type: ignore[no-untyped-def]
    info = write_activity(tmp_path / "ok.fit", start=START, duration_s=300)
    bad = damage(info.path, tmp_path / "bad.fit")
    with pytest.raises(DecodeError) as caught:
        _decode(bad)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("damaged FIT file")
    assert fragment in message


def test_missing_file_is_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="cannot read"):
        _decode(tmp_path / "absent.fit")


def test_not_an_activity_is_skipped_not_an_error(tmp_path: Path) -> None:
    result = _decode(write_non_activity(tmp_path / "settings.fit"))
    assert result.runs == []
    assert "not an activity" in result.skipped[0].reason
