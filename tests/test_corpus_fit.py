"""FitSource against the shared corpus of real FIT files (``../shared/corpus/fit``, driven by MANIFEST.tsv).

Each distinct file content is decoded once (the corpus keeps byte-identical copies from several projects), in
two worker processes: the parser decodes about 0.26 MB/s, so 12 MB of distinct content would take ~45 s on
one core.
"""

from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.fit import FitSource
from stridecare.domain.run import DecodeError

pytestmark = pytest.mark.corpus

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "fit"

# Files whose device total_strides the stream-derived steps legitimately disagree with (by more than 3 %).
STRIDE_EXCLUSIONS: dict[str, str] = {
    "dtcooper__python-fitparse/tests/files/garmin-fenix-5-walk.fit": (
        "45 s walk, 41 strides total: too short for the device total to be exact; one 14 s sample interval "
        "alone is 28 steps, so 93 stream steps vs 82 is noise of so short a file (ratio 1.139)"
    ),
    "jimmykane__fit-parser/test/garmin-stamina.fit": (
        "device total_strides (4893) contradicts the device's own avg_running_cadence "
        "(60.79 × 2 × 4487.8 s / 60 = 9094 steps, exactly the stream count): the total is wrong (ratio 0.929)"
    ),
}
STEPS_TOLERANCE = 0.03
DISTANCE_TOLERANCE = 0.005
STREAM_DISTANCE_TOLERANCE = 0.01
# Files the corpus README names as damaged: a real decoder must refuse them (CRC on), not guess.
KNOWN_DAMAGED = (
    "dtcooper__python-fitparse/tests/files/activity-filecrc.fit",
    "dtcooper__python-fitparse/tests/files/activity-unexpected-eof.fit",
    "dtcooper__python-fitparse/tests/files/activity-settings-corruptheader.fit",
)


@dataclass(frozen=True)
class RunSummary:
    sport: str
    steps: float
    device_steps: float | None
    distance_m: float
    stream_distance_m: float | None
    cadence_source: str


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok" | "decode_error" | "other"
    message: str = ""
    runs: tuple[RunSummary, ...] = ()
    n_skipped: int = 0


def _decode(path_str: str) -> Outcome:
    path = Path(path_str)
    try:
        result = FitSource().decode(path, "corpus")
    except DecodeError as exc:
        return Outcome("decode_error", str(exc))
    except Exception as exc:  # the test reports any other escape as a failure
        return Outcome("other", f"{type(exc).__name__}: {exc}")
    runs = []
    for run in result.runs:
        dist = [d for d in run.samples.distance_m if d is not None]
        runs.append(
            RunSummary(
                run.sport,
                run.steps,
                run.device_total_strides,
                run.distance_m,
                dist[-1] - dist[0] if len(dist) >= 2 else None,
                str(run.cadence_source),
            )
        )
    return Outcome("ok", runs=tuple(runs), n_skipped=len(result.skipped))


@pytest.fixture(scope="module")
def manifest() -> list[dict[str, str]]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.skip(f"FIT corpus not found at {CORPUS} (it lives beside the repository in shared/corpus/fit)")
    with (CORPUS / "MANIFEST.tsv").open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture(scope="module")
def outcomes(manifest: list[dict[str, str]]) -> dict[str, Outcome]:
    """Outcome per corpus file; identical contents are decoded once and shared."""
    by_digest: dict[str, list[str]] = {}
    for row in manifest:
        digest = hashlib.sha256((CORPUS / row["file"]).read_bytes()).hexdigest()
        by_digest.setdefault(digest, []).append(row["file"])
    firsts = [names[0] for names in by_digest.values()]
    # Largest first so the two workers finish together.
    firsts.sort(key=lambda name: (CORPUS / name).stat().st_size, reverse=True)
    with ProcessPoolExecutor(max_workers=2) as pool:
        decoded = dict(zip(firsts, pool.map(_decode, [str(CORPUS / n) for n in firsts]), strict=True))
    return {name: decoded[names[0]] for names in by_digest.values() for name in names}


def _original(row: dict[str, str]) -> str:
    return row["duplicate_of"] or row["file"]


def test_every_file_decodes_or_fails_with_a_one_line_decode_error(
    manifest: list[dict[str, str]], outcomes: dict[str, Outcome]
) -> None:
    assert len(outcomes) == len(manifest)
    escaped = {name: o.message for name, o in outcomes.items() if o.kind == "other"}
    assert escaped == {}
    for name, outcome in outcomes.items():
        if outcome.kind == "decode_error":
            assert outcome.message, name
            assert "\n" not in outcome.message, name
            assert len(outcome.message) <= 240, name
    for name in KNOWN_DAMAGED:
        assert outcomes[name].kind == "decode_error", name


def test_steps_match_device_total_strides(manifest: list[dict[str, str]], outcomes: dict[str, Outcome]) -> None:
    checked: set[str] = set()
    excluded_ratios: dict[str, float] = {}
    for row in manifest:
        if not row["session_total_strides"]:
            continue
        outcome = outcomes[row["file"]]
        assert outcome.kind == "ok", (row["file"], outcome.message)
        with_totals = [r for r in outcome.runs if r.device_steps]
        assert with_totals, f"{row['file']}: device wrote total_strides but no run carries it"
        for run in with_totals:
            assert run.cadence_source == "stream", row["file"]
            assert run.device_steps is not None
            ratio = run.steps / run.device_steps
            if _original(row) in STRIDE_EXCLUSIONS:
                excluded_ratios[_original(row)] = ratio
                continue
            assert abs(ratio - 1) <= STEPS_TOLERANCE, f"{row['file']}: steps/device = {ratio:.4f}"
            checked.add(_original(row))
    assert len(checked) >= 8  # the check must not pass vacuously
    # Every exclusion must still be needed; drop it from the list when the decoder starts agreeing.
    assert set(excluded_ratios) == set(STRIDE_EXCLUSIONS)
    for name, ratio in excluded_ratios.items():
        assert abs(ratio - 1) > STEPS_TOLERANCE, f"{name} agrees now ({ratio:.4f}): remove its exclusion"


def test_distance_matches_session_totals(manifest: list[dict[str, str]], outcomes: dict[str, Outcome]) -> None:
    checked = 0
    for row in manifest:
        outcome = outcomes[row["file"]]
        if outcome.kind != "ok" or not outcome.runs or not row["distance_m"]:
            continue
        total = float(row["distance_m"])
        sports = [s.split("/")[0] for s in row["sport"].split(";")]
        decoded = sum(r.distance_m for r in outcome.runs)
        if len(sports) == len(outcome.runs):
            # Every session is a foot session: the runs must add up to the device's total.
            assert decoded == pytest.approx(total, rel=DISTANCE_TOLERANCE, abs=0.05), row["file"]
            checked += 1
        else:
            assert decoded <= total * (1 + DISTANCE_TOLERANCE), row["file"]
        if len(outcome.runs) == 1 and len(sports) == 1:
            stream = outcome.runs[0].stream_distance_m
            if stream is not None and total > 0:
                assert stream == pytest.approx(total, rel=STREAM_DISTANCE_TOLERANCE, abs=0.05), row["file"]
    assert checked >= 15


def test_multisport_files_yield_one_run_per_foot_session(outcomes: dict[str, Outcome]) -> None:
    fenix = outcomes["dtcooper__python-fitparse/tests/files/activity-large-fenxi2-multisport.fit"]
    assert [r.sport for r in fenix.runs] == ["running", "running"]
    assert fenix.n_skipped == 5  # generic, three transitions, the ride
    assert all(r.cadence_source == "stream" for r in fenix.runs)
    assert all(r.steps > 0 for r in fenix.runs)
    triathlon = outcomes["jimmykane__fit-parser/examples/triathlon_summary_first.fit"]
    assert len(triathlon.runs) == 1
    assert triathlon.n_skipped == 4
    summary_last = outcomes["jimmykane__fit-parser/examples/triathlon_summary_last.fit"]
    # Session messages before or after the records must not change anything.
    assert summary_last.runs == triathlon.runs
