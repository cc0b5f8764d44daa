"""Strava activity → ParsedRun: per-foot doubling, unit trap, moving mask, summary-only, sports, offsets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_strava import make_activity, synth_streams

from ingest.strava.convert import convert_activity, sport_of, steps_from_samples
from stridecare.domain.run import CadenceSource, ParsedRun, SkippedSession

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "strava" / "stravalib"
START = datetime(2026, 3, 1, 7, 30, tzinfo=UTC)


def run(activity: Any, streams: Any = None) -> ParsedRun:
    result = convert_activity(activity, streams)
    assert isinstance(result, ParsedRun)
    return result


def streams_of(t: list[float], cadence: list[float | None] | None, moving: list[bool] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"time": {"data": t}, "distance": {"data": [3.0 * x for x in t]}}
    if cadence is not None:
        out["cadence"] = {"data": cadence}
    if moving is not None:
        out["moving"] = {"data": moving}
    return out


def test_per_foot_cadence_stream_is_doubled() -> None:
    t = [float(i) for i in range(3001)]
    parsed = run(make_activity(1, START), streams_of(t, [85.0] * 3001))
    assert parsed.cadence_source is CadenceSource.STREAM
    assert parsed.steps == pytest.approx(8500.0)  # 170 spm × 50 min: the model's worked example
    assert parsed.avg_cadence_spm == pytest.approx(170.0)
    assert parsed.samples.cadence_spm[10] == 170.0


def test_stream_already_in_steps_per_minute_is_not_doubled() -> None:
    t = [float(i) for i in range(601)]
    parsed = run(make_activity(1, START, moving_time=600), streams_of(t, [170.0] * 601))
    assert parsed.steps == pytest.approx(1700.0)
    assert parsed.avg_cadence_spm == pytest.approx(170.0)


def test_steps_only_while_moving() -> None:
    # 0-600 s running, 600-900 s stopped at a light (cadence still reported), 900-1200 s running.
    t = [float(i) for i in range(1201)]
    moving = [not (600 < i <= 900) for i in range(1201)]
    parsed = run(make_activity(1, START, moving_time=900), streams_of(t, [85.0] * 1201, moving))
    assert parsed.steps == pytest.approx(170 * 900 / 60)
    assert parsed.samples.timer_running[700] is False


def test_sample_gaps_are_not_dropped() -> None:
    # Smart recording: a sample every 5 s covers 5 s of running each.
    t = [float(i * 5) for i in range(121)]
    parsed = run(make_activity(1, START, moving_time=600), streams_of(t, [90.0] * 121))
    assert parsed.steps == pytest.approx(180 * 600 / 60)


def test_synthesised_fake_streams_match_summary() -> None:
    activity = make_activity(7, START, moving_time=3000, average_cadence=85.0)
    parsed = run(activity, {k: {"data": v} for k, v in synth_streams(activity).items()})
    assert parsed.steps == pytest.approx(8500.0)
    assert not all(parsed.samples.timer_running)


def test_summary_only_uses_average_cadence() -> None:
    parsed = run(make_activity(1, START, moving_time=3000, average_cadence=84.5))
    assert parsed.cadence_source is CadenceSource.SESSION
    assert parsed.steps == pytest.approx(2 * 84.5 * 3000 / 60)
    assert parsed.avg_cadence_spm == pytest.approx(169.0)
    assert len(parsed.samples) == 0


def test_streams_without_cadence_fall_back_to_summary() -> None:
    t = [float(i) for i in range(101)]
    parsed = run(make_activity(1, START, moving_time=3000, average_cadence=80.0), streams_of(t, None))
    assert parsed.cadence_source is CadenceSource.SESSION
    assert parsed.steps == pytest.approx(160 * 50)
    assert len(parsed.samples) == 101  # the samples are still kept for speed and grade


def test_no_cadence_at_all_is_estimated() -> None:
    activity = make_activity(1, START, moving_time=3000, distance=10000.0, average_cadence=None)
    parsed = run(activity)
    assert parsed.cadence_source is CadenceSource.ESTIMATED
    # c(v) = 160 + 8 (v − 3) at 3.333 m/s
    assert parsed.avg_cadence_spm == pytest.approx(160 + 8 * (10000 / 3000 - 3))
    assert parsed.steps == pytest.approx((parsed.avg_cadence_spm or 0.0) * 50)
    custom = convert_activity(activity, cadence_model=lambda v: 175.0)
    assert isinstance(custom, ParsedRun)
    assert custom.steps == pytest.approx(175 * 50)


@pytest.mark.parametrize(
    ("sport_type", "trainer", "expected"),
    [
        ("Run", False, ("running", None)),
        ("Run", True, ("running", "treadmill")),
        ("TrailRun", False, ("running", "trail")),
        ("VirtualRun", False, ("running", "virtual")),
        ("Walk", False, ("walking", None)),
        ("Hike", False, ("hiking", None)),
    ],
)
def test_foot_sports(sport_type: str, trainer: bool, expected: tuple[str, str | None]) -> None:
    parsed = run(make_activity(1, START, sport_type=sport_type, trainer=trainer))
    assert (parsed.sport, parsed.sub_sport) == expected
    assert parsed.source == "strava"
    assert parsed.source_key == "1"


@pytest.mark.parametrize("sport_type", ["Ride", "MountainBikeRide", "Swim", "AlpineSki", "Yoga", "EBikeRide"])
def test_other_sports_are_skipped(sport_type: str) -> None:
    result = convert_activity(make_activity(1, START, sport_type=sport_type))
    assert isinstance(result, SkippedSession)
    assert sport_type in result.reason


def test_legacy_type_without_sport_type() -> None:
    activity = make_activity(1, START)
    del activity["sport_type"]
    assert sport_of(activity) == ("running", None)


@pytest.mark.parametrize("offset_s", [3600, -8 * 3600, 5 * 3600 + 1800, 0])
def test_start_time_and_offset(offset_s: int) -> None:
    parsed = run(make_activity(1, START, utc_offset_s=offset_s))
    assert parsed.start_time == START
    assert parsed.start_time.tzinfo is not None
    assert parsed.utc_offset_s == offset_s


def test_offset_across_midnight() -> None:
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    parsed = run(make_activity(1, late, utc_offset_s=2 * 3600))
    assert parsed.utc_offset_s == 7200
    assert (parsed.start_time + timedelta(seconds=parsed.utc_offset_s)).day == 2


def test_summary_fields() -> None:
    parsed = run(make_activity(42, START, moving_time=3000, elapsed_time=3300, distance=10123.4))
    assert (parsed.timer_s, parsed.elapsed_s, parsed.distance_m, parsed.ascent_m) == (
        3000,
        3300,
        10123.4,
        42.0,
    )
    assert parsed.name == "Run 42"


def test_streams_list_form_and_descent() -> None:
    t = list(range(5))
    streams = [
        {"type": "time", "data": t},
        {"type": "cadence", "data": [85] * 5},
        {"type": "altitude", "data": [100.0, 98.0, 99.0, 95.0, 95.5]},
    ]
    parsed = run(make_activity(1, START, moving_time=4), streams)
    assert parsed.steps == pytest.approx(170 * 4 / 60)
    assert parsed.descent_m == pytest.approx(6.0)  # 100→98, then 99→95


def test_steps_from_samples_ignores_non_increasing_time() -> None:
    parsed = run(make_activity(1, START, moving_time=2), streams_of([0.0, 1.0, 1.0, 2.0], [85.0] * 4))
    assert steps_from_samples(parsed.samples)[0] == pytest.approx(170 * 2 / 60)


def test_stravalib_detailed_run_from_corpus() -> None:
    path = CORPUS / "activity.3.json"
    if not path.exists():
        pytest.skip(f"corpus file {path} is absent (shared/corpus/strava not mounted)")
    data = json.loads(path.read_text())
    parsed = run(data)
    assert parsed.source_key == "99895560"
    assert parsed.start_time == datetime(2013, 12, 12, 19, 36, 41, tzinfo=UTC)
    assert parsed.utc_offset_s == -8 * 3600
    # The stravalib example has no average_cadence: estimated from its 2.0 m/s.
    assert parsed.cadence_source is CadenceSource.ESTIMATED
    assert parsed.avg_cadence_spm == pytest.approx(152.0)


def test_swagger_ride_example_is_skipped() -> None:
    path = CORPUS / "swagger_example_detailed_activity.json"
    if not path.exists():
        pytest.skip(f"corpus file {path} is absent (shared/corpus/strava not mounted)")
    assert isinstance(convert_activity(json.loads(path.read_text())), SkippedSession)


def test_stravalib_model_input() -> None:
    from stravalib import model

    activity = model.SummaryActivity.model_validate(make_activity(5, START, average_cadence=86.0))
    parsed = run(activity)
    assert parsed.source_key == "5"
    assert parsed.steps == pytest.approx(2 * 86 * 3000 / 60)
    assert parsed.utc_offset_s == 3600
