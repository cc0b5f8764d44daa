"""The fast FIT scan against fitparse, the reference: every corpus file decodes to the same result.

``FitSource()`` uses the native scan (``ingest.fit_fast``) with fitparse as the fallback; ``FitSource(fast=False)``
is fitparse alone. Each distinct corpus file must give the same runs (sessions, sport, start, distance, timer,
steps and every sample) or the same one-line reason for refusing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fitfast
import pytest
from conftest import ROOT, distinct_fit_files
from fit_thin import thin_records
from fitgen import write_activity, write_bad_crc

from ingest import fit_fast
from ingest.fit import FitSource
from stridecare.domain.run import DecodeError, DecodeResult

pytest.importorskip("fitfast", reason="the fast FIT decoder (extra 'fast') is not installed")

CORPUS = ROOT.parent / "shared" / "corpus" / "fit"
START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
# Valid files the fast scan hands to fitparse, and why (damaged files are handed over too: fitparse says why).
EXPECTED_FALLBACKS = {
    "compressed-speed-distance.fit": "speed and distance packed in compressed_speed_distance",
    "antfs-dump.63.fit": "records carry neither speed nor distance",
    "valid_only_contain_fileid.fit": "records carry neither speed nor distance",
}


FILES = distinct_fit_files(CORPUS)
# Files longer than this are compared on a thinned copy of about THIN_TO_RECORDS records.
THIN_ABOVE_RECORDS = 1500
THIN_TO_RECORDS = 1000


@dataclass(frozen=True)
class Outcome:
    """What a decoder made of a file: the result, or the reason it gave for refusing it."""

    result: DecodeResult | None
    error: str | None


def _outcome(source: FitSource, path: Path) -> Outcome:
    try:
        return Outcome(source.decode(path, "hash"), None)
    except DecodeError as exc:
        return Outcome(None, str(exc))


def _summary(result: DecodeResult) -> list[tuple[Any, ...]]:
    return [
        (r.sport, r.sub_sport, r.start_time, r.distance_m, r.timer_s, r.steps, r.cadence_source) for r in result.runs
    ]


@pytest.mark.skipif(not FILES, reason=f"FIT corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_file_decodes_as_fitparse_does(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    try:
        records = fitfast.message_counts(data).get("record", 0)
    except fitfast.FitDecodeError:
        records = 0  # a damaged file is compared whole: the reasons for refusing it must agree
    if records > THIN_ABOVE_RECORDS:
        # fitparse's cost is per record: a long file is compared on a copy with its records thinned to about
        # THIN_TO_RECORDS, every other message as the device wrote it (tests/fit_thin.py).
        thinned = thin_records(data, -(-records // THIN_TO_RECORDS))
        if thinned is not None:
            path = tmp_path / path.name
            path.write_bytes(thinned)
    reference = _outcome(FitSource(fast=False), path)
    taken = fit_fast.scan(path) is not None
    if reference.error is None:
        # Of the valid files, the fast scan leaves exactly the known few to fitparse.
        assert taken == (path.name not in EXPECTED_FALLBACKS), "the fast scan's fallbacks changed"
    if not taken:
        # FitSource() hands this file to fitparse, which is the reference itself: decoding it twice (seconds
        # for a long damaged file) would compare fitparse with fitparse.
        return
    fast = _outcome(FitSource(), path)
    assert fast.error == reference.error
    if reference.result is None:
        return
    assert fast.result is not None
    # The figures that matter first, for a readable failure; then everything, samples included.
    assert _summary(fast.result) == _summary(reference.result)
    assert fast.result.skipped == reference.result.skipped
    assert fast.result == reference.result


@pytest.mark.skipif(not FILES, reason=f"FIT corpus not found at {CORPUS}")
def test_every_known_fallback_is_a_corpus_file() -> None:
    """The list above stays true: each name is a corpus file (the test per file checks it falls back)."""
    assert set(EXPECTED_FALLBACKS) <= {p.name for p in FILES}


def _spy_on_kinds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The message kinds the scan asks the native decoder for (the real decoder still answers)."""
    import fitfast

    asked: list[str] = []
    real = fitfast.records

    def records(source: Any, message: str = "record", **kwargs: Any) -> Any:
        asked.append(message)
        return real(source, message, **kwargs)

    monkeypatch.setattr(fitfast, "records", records)
    return asked


def test_ride_is_recognised_from_its_session_without_reading_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ride = write_activity(tmp_path / "ride.fit", start=START, duration_s=3600, speed_mps=8.0, sport="cycling")
    asked = _spy_on_kinds(monkeypatch)
    result = FitSource().decode(ride.path, "hash")
    assert result.runs == []
    assert [(s.sport, s.reason) for s in result.skipped] == [("cycling", "not a foot sport (cycling/None)")]
    assert "session" in asked
    assert "record" not in asked
    assert result == FitSource(fast=False).decode(ride.path, "hash")


def test_swim_in_the_corpus_is_recognised_without_reading_records(monkeypatch: pytest.MonkeyPatch) -> None:
    swims = [p for p in FILES if "swim" in p.name.lower()]
    if not swims:
        pytest.skip(f"no swim file in the FIT corpus at {CORPUS}")
    asked = _spy_on_kinds(monkeypatch)
    for path in swims:
        result = FitSource().decode(path, "hash")
        if result.runs:
            continue  # a multisport file with a run leg needs its records
        assert any(s.sport == "swimming" for s in result.skipped)
        assert all(s.reason.startswith("not a foot sport") for s in result.skipped)
        assert "record" not in asked


def test_run_reads_records_and_matches_fitparse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = write_activity(tmp_path / "run.fit", start=START, duration_s=1800, speed_mps=3.0, cadence_rpm=85)
    asked = _spy_on_kinds(monkeypatch)
    fast = FitSource().decode(run.path, "hash")
    assert "record" in asked
    assert fast == FitSource(fast=False).decode(run.path, "hash")
    assert fast.runs[0].steps == pytest.approx(run.steps, rel=1e-3)


def _zero_header_crc(source: Path, dest: Path) -> Path:
    """``source`` rewritten with a 14-byte header whose CRC is 0 ("not computed", as the FIT protocol allows
    and several older devices write), and a valid file CRC."""
    from ingest.fit_integrity import fit_crc

    data = source.read_bytes()
    header_size = data[0]
    header = bytes([14]) + data[1:12] + b"\0\0"
    body = header + data[header_size:-2]
    dest.write_bytes(body + fit_crc(body).to_bytes(2, "little"))
    return dest


def test_zero_header_crc_takes_the_fast_path_with_the_same_result(tmp_path: Path) -> None:
    run = write_activity(tmp_path / "run.fit", start=START, duration_s=1200, speed_mps=3.2, cadence_rpm=86)
    zeroed = _zero_header_crc(run.path, tmp_path / "zeroed.fit")
    assert fit_fast.scan(zeroed) is not None
    assert FitSource().decode(zeroed, "hash") == FitSource(fast=False).decode(zeroed, "hash")


def test_damaged_files_get_fitparse_reasons(tmp_path: Path) -> None:
    run = write_activity(tmp_path / "run.fit", start=START, duration_s=600, speed_mps=3.0, cadence_rpm=85)
    bad = write_bad_crc(run.path, tmp_path / "bad.fit")
    zeroed_bad = _zero_header_crc(run.path, tmp_path / "zeroed.fit")
    data = bytearray(zeroed_bad.read_bytes())
    data[-2] ^= 0xFF
    zeroed_bad.write_bytes(bytes(data))
    for path in (bad, zeroed_bad):
        assert fit_fast.scan(path) is None
        with pytest.raises(DecodeError, match="CRC mismatch"):
            FitSource().decode(path, "hash")


def test_file_with_more_records_than_the_native_budget_is_streamed_by_fitparse(tmp_path: Path) -> None:
    import fitfast

    run = write_activity(tmp_path / "run.fit", start=START, duration_s=900, speed_mps=3.0, cadence_rpm=85)
    size = run.path.stat().st_size
    records = fitfast.message_counts(run.path.read_bytes())["record"]
    assert fit_fast.scan(run.path) is not None
    # Exactly at either budget the native scan still takes the file; one over, it leaves it to fitparse.
    assert fit_fast.scan(run.path, max_records=records, max_bytes=size) is not None
    assert fit_fast.scan(run.path, max_records=records - 1) is None
    assert fit_fast.scan(run.path, max_bytes=size - 1) is None
