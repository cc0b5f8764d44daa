"""Importing the whole real-file corpus: it finishes, damaged files are rejected with one line, good files go in."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
from harness import BIN, ROOT

CORPUS_FIT = ROOT.parent / "shared" / "corpus" / "fit"
pytestmark = [pytest.mark.corpus, pytest.mark.slow]


def manifest() -> dict[str, dict[str, str]]:
    with (CORPUS_FIT / "MANIFEST.tsv").open() as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


def test_import_of_the_whole_corpus_folder(tmp_path: Path) -> None:
    if not (CORPUS_FIT / "MANIFEST.tsv").exists():
        pytest.skip(f"the shared corpus is not present at {CORPUS_FIT}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
    env["STRIDECARE_DATA_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [str(BIN / "stridecare"), "import", str(CORPUS_FIT), "--json", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines()]
    rows = manifest()
    assert len(reports) == len(rows)  # every file, .FIT in capitals included
    by_file = {str(Path(r["path"]).relative_to(CORPUS_FIT)): r for r in reports}
    rejected = {f for f, r in by_file.items() if r["status"] == "rejected"}
    readable = {f for f, row in rows.items() if row["fitparse_ok"] == "y"}
    assert not rejected & readable, f"good files rejected: {sorted(rejected & readable)}"
    for f in rejected:
        reason = by_file[f]["reason"]
        assert reason and "\n" not in reason and "Traceback" not in reason and len(reason) < 200
    # Damaged: a broken CRC, header or end of file, or an undefined message type. (Files that only the old
    # fitparse 1.2 could not read, such as misaligned fields, are readable now and must not be rejected.)
    damaged = {
        f
        for f, row in rows.items()
        if row["fitparse_ok"] == "n"
        and any(k in row["fitparse_error"] for k in ("CRC", "Header", "EOF", "invalid local message"))
    }
    assert len(damaged) >= 10
    assert not rejected - damaged, f"files rejected that are not damaged: {sorted(rejected - damaged)}"
    # Every damaged file is rejected; copies of one content are rejected once and then reported as duplicates.
    for f in damaged:
        assert by_file[f]["status"] in {"rejected", "duplicate"}, (f, by_file[f])
    assert proc.returncode == 2  # some files were rejected
    foot = {
        f
        for f, row in rows.items()
        if row["fitparse_ok"] == "y"
        and not row["duplicate_of"]
        and any(s.split("/")[0] in {"running", "walking", "hiking"} for s in row["sport"].split(";"))
    }
    for f in foot:
        assert by_file[f]["status"] in {"ingested", "duplicate"} and by_file[f]["runs"], (f, by_file[f])
    summary = proc.stderr.strip().splitlines()[-1]
    assert "ingested" in summary and "rejected" in summary
