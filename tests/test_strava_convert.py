"""Strava activity → ParsedRun: per-foot doubling, unit trap, moving mask, summary-only, sports, offsets."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_strava import make_activity, synth_streams

from ingest.strava.convert import convert_activity, sport_of
from stridecare.domain.load import DEFAULT_CONSTANTS
from stridecare.domain.run import CadenceSource, ParsedRun, SkippedSession
from stridecare.domain.steps import steps_from_samples

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "strava" / "stravalib"
START = datetime(2026, 3, 1, 7, 30, tzinfo=UTC)


def run(activity: Any, streams: Any = None) -> ParsedRun:
    result = convert_activity(activity, DEFAULT_CONSTANTS, streams)
    assert isinstance(result, ParsedRun)
    return result


def streams_of(t: list[float], cadence: list[float | None] | None, moving: list[bool] | None = None) -> dict[str, Any]:
    # 3 m/s: the activities these go with state a distance that fits (a step length a foot can take).
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
    parsed = run(make_activity(1, START, moving_time=600, distance=1800.0), streams_of(t, [170.0] * 601))
    assert parsed.steps == pytest.approx(1700.0)
    assert parsed.avg_cadence_spm == pytest.approx(170.0)


def test_steps_only_while_moving() -> None:
    # 0-600 s running, 600-900 s stopped at a light (cadence still reported), 900-1200 s running.
    t = [float(i) for i in range(1201)]
    moving = [not (600 < i <= 900) for i in range(1201)]
    parsed = run(make_activity(1, START, moving_time=900, distance=2700.0), streams_of(t, [85.0] * 1201, moving))
    assert parsed.steps == pytest.approx(170 * 900 / 60)
    assert parsed.samples.timer_running[700] is False


def test_sample_gaps_are_not_dropped() -> None:
    # Smart recording: a sample every 5 s covers 5 s of running each.
    t = [float(i * 5) for i in range(121)]
    parsed = run(make_activity(1, START, moving_time=600, distance=1800.0), streams_of(t, [90.0] * 121))
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
    result = convert_activity(make_activity(1, START, sport_type=sport_type), DEFAULT_CONSTANTS)
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
    parsed = run(make_activity(1, START, moving_time=4, distance=12.0), streams)
    assert parsed.steps == pytest.approx(170 * 4 / 60)
    # One drop from 100 to 95: the 1 m rebound to 99 is below the 3 m noise threshold.
    assert parsed.descent_m == pytest.approx(5.0)


def test_steps_from_samples_ignores_non_increasing_time() -> None:
    parsed = run(make_activity(1, START, moving_time=2, distance=6.0), streams_of([0.0, 1.0, 1.0, 2.0], [85.0] * 4))
    assert steps_from_samples(parsed.samples) == pytest.approx(170 * 2 / 60)


def test_stravalib_detailed_run_from_corpus() -> None:
    path = CORPUS / "activity.3.json"
    if not path.exists():
        pytest.skip(f"corpus file {path} is absent (shared/corpus/strava not mounted)")
    data = json.loads(path.read_text())
    parsed = run(data)
    assert parsed.source_key == "99895560"
    assert parsed.start_time == datetime(2013, 12, 12, 19, 36, 41, tzinfo=UTC)
    assert parsed.utc_offset_s == -8 * 3600
    # The stravalib example has no average_cadence: estimated, like a FIT file, from distance / moving time
    # (2.0 m/s, as its average_speed says).
    assert parsed.cadence_source is CadenceSource.ESTIMATED
    assert parsed.avg_cadence_spm == pytest.approx(152.0, abs=0.05)


def test_swagger_ride_example_is_skipped() -> None:
    path = CORPUS / "swagger_example_detailed_activity.json"
    if not path.exists():
        pytest.skip(f"corpus file {path} is absent (shared/corpus/strava not mounted)")
    assert isinstance(convert_activity(json.loads(path.read_text()), DEFAULT_CONSTANTS), SkippedSession)


def test_stravalib_model_input() -> None:
    from stravalib import model

    activity = model.SummaryActivity.model_validate(make_activity(5, START, average_cadence=86.0))
    parsed = run(activity)
    assert parsed.source_key == "5"
    assert parsed.steps == pytest.approx(2 * 86 * 3000 / 60)
    assert parsed.utc_offset_s == 3600


# -- one model, every source: the same stream as a FIT file and as Strava streams ---------------------------


def _strava_streams_of_fit(path: Path) -> tuple[dict[str, Any], float, float]:
    """The streams Strava builds from an uploaded FIT file: its records read with fitparse (time since the
    first record, distance, speed, raw per-foot cadence, altitude), and the moving time and distance."""
    import fitparse

    rows = [m.get_values() for m in fitparse.FitFile(str(path)).get_messages("record")]
    t0 = rows[0]["timestamp"]
    cadence = [r.get("cadence") for r in rows]
    streams: dict[str, Any] = {
        "time": {"data": [(r["timestamp"] - t0).total_seconds() for r in rows]},
        "distance": {"data": [r.get("distance") for r in rows]},
        "velocity_smooth": {"data": [r.get("enhanced_speed") for r in rows]},
        "altitude": {"data": [r.get("enhanced_altitude") for r in rows]},
        "moving": {"data": [True] * len(rows)},
    }
    if any(c is not None for c in cadence):
        streams["cadence"] = {
            "data": [
                None if c is None else c + (r.get("fractional_cadence") or 0.0)
                for c, r in zip(cadence, rows, strict=True)
            ]
        }
    session = next(iter(fitparse.FitFile(str(path)).get_messages("session"))).get_values()
    return streams, float(session["total_timer_time"]), float(session["total_distance"])


def _jitter(seed: int, amplitude: float) -> Any:
    import random

    noise = random.Random(seed)
    return lambda _t: noise.uniform(-amplitude, amplitude)


@pytest.mark.parametrize(
    ("label", "cadence_rpm", "hill_m"),
    [("flat, jittery altitude", 85.0, 0.0), ("a 30 m hill, jittery", 84.5, 30.0), ("no cadence, jittery", None, 0.0)],
)
def test_a_fit_run_and_its_strava_streams_give_the_same_steps_and_descent(
    tmp_path: Path, label: str, cadence_rpm: float | None, hill_m: float
) -> None:
    from fitgen import write_activity

    from ingest.fit import FitSource

    jitter = _jitter(7, 1.5)
    duration = 1800

    def altitude(t: float) -> float:
        # Up and back down a hill over the run, with ±1.5 m sensor noise on every sample.
        hill = hill_m * math.sin(math.pi * t / duration)
        return 200.0 + hill + float(jitter(t))

    path = tmp_path / "run.fit"
    write_activity(
        path,
        start=START,
        duration_s=duration,
        speed_mps=3.2,
        cadence_rpm=cadence_rpm,
        include_cadence=cadence_rpm is not None,
        altitude=altitude,
    )
    (fit_run,) = FitSource().decode(path, "hash").runs
    streams, moving_time, distance = _strava_streams_of_fit(path)
    activity = make_activity(9, START, moving_time=round(moving_time), distance=distance, average_cadence=cadence_rpm)
    strava_run = run(activity, streams)

    assert strava_run.cadence_source is fit_run.cadence_source, label
    assert round(strava_run.steps) == round(fit_run.steps), label
    assert fit_run.descent_m is not None and strava_run.descent_m is not None
    assert round(strava_run.descent_m) == round(fit_run.descent_m), label
    assert strava_run.samples.cadence_spm == fit_run.samples.cadence_spm
    # Noise of ±1.5 m does not add up: the descent is the hill's, give or take the noise at its turning points
    # (summing every downward wiggle, as the Strava path did before, gave hundreds of metres).
    assert hill_m - 0.5 <= fit_run.descent_m <= hill_m + 4 * 1.5, label
