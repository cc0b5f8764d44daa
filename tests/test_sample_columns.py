"""A run's samples converted once to arrays (``SampleColumns``) and shared by the plausibility checks, the packing
of the stored blob and the planner's load give exactly what converting the lists at each step gives: the same
bytes, the same verdicts, the same loads."""

from __future__ import annotations

import dataclasses
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fit_differential import CORPUS, FILES
from test_load_arrays import sample_series
from test_plausibility import session, sessions
from test_samples_pack import _samples

from ingest.fit import FitSource
from stridecare.db.samples import pack_columns, pack_samples, pack_samples_reference, unpack_columns, unpack_samples
from stridecare.domain.load import DEFAULT_CONSTANTS
from stridecare.domain.load_arrays import SampleColumns, run_load
from stridecare.domain.plausibility import first_implausibility, implausibility, worst_case_load
from stridecare.domain.run import DecodeError, ParsedRun, Samples

_NAMES = ("t", "distance_m", "speed_mps", "cadence_spm", "altitude_m", "timer_running")


def _assert_same_columns(got: SampleColumns, want: SampleColumns) -> None:
    for name in _NAMES:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name


def test_packing_the_columns_gives_the_reference_bytes() -> None:
    rng = random.Random(5)
    for n in (0, 1, 2, 17, 3_600):
        samples = _samples(rng, n)
        assert pack_columns(SampleColumns.of(samples)) == pack_samples_reference(samples)


def test_unpacked_columns_are_the_unpacked_lists_converted() -> None:
    rng = random.Random(13)
    for n in (0, 1, 2, 17, 3_600):
        packed = pack_samples(_samples(rng, n))
        _assert_same_columns(unpack_columns(packed), SampleColumns.of(unpack_samples(packed)))


def test_a_blob_that_is_not_one_or_is_cut_short_is_refused() -> None:
    raw = zlib.decompress(pack_samples(_samples(random.Random(1), 10)))
    with pytest.raises(ValueError, match="not a stridecare"):
        unpack_columns(zlib.compress(b"XXXX" + raw[4:]))
    with pytest.raises(ValueError, match="cut short"):
        unpack_columns(zlib.compress(raw[:-4]))


@settings(max_examples=150, deadline=None)
@given(samples=sample_series(), data=st.data())
def test_the_load_from_columns_is_the_load_from_the_samples(samples: Samples, data: st.DataObject) -> None:
    # Every shape of series, the summary fallback included (no running timer, no steps): the same figures to
    # the last bit, whichever way the samples arrive.
    run = session(Samples([1.0], [0.0], [None], [None], [None], [True]))
    run = dataclasses.replace(
        run,
        samples=samples,
        timer_s=data.draw(st.floats(0.0, 20_000.0)),
        distance_m=data.draw(st.floats(0.0, 50_000.0)),
        steps=data.draw(st.floats(0.0, 30_000.0)),
        avg_cadence_spm=data.draw(st.none() | st.floats(100.0, 200.0)),
    )
    kwargs = {
        "cadence_base_spm": data.draw(st.none() | st.floats(100.0, 220.0)),
        "cadence_history": data.draw(st.lists(st.tuples(st.floats(1.5, 6.0), st.floats(140.0, 190.0)), max_size=8)),
        "sex": data.draw(st.sampled_from([None, "f", "m"])),
        "mass_kg": 64.0,
    }
    bare = dataclasses.replace(run, samples=Samples.empty())
    assert run_load(bare, columns=SampleColumns.of(samples), **kwargs) == run_load(run, **kwargs)


@settings(max_examples=150, deadline=None)
@given(sessions())
def test_the_checks_on_columns_give_the_same_verdicts(run: ParsedRun) -> None:
    columns = SampleColumns.of(run.samples)
    assert implausibility(run, columns=columns) == implausibility(run)
    assert first_implausibility([run, run], columns=[columns, columns]) == first_implausibility([run, run])
    assert worst_case_load(run, columns=columns) == worst_case_load(run)


def _corpus_runs(path: Path) -> list[ParsedRun]:
    try:
        return FitSource().decode(path, "hash").runs
    except DecodeError:
        pytest.skip("a damaged file: no run to compare")


@pytest.mark.skipif(not FILES, reason=f"FIT corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_real_runs_check_pack_and_plan_the_same_from_columns(path: Path) -> None:
    for run in _corpus_runs(path):
        columns = SampleColumns.of(run.samples)
        assert implausibility(run, columns=columns) == implausibility(run)
        packed = pack_columns(columns)
        assert packed == pack_samples_reference(run.samples)
        # The planner's load: from the stored blob's columns, as from the lists unpacked from it.
        stored = dataclasses.replace(run, samples=unpack_samples(packed))
        bare = dataclasses.replace(run, samples=Samples.empty())
        for base in (None, 170.0):
            kwargs = {"cadence_base_spm": base, "constants": DEFAULT_CONSTANTS}
            assert run_load(bare, columns=unpack_columns(packed), **kwargs) == run_load(stored, **kwargs)
