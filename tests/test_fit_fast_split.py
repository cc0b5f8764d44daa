"""The fast FIT scan reads a file once: the split (records decoded from the whole file, every other kind from a
copy without records) against the reference that reads each kind from the whole file (``one_pass=False``).

Every corpus file, and generated runs, rides, chained and damaged files, must give the same ``Scan`` (or the
same hand-over to fitparse) both ways; and the one-pass scan must ask the native decoder to decode the whole
file only once.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, distinct_fit_files
from fitgen import Segment, write_activity, write_bad_crc, write_chained, write_non_activity

from ingest import fit_fast
from ingest.fit_common import Scan
from ingest.fit_integrity import fit_crc

fitfast = pytest.importorskip("fitfast", reason="the fast FIT decoder (extra 'fast') is not installed")

CORPUS = ROOT.parent / "shared" / "corpus" / "fit"
START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)


FILES = distinct_fit_files(CORPUS)


def _comparable(scan: Scan | None) -> Any:
    """A scan as plain values; NaN in the record columns compared by its bytes (NaN != NaN)."""
    if scan is None:
        return None
    rec = scan.records
    columns = {name: getattr(rec, name).tobytes() for name in ("t", "distance", "speed", "cadence", "altitude")}
    columns["heart_rate"] = rec.heart_rate.tobytes()
    return (
        scan.file_type,
        scan.device,
        scan.activity_ts,
        scan.activity_local,
        scan.correlation_offset_s,
        scan.sport_msg,
        repr(scan.sessions),
        scan.timer_events,
        columns,
    )


def _same_both_ways(path: Path) -> Scan | None:
    one = fit_fast.scan(path)
    assert _comparable(one) == _comparable(fit_fast.scan(path, one_pass=False))
    return one


@pytest.mark.skipif(not FILES, reason=f"FIT corpus not found at {CORPUS}")
def test_every_corpus_file_scans_the_same_in_one_pass() -> None:
    taken = 0
    for path in FILES:
        taken += _same_both_ways(path) is not None
    assert taken > len(FILES) // 2  # the corpus is mostly files the fast scan takes


def test_generated_files_scan_the_same_in_one_pass(tmp_path: Path) -> None:
    run = write_activity(tmp_path / "run.fit", start=START, duration_s=1500, speed_mps=3.1, cadence_rpm=84)
    paused = write_activity(
        tmp_path / "paused.fit",
        start=START,
        multisport=[
            Segment("cycling", duration_s=900, speed_mps=8.0, cadence_rpm=90),
            Segment("running", duration_s=1200, speed_mps=3.2, cadence_rpm=86, pauses=[(600, 60)]),
        ],
    )
    ride = write_activity(tmp_path / "ride.fit", start=START, duration_s=1200, speed_mps=8.0, sport="cycling")
    chained = write_chained([run.path, ride.path], tmp_path / "chained.fit")
    settings = write_non_activity(tmp_path / "settings.fit")
    bad = write_bad_crc(run.path, tmp_path / "bad.fit")
    for path in (run.path, paused.path, ride.path, chained, settings):
        assert _same_both_ways(path) is not None, path.name
    assert _same_both_ways(bad) is None  # a damaged file still goes to fitparse, for its reason


def _count_native_calls(monkeypatch: pytest.MonkeyPatch, whole: bytes) -> list[str]:
    """The native calls made on the whole file's bytes (the real decoder still answers)."""
    calls: list[str] = []
    for name in ("records", "message_counts", "parse", "count"):
        real = getattr(fitfast, name)

        def spy(source: Any, *args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            if isinstance(source, bytes) and source == whole:
                calls.append(_name if not args else f"{_name}:{args[0]}")
            return _real(source, *args, **kwargs)

        monkeypatch.setattr(fitfast, name, spy)
    return calls


def test_one_pass_decodes_the_whole_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = write_activity(tmp_path / "run.fit", start=START, duration_s=1200, speed_mps=3.0, cadence_rpm=85)
    whole = run.path.read_bytes()
    calls = _count_native_calls(monkeypatch, whole)
    assert fit_fast.scan(run.path) is not None
    assert calls == ["records:record"]
    calls.clear()
    assert fit_fast.scan(run.path, one_pass=False) is not None
    assert len(calls) > 3  # the reference: a count, then each kind from the whole file


def _segment(body: bytes) -> bytes:
    head = bytes([12, 0x20]) + struct.pack("<H", 2100) + struct.pack("<I", len(body)) + b".FIT"
    data = head + body
    return data + fit_crc(data).to_bytes(2, "little")


def test_a_non_record_message_with_a_compressed_timestamp_is_not_split() -> None:
    # An event (global 21, local type 0) with one 1-byte field, its data message under a compressed
    # timestamp header: its time follows the record times, which the copy without records would lose.
    definition = bytes([0x40, 0, 0]) + struct.pack("<H", 21) + bytes([1, 0, 1, 0x00])
    compressed = bytes([0x80 | 5, 0])
    assert fit_fast._split(_segment(definition + compressed)) is None
    normal = bytes([0x00, 0])
    split = fit_fast._split(_segment(definition + normal))
    assert split is not None and split[0] == {"record": 0, "event": 1}


def test_records_are_left_out_of_the_copy_and_counted() -> None:
    # file_id-less toy stream: a record definition (global 20, 1-byte heart_rate), three records, one event.
    record_def = bytes([0x41, 0, 0]) + struct.pack("<H", 20) + bytes([1, 3, 1, 0x02])
    event_def = bytes([0x40, 0, 0]) + struct.pack("<H", 21) + bytes([1, 0, 1, 0x00])
    records = bytes([0x01, 120, 0x01, 121, 0x80 | (1 << 5) | 3, 122])  # the last under a compressed header
    event = bytes([0x00, 0])
    data = _segment(record_def + event_def + records + event)
    split = fit_fast._split(data)
    assert split is not None
    counts, copy = split
    assert counts == {"record": 3, "event": 1}
    assert copy == _segment(record_def + event_def + event)
