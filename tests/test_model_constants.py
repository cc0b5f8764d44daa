"""One frozen set of model constants, built once from ``STRIDECARE_LOAD_*``; every such setting changes a result.

Each setting is set the way an operator sets it, as an environment variable read by ``Settings``, and the
result is computed with the constants those settings built: a setting that no figure depends on fails here.
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from fake_strava import make_activity
from fitgen import write_activity
from sqlalchemy import select
from test_more_sources import gpx_xml, track_points

from ingest.sandbox import decode_for
from ingest.strava.convert import convert_activity
from ingest.strava.sync import store_parsed
from recommender.planner import replan
from stridecare.db.athletes import ensure_athlete
from stridecare.db.models import Run
from stridecare.domain.flags import evaluate_flags
from stridecare.domain.history import RunSummary, daily_series
from stridecare.domain.load import LoadConstants, run_load, run_load_from_samples
from stridecare.domain.long_run import classify_long_run
from stridecare.domain.run import CadenceSource, ParsedRun, Samples
from stridecare.runtime import Runtime
from stridecare.settings import LoadModelSettings, Settings

DAY = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)


def segment(seconds: int, speed: float, cadence: float | None, grade: float = 0.0) -> list[tuple[float, ...]]:
    """``seconds`` one-second samples as (dt, speed, cadence, grade)."""
    return [(1.0, speed, cadence if cadence is not None else -1.0, grade)] * seconds


def samples_of(parts: list[tuple[float, ...]]) -> Samples:
    t: list[float] = []
    d: list[float | None] = []
    v: list[float | None] = []
    c: list[float | None] = []
    a: list[float | None] = []
    now = dist = 0.0
    alt = 500.0
    for dt, speed, cadence, grade in parts:
        now += dt
        dist += speed * dt
        alt += grade * speed * dt
        t.append(now)
        d.append(dist)
        v.append(speed)
        c.append(None if cadence < 0 else cadence)
        a.append(alt)
    return Samples(t, d, v, c, a, [True] * len(t))


def parsed(samples: Samples, key: str = "1", start: datetime = DAY) -> ParsedRun:
    distance = next(x for x in reversed(samples.distance_m) if x is not None)
    return ParsedRun(
        source="strava",
        source_key=key,
        sport="running",
        sub_sport=None,
        start_time=start,
        utc_offset_s=0,
        elapsed_s=samples.t[-1],
        timer_s=samples.t[-1],
        distance_m=distance,
        ascent_m=None,
        descent_m=None,
        steps=0.0,
        avg_cadence_spm=None,
        cadence_source=CadenceSource.ESTIMATED,
        samples=samples,
    )


# A run at 3.3 m/s and 170 spm, its second half down a 20 % slope (past the 9° cap), then a 5-minute walk.
MIXED = samples_of(segment(1200, 3.3, 170) + segment(1200, 3.3, 170, grade=-0.2) + segment(300, 1.4, 110))
ESTIMATED = {v: samples_of(segment(600, v, None)) for v in (1.0, 1.6, 3.5, 8.0)}


def load_probe(c: LoadConstants) -> tuple[float, ...]:
    out: list[float] = []
    for sex in (None, "f"):
        r = run_load_from_samples(MIXED, cadence_base_spm=160.0, sex=sex, constants=c)
        out += [r.load, r.peak_force_n, r.downhill_impact, r.walking_steps]
    for samples in ESTIMATED.values():
        r = run_load_from_samples(samples, constants=c)
        out += [r.load, r.steps, r.walking_steps]
    # Three earlier runs with cadence: enough for the athlete's own cadence line only below the default five.
    history = [(3.0, 176.0), (3.5, 182.0), (4.0, 188.0)]
    out.append(run_load(parsed(ESTIMATED[3.5]), cadence_history=history, constants=c).steps)
    return tuple(out)


def history_probe(c: LoadConstants) -> tuple[object, ...]:
    runs = [RunSummary(DAY + timedelta(days=d), load=1000.0 + 300 * (d % 3)) for d in range(0, 40, 1)]
    return tuple((r.acute, r.chronic, r.acwr) for r in daily_series(runs, "UTC", constants=c))


def flags_probe(c: LoadConstants) -> tuple[object, ...]:
    now = DAY + timedelta(days=60)

    def before(days: float, km: float) -> RunSummary:
        return RunSummary(now - timedelta(days=days), distance_m=km * 1000, timer_s=km * 300)

    spike_history = [before(d, 10) for d in (3, 8, 13, 20)]
    # Ramp: 64 km in the fortnight before, 70 km in the last one plus this run's 10 km (1.25×); over 7-day
    # windows 50 km against 30 km (1.67×).
    ramp_history = [before(d, 10) for d in (1, 2, 3, 4, 8, 9, 10)] + [
        before(d, 8) for d in (15, 16, 17, 19, 21, 23, 25, 27)
    ]
    this = RunSummary(now, distance_m=10_000, timer_s=3000)
    cases = [
        evaluate_flags(RunSummary(now, distance_m=12_000), spike_history, history_days=90, constants=c),
        evaluate_flags(RunSummary(now, distance_m=21_000), spike_history, history_days=90, constants=c),
        evaluate_flags(RunSummary(now, distance_m=12_000), spike_history[:2], history_days=90, constants=c),
        evaluate_flags(this, ramp_history, history_days=90, constants=c),
        evaluate_flags(
            this, [], last_7_daily_loads=[600, 1000, 1000, 950, 1000, 1100, 1000], history_days=90, constants=c
        ),
        evaluate_flags(this, [], acwr_value=1.6, history_days=90, constants=c),
        evaluate_flags(this, [], acwr_value=1.6, history_days=20, constants=c),
    ]
    return tuple(repr(flags) for flags in cases)


def long_run_probe(c: LoadConstants) -> tuple[object, ...]:
    now = DAY + timedelta(days=100)
    # Ten weeks of runs of 30-60 min, the longest 10 km in the last 30 days.
    previous = [
        RunSummary(now - timedelta(days=3 + 7 * w), distance_m=10_000 - 500 * w, timer_s=1800 + 180 * w)
        for w in range(10)
    ]
    cases = [
        classify_long_run(95 * 60, 8_000, now, previous, constants=c),
        classify_long_run(50 * 60, 12_000, now, previous, constants=c),
        classify_long_run(50 * 60, 13_500, now, previous[:2], constants=c),
        classify_long_run(58 * 60, 8_000, now, previous, constants=c),
    ]
    return tuple(repr(decision) for decision in cases)


Probe = Callable[[LoadConstants], tuple[object, ...]]

CASES: list[tuple[str, float, Probe]] = [
    ("force_a", 1.4, load_probe),
    ("force_b", 0.12, load_probe),
    ("force_a_female", 1.3, load_probe),
    ("force_b_female", 0.12, load_probe),
    ("cadence_k", 0.6, load_probe),
    ("reference_force_bw", 2.6, load_probe),
    ("exponent", 3.5, load_probe),
    ("downhill_per_degree", 0.08, load_probe),
    ("downhill_cap_degrees", 12, load_probe),
    ("default_mass_kg", 80, load_probe),
    ("default_cadence_intercept_spm", 170, load_probe),
    ("default_cadence_slope_spm_per_mps", 12, load_probe),
    ("default_cadence_min_spm", 140, load_probe),
    ("default_cadence_max_spm", 200, load_probe),
    ("cadence_fit_min_runs", 3, load_probe),
    ("walk_cadence_max_spm", 100, load_probe),
    ("walk_speed_max_mps", 1.0, load_probe),
    ("walk_force_a", 1.1, load_probe),
    ("walk_force_b", 0.2, load_probe),
    ("walk_force_min_bw", 1.3, load_probe),
    ("walk_force_max_bw", 1.1, load_probe),
    ("acute_days", 5, history_probe),
    ("chronic_days", 21, history_probe),
    ("acwr_min_history_days", 14, history_probe),
    ("spike_caution", 1.3, flags_probe),
    ("spike_high", 2.5, flags_probe),
    ("spike_window_days", 10, flags_probe),
    ("min_history_runs", 2, flags_probe),
    ("ramp_ratio", 1.2, flags_probe),
    ("ramp_window_days", 7, flags_probe),
    ("monotony_limit", 1000, flags_probe),
    ("monotony_days", 5, flags_probe),
    ("acwr_high", 1.7, flags_probe),
    ("long_run_absolute_min", 100, long_run_probe),
    ("long_run_relative_min", 55, long_run_probe),
    ("long_run_distance_ratio", 1.3, long_run_probe),
    ("long_run_percentile", 99, long_run_probe),
    ("long_run_percentile_weeks", 2, long_run_probe),
]
# Used by the planner itself (how far back the cadence baseline looks): tested through stored runs below.
PLANNER_SETTINGS = {"cadence_baseline_days"}


def settings_with(monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> Settings:
    monkeypatch.setenv(f"STRIDECARE_LOAD_{name.upper()}", str(value))
    return Settings()


def test_the_settings_and_the_constants_are_the_same_set_with_the_same_defaults() -> None:
    constant_defaults = {f.name: f.default for f in dataclasses.fields(LoadConstants)}
    setting_defaults = {name: f.default for name, f in LoadModelSettings.model_fields.items()}
    assert setting_defaults == constant_defaults


def test_every_setting_has_a_test_below() -> None:
    assert {name for name, _, _ in CASES} | PLANNER_SETTINGS == set(LoadModelSettings.model_fields)


def test_constants_are_built_once_per_settings_object_and_frozen() -> None:
    settings = Settings()
    assert settings.load.constants is settings.load.constants
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.load.constants.force_a = 2.0  # type: ignore[misc]


def test_a_settings_object_missing_a_constant_is_an_error_not_a_silent_default() -> None:
    from stridecare.domain.load import load_constants_from_settings

    class Partial:
        force_a = 1.3

    with pytest.raises(AttributeError):
        load_constants_from_settings(Partial())


@pytest.mark.parametrize(("name", "value", "probe"), CASES, ids=[c[0] for c in CASES])
def test_every_load_setting_changes_a_result(
    monkeypatch: pytest.MonkeyPatch, name: str, value: float, probe: Probe
) -> None:
    default = Settings().load.constants
    changed = settings_with(monkeypatch, name, value).load.constants
    assert getattr(changed, name) == value
    assert probe(changed) != probe(default)


def _store_history(rt: Runtime) -> float:
    """Three runs at 180 spm 60 days before a run at 170 spm, all at 3.3 m/s; the last run's stored load."""
    runs = [
        parsed(samples_of(segment(1800, 3.3, 180)), key=str(i), start=DAY - timedelta(days=60, hours=i))
        for i in range(3)
    ]
    last = parsed(samples_of(segment(1800, 3.3, 170)), key="last", start=DAY)
    runs = [dataclasses.replace(r, cadence_source=CadenceSource.STREAM, avg_cadence_spm=180.0) for r in runs]
    runs.append(dataclasses.replace(last, cadence_source=CadenceSource.STREAM, avg_cadence_spm=170.0))
    with rt.db.transaction() as session:
        athlete = ensure_athlete(session, "me", rt.settings)
        store_parsed(session, athlete, runs)
        athlete_id = athlete.id
    replan(rt.db, rt.settings, athlete_id, DAY + timedelta(days=1))
    with rt.db.transaction() as session:
        run = session.scalar(select(Run).where(Run.source_key == "last"))
        assert run is not None and run.load is not None
        return run.load.load


def test_cadence_baseline_days_changes_the_stored_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    loads = []
    for days, folder in ((90, "a"), (30, "b")):
        monkeypatch.setenv("STRIDECARE_LOAD_CADENCE_BASELINE_DAYS", str(days))
        rt = Runtime.open(make_settings(tmp_path / folder))
        try:
            loads.append(_store_history(rt))
        finally:
            rt.close()
    # Within 90 days the usual 180 spm is the baseline, so 170 spm steps are a little heavier; within 30 days
    # there is no history and the run's own cadence stands in.
    assert loads[0] > loads[1] * 1.01


def test_every_source_counts_the_steps_of_a_run_without_cadence_with_the_settings_constants(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Files decode in the sandbox's separate interpreter and Strava runs convert in the workers: both must use
    the constants the operator set, not the model's defaults."""
    fit = write_activity(tmp_path / "plain.fit", start=DAY, duration_s=1200, speed_mps=3.5, cadence_rpm=None).path
    with gzip.open(tmp_path / "plain.fit.gz", "wb") as out:
        out.write(fit.read_bytes())
    points = track_points(start=DAY, duration_s=1200, speed_mps=3.5)
    (tmp_path / "plain.gpx").write_text(gpx_xml([("running", points, None)]))
    activity = make_activity(1, DAY, distance=4200.0, moving_time=1200, average_cadence=None)

    def steps(settings: Settings) -> list[float]:
        out: list[float] = []
        for name in ("plain.fit", "plain.fit.gz", "plain.gpx"):
            decoded = decode_for(settings, tmp_path / name, None)
            assert decoded.result is not None, decoded.error
            (run,) = decoded.result.runs
            assert run.cadence_source is CadenceSource.ESTIMATED
            out.append(run.steps)
        run = convert_activity(activity, settings.load.constants)
        assert isinstance(run, ParsedRun) and run.cadence_source is CadenceSource.ESTIMATED
        return [*out, run.steps]

    default = steps(Settings())
    faster = steps(settings_with(monkeypatch, "default_cadence_intercept_spm", 172))
    # c(3.5 m/s) = intercept + 8 × 0.5: 164 → 176 spm over 20 minutes, 240 more steps from every source.
    for before, after in zip(default, faster, strict=True):
        assert after - before == pytest.approx(240.0, abs=6.0)
