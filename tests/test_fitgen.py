"""tests/fitgen.py packs the records of the files it writes itself (fit_tool builds each message field by field,
most of the time the suite spends writing fixtures): the bytes must be the ones fit_tool would write."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import fitgen
import pytest
from fitgen import Segment

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)

CASES: dict[str, dict[str, object]] = {
    "plain": {"duration_s": 900},
    "pauses and heart rate": {
        "duration_s": 1200,
        "pauses": [(300, 45), (800, 20)],
        "record_heart_rate_bpm": (120, 171),
    },
    "hills": {"duration_s": 600, "altitude": lambda t: 40.0 + 12.0 * math.sin(t / 90.0)},
    "no cadence, sparse": {"duration_s": 1800, "cadence_rpm": None, "sample_interval_s": 5},
    "steps per minute": {"duration_s": 700, "cadence_rpm": 171.5, "speed_mps": 2.71},
    "multisport": {
        "multisport": [
            Segment("cycling", duration_s=600, speed_mps=8.0, cadence_rpm=90.0),
            Segment("running", duration_s=900, speed_mps=3.2, cadence_rpm=86.0, pauses=[(400, 60)]),
        ]
    },
    # After 4,295 s at 10 km/s the distance outgrows its field: a packed record must be refused as fit_tool
    # refuses it.
    "a value out of range": {"duration_s": 5000, "speed_mps": 10_000.0},
}


@pytest.mark.parametrize("case", list(CASES))
def test_packed_records_are_the_bytes_fit_tool_writes(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = CASES[case]
    outcomes = []
    for packed in (True, False):
        monkeypatch.setattr(fitgen, "PACK_RECORDS", packed)
        path = tmp_path / f"{packed}.fit"
        try:
            fitgen._write_activity(path, start=START, **kwargs)  # the uncached writer
        except Exception as err:  # the two paths must fail alike
            outcomes.append(("error", type(err).__name__))
        else:
            outcomes.append(("file", path.read_bytes()))
    assert outcomes[0] == outcomes[1]
    if case != "a value out of range":
        assert outcomes[0][0] == "file"
