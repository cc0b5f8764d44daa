"""An inbox that may not be changed — a watch mounted read-only as USB storage, pointed at directly — is read
like any other: a good file is stored, and a damaged one is recorded as rejected and left where it is, with a
reason that says so, instead of failing its task on the move to the quarantine (and leaving a stray copy
there)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from factories import ingest_planned
from fitgen import write_activity
from sqlalchemy import select

from stridecare.db.models import ImportedFile, Run
from stridecare.runtime import Runtime

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A folder on a file system of its own, and a function that remounts it read-only (a real ``EROFS``)."""
    mount = tmp_path / "watch"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"a read-only folder needs mount(2) as root: {made.stderr.decode().strip()}")

    def seal() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)

    try:
        yield mount, seal
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_damaged_file_in_a_read_only_inbox_is_rejected_in_place(
    rt: Runtime, tmp_path: Path, read_only_folder: tuple[Path, Callable[[], None]]
) -> None:
    inbox, seal = read_only_folder
    good = write_activity(tmp_path / "good.fit", start=START, duration_s=1200).path
    (inbox / "A1.FIT").write_bytes(good.read_bytes())
    whole = write_activity(tmp_path / "whole.fit", start=START.replace(day=3), duration_s=1200).path.read_bytes()
    damaged = inbox / "A2.FIT"
    damaged.write_bytes(whole[: len(whole) // 2])
    old = time.time() - 600  # long still: not a file still being copied, so a failed read rejects it at once
    os.utime(damaged, (old, old))
    seal()

    stored = ingest_planned(rt.db, rt.settings, "me", inbox / "A1.FIT", rt.now(), root=inbox, quarantine_damaged=True)
    assert stored.status == "ingested"

    report = ingest_planned(rt.db, rt.settings, "me", damaged, rt.now(), root=inbox, quarantine_damaged=True)
    assert report.status == "rejected", report
    assert "left in place" in (report.reason or "") and "read-only file system" in (report.reason or ""), report
    assert damaged.read_bytes() == whole[: len(whole) // 2]  # untouched
    quarantine = rt.settings.effective_quarantine_dir
    assert not quarantine.exists() or not any(quarantine.iterdir()), "no copy and no reason file left behind"
    with rt.db.read() as s:
        rows = {Path(r.path).name: r.status for r in s.scalars(select(ImportedFile))}
        assert rows == {"A1.FIT": "ingested", "A2.FIT": "rejected"}
        assert len(list(s.scalars(select(Run)))) == 1
    # Scanned again (every rescan does): known by its content, not read or moved again.
    again = ingest_planned(rt.db, rt.settings, "me", damaged, rt.now(), root=inbox, quarantine_damaged=True)
    assert again.status != "ingested" and damaged.exists()
