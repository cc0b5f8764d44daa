"""Steps whose step length no foot can take are replaced by the distance-and-speed estimate, said on the run and
counted in ``stridecare status``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from factories import ingest_planned
from fitgen import write_activity
from sqlalchemy import select
from typer.testing import CliRunner

from ingest.sandbox import decode_for
from stridecare.db.models import Run
from stridecare.domain.run import CadenceSource
from stridecare.domain.steps import STEP_LENGTH_M, impossible_step_length
from stridecare.runtime import Runtime

START = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


def test_the_bounds_by_gait() -> None:
    assert impossible_step_length(3750 / 1.0, 3750, "running") is None  # 1.0 m a step
    assert "2.62 m a step" in (impossible_step_length(1430, 3750, "running") or "")
    assert impossible_step_length(30_000, 3750, "running") is not None  # 0.125 m: a shuffle
    assert impossible_step_length(1430, 1500, "walking") is None  # 1.05 m: a long walking stride
    assert impossible_step_length(1430, 3750, "cycling") is None  # not a foot sport: not judged
    assert impossible_step_length(10, 100, "running") is None  # too short to say
    assert STEP_LENGTH_M["running"] == (0.4, 2.5)


def test_a_run_with_an_impossible_cadence_is_counted_by_its_speed(rt: Runtime, tmp_path: Path) -> None:
    # 3.75 km in 42 min with a foot pod reporting 17 per foot (34 steps/min): 1,428 steps, 2.6 m each.
    bad = write_activity(
        tmp_path / "pod.fit", start=START, duration_s=42 * 60, speed_mps=3750 / 2520, cadence_rpm=17
    ).path
    decoded = decode_for(rt.settings, bad, None)
    assert decoded.result is not None
    (run,) = decoded.result.runs
    assert run.cadence_source is CadenceSource.ESTIMATED
    assert run.step_note is not None and "m a step, outside 0.4–2.5 m" in run.step_note
    assert all(c is None for c in run.samples.cadence_spm)  # the load model reads no impossible cadence either
    assert 3750 / run.steps == pytest.approx(1.0, abs=0.45)

    good = write_activity(tmp_path / "good.fit", start=START + timedelta(days=1), duration_s=2400, cadence_rpm=84)
    for path in (bad, good.path):
        ingest_planned(rt.db, rt.settings, "me", path, START + timedelta(days=1, hours=1))
    with rt.db.read() as s:
        notes = {r.cadence_source: r.step_note for r in s.scalars(select(Run))}
    assert notes["stream"] is None and notes["estimated"] is not None

    env = {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
    }
    from stridecare_app.cli.main import app

    out = CliRunner().invoke(app, ["status", "--athlete", "me"], env=env).output
    assert "steps estimated for 1 run: the recorded cadence gave an impossible step length" in out
    data = CliRunner().invoke(app, ["status", "--athlete", "me", "--json"], env=env).output
    assert '"runs_with_steps_estimated": 1' in data
