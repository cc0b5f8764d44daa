"""Sources are plugins for real: a watch vendor's format from another package, found through its entry point,
is imported by ``stridecare import`` with no change to the core, decoded in the sandbox's own interpreter with
the model constants of the operator's settings; a plugin that claims a built-in's name is refused.

The package is written by the test as an installed distribution (module + ``dist-info``) in a folder on the
command's ``PYTHONPATH``, which its decode server inherits: what ``pip install`` of a separate package leaves.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import make_settings
from harness import BIN, install_plugin, settings_env
from sqlalchemy import select

from stridecare.db.models import ImportedFile, Run
from stridecare.runtime import Runtime

START = datetime(2026, 5, 6, 7, 0, tzinfo=UTC)

MODULE = '''
"""Runs as JSON lines: a header line, then one line per second of (distance m, speed m/s)."""

import json
from datetime import datetime

from stridecare.domain.normalise import RunHeader, normalised_run
from stridecare.domain.run import DecodeError, DecodeResult, Samples


class StrideLogSource:
    name = "stridelog"
    suffixes = (".stridelog",)

    def __init__(self, constants):
        self._constants = constants

    def decode(self, path, content_hash):
        lines = path.read_text().splitlines()
        try:
            head = json.loads(lines[0])
            points = [json.loads(line) for line in lines[1:]]
        except (IndexError, ValueError) as exc:
            raise DecodeError(f"damaged: not a stride log ({exc})") from None
        n = len(points)
        samples = Samples(
            t=[float(i) for i in range(n)],
            distance_m=[p[0] for p in points],
            speed_mps=[p[1] for p in points],
            cadence_spm=[None] * n,
            altitude_m=[None] * n,
            timer_running=[True] * n,
        )
        header = RunHeader(
            source=self.name,
            source_key=f"{content_hash}:0",
            sport="running",
            sub_sport=None,
            start_time=datetime.fromisoformat(head["start"]),
            utc_offset_s=None,
            elapsed_s=float(n - 1),
            timer_s=float(n - 1),
            distance_m=points[-1][0],
        )
        return DecodeResult(runs=[normalised_run(samples, self._constants, header, device=head["device"])], skipped=[])


class NotReallyFit(StrideLogSource):
    name = "fit"
'''


def _stride_log(path: Path, seconds: int, speed: float) -> None:
    lines = [json.dumps({"start": START.isoformat(), "device": "Stride Band 2"})]
    lines += [json.dumps([i * speed, speed]) for i in range(seconds + 1)]
    path.write_text("\n".join(lines) + "\n")


def test_an_out_of_tree_source_is_imported_with_the_settings_constants_and_cannot_take_a_builtin_name(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    install_plugin(
        site,
        "stridecare_stridelog",
        MODULE,
        "stridecare.sources",
        {"stridelog": "stridecare_stridelog:StrideLogSource", "fit": "stridecare_stridelog:NotReallyFit"},
    )
    archive = tmp_path / "archive"
    archive.mkdir()
    _stride_log(archive / "morning.stridelog", seconds=1200, speed=3.5)
    (archive / "broken.stridelog").write_text("not json\n")

    steps: dict[str, float] = {}
    for label, intercept in (("default", None), ("set", 172)):
        settings = make_settings(tmp_path / label)
        env = {**settings_env(settings), "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
        if intercept is not None:
            env["STRIDECARE_LOAD_DEFAULT_CADENCE_INTERCEPT_SPM"] = str(intercept)
        done = subprocess.run(
            [str(BIN / "stridecare"), "import", str(archive), "--athlete", "me", "--workers", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode in (0, 2), done.stdout + done.stderr
        # The clash is refused with a warning and the built-in FIT source keeps its name.
        assert "plugin 'fit' (stridecare_stridelog:NotReallyFit)" in done.stderr, done.stderr
        assert "refused" in done.stderr
        rt = Runtime.open(settings)
        try:
            with rt.db.read() as s:
                (run,) = s.scalars(select(Run)).all()
                assert (run.source, run.device, run.distance_m) == ("stridelog", "Stride Band 2", 4200.0)
                assert run.load is not None and run.load.load > 0
                steps[label] = run.steps
                broken = s.scalars(select(ImportedFile).where(ImportedFile.path.endswith("broken.stridelog"))).one()
                assert broken.status == "rejected" and "not a stride log" in (broken.reason or "")
        finally:
            rt.close()
    # c(3.5 m/s) = intercept + 8 × 0.5: 164 → 176 steps/min over 20 minutes, decided in the decode server.
    assert steps["default"] == pytest.approx(3280.0)
    assert steps["set"] == pytest.approx(3520.0)
