"""The decode server's warm-up activity: a valid FIT run that both FIT decoders read alike, so that the warm-up
exercises the path every real file takes (the fast scan), not a fallback or an error; and a server start that
loads only what decoding needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ingest import fit_fast
from ingest.decode import decode_path
from ingest.fit import FitSource
from ingest.sandbox import warm_fit
from stridecare.domain.load import DEFAULT_CONSTANTS

ROOT = Path(__file__).resolve().parents[1]


def test_warm_up_activity_is_one_run_read_alike_by_both_decoders(tmp_path: Path) -> None:
    path = tmp_path / "warm.fit"
    path.write_bytes(warm_fit(records=120))
    if fit_fast.available():
        assert fit_fast.scan(path) is not None  # the fast scan takes it
    fast = FitSource().decode(path, "warm")
    assert fast == FitSource(fast=False).decode(path, "warm")
    (run,) = fast.runs
    assert run.sport == "running"
    assert len(run.samples) == 120
    assert run.distance_m == 360.0
    assert run.cadence_source == "stream"


def test_warm_up_decodes_through_the_server_path(tmp_path: Path) -> None:
    path = tmp_path / "warm.fit"
    path.write_bytes(warm_fit())
    decoded = decode_path(path, None, 1 << 20, DEFAULT_CONSTANTS)
    assert decoded.error is None and decoded.result is not None and len(decoded.result.runs) == 1


def test_the_decode_server_starts_without_the_settings() -> None:
    # The server imports the decoders and warms up; the settings (pydantic-settings) are the caller's alone, and
    # loading them would add to every server start.
    code = (
        "import sys\n"
        "import ingest.sandbox as sandbox\n"
        "sandbox._warm()\n"
        "print(sorted(m for m in ('stridecare.settings', 'pydantic_settings') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
