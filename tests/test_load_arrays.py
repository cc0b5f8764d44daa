"""The array version of the load model equals the reference loop to 1e-9, on generated runs of every shape and
on every run of the real-file corpus."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fit_differential import CORPUS, FILES

from ingest.fit import FitSource
from stridecare.domain.load import DEFAULT_CONSTANTS, RunLoadResult, run_load_from_samples
from stridecare.domain.load import run_load as reference_run_load
from stridecare.domain.load_arrays import run_load, run_load_from_sample_arrays
from stridecare.domain.run import DecodeError, Samples
from stridecare.domain.steps import CadenceModel


def assert_same(fast: RunLoadResult, reference: RunLoadResult) -> None:
    for field in dataclasses.fields(RunLoadResult):
        a, b = getattr(fast, field.name), getattr(reference, field.name)
        if isinstance(b, float) and not isinstance(b, bool):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9), field.name
        else:
            assert a == b, field.name


maybe = st.none() | st.floats(min_value=0.0, max_value=14.0)


@st.composite
def sample_series(draw: st.DrawFn) -> Samples:
    """Runs of every shape: gaps in any series, walk breaks, pauses, times that stand still or go back, hills,
    GPS glitches, no cadence at all."""
    n = draw(st.integers(min_value=0, max_value=60))
    with_cadence = draw(st.booleans())
    t: list[float] = []
    distance: list[float | None] = []
    speed: list[float | None] = []
    cadence: list[float | None] = []
    altitude: list[float | None] = []
    running: list[bool] = []
    clock = dist = 0.0
    alt = draw(st.floats(min_value=-50, max_value=3000))
    for _ in range(n):
        clock += draw(st.sampled_from([-2.0, 0.0, 1.0, 1.0, 3.0, 7.5, 60.0]))
        v = draw(st.floats(min_value=0.0, max_value=13.0))
        dist += v * draw(st.sampled_from([0.5, 1.0, 3.0]))
        alt += draw(st.floats(min_value=-3.0, max_value=3.0))
        t.append(clock)
        distance.append(None if draw(st.integers(0, 9)) == 0 else dist)
        speed.append(draw(st.sampled_from([None, v, v, v * 1.1])))
        spm = draw(st.sampled_from([None, 0.0, 110.0, 139.9, 140.0, 165.0, 182.5, 230.0]))
        cadence.append(spm if with_cadence else None)
        altitude.append(None if draw(st.integers(0, 6)) == 0 else alt)
        running.append(draw(st.integers(0, 8)) != 0)
    return Samples(t, distance, speed, cadence, altitude, running)


@settings(max_examples=100, deadline=None)
@given(
    samples=sample_series(),
    base=st.none() | st.floats(min_value=100.0, max_value=220.0),
    sex=st.sampled_from([None, "f", "m"]),
    model=st.none() | st.builds(CadenceModel, st.floats(150, 180), st.floats(0, 12)),
)
def test_arrays_equal_the_reference_on_generated_runs(
    samples: Samples, base: float | None, sex: str | None, model: CadenceModel | None
) -> None:
    kwargs = {"cadence_base_spm": base, "sex": sex, "mass_kg": 64.0, "cadence_model": model}
    assert_same(run_load_from_sample_arrays(samples, **kwargs), run_load_from_samples(samples, **kwargs))


def test_a_hilly_run_with_pauses_and_walk_breaks_gives_the_same_downhill_figure() -> None:
    t, distance, speed, cadence, altitude, running = [], [], [], [], [], []
    for i in range(1, 3601):
        walking = (i // 300) % 4 == 3
        v = 1.4 if walking else 3.2
        t.append(float(i))
        distance.append(i * v)
        speed.append(v)
        cadence.append(112.0 if walking else 172.0)
        altitude.append(100.0 + 40.0 * math.sin(i / 200.0))
        running.append(i % 900 > 30)
    samples = Samples(t, distance, speed, cadence, altitude, running)
    fast, reference = run_load_from_sample_arrays(samples), run_load_from_samples(samples)
    assert reference.downhill_impact > 0 and reference.walking_steps > 0
    assert_same(fast, reference)


@pytest.mark.skipif(not FILES, reason=f"FIT corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_arrays_equal_the_reference_on_every_corpus_run(path: Path) -> None:
    try:
        runs = FitSource().decode(path, "hash").runs
    except DecodeError:
        pytest.skip("a damaged file: no run to compare")
    for run in runs:
        for base in (None, 170.0):
            kwargs = {"cadence_base_spm": base, "constants": DEFAULT_CONSTANTS}
            assert_same(run_load(run, **kwargs), reference_run_load(run, **kwargs))
