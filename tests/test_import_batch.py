"""`stridecare import` stores decoded files a batch at a time (one transaction, one athlete lock, one replan
mark): the same rows and reports as storing each file on its own, and a unique violation in a batch falls back
to storing each file on its own, so no file is lost or doubled."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fitgen import write_activity, write_truncated
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ingest import store
from ingest.decode import Decoded, decode_path
from ingest.store import FileReport, store_decoded, store_decoded_batch
from stridecare.db.models import Athlete, ImportedFile, Run
from stridecare.runtime import Runtime

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def _decoded(rt: Runtime, folder: Path) -> list[Decoded]:
    folder.mkdir()
    paths = []
    for i in range(4):
        path = folder / f"run{i}.fit"
        write_activity(path, start=START + timedelta(days=3 - i), duration_s=900 + 60 * i)
        paths.append(path)
    paths.append(write_truncated(paths[0], folder / "cut.fit"))
    copy = folder / "copy-of-run1.fit"
    shutil.copyfile(paths[1], copy)  # the same content twice in one batch: stored once
    paths.append(copy)
    return [decode_path(p, None, rt.settings.max_file_bytes, rt.settings.load.constants) for p in paths]


def _shape(report: FileReport) -> tuple[str, str | None, list[tuple[Any, ...]]]:
    runs = [(r["start_time"], r["distance_m"], r["steps"]) for r in report.runs]
    return Path(report.path).name, report.status, runs


def _rows(rt: Runtime) -> tuple[int, int, datetime | None]:
    with rt.db.read() as s:
        athlete = s.scalars(select(Athlete).where(Athlete.name == "me")).one()
        return (
            s.scalar(select(func.count()).select_from(ImportedFile)) or 0,
            s.scalar(select(func.count()).select_from(Run)) or 0,
            athlete.replan_from,
        )


def test_a_batch_stores_what_storing_each_file_stores(tmp_path: Path) -> None:
    one = Runtime.open(make_settings(tmp_path / "one"))
    batched = Runtime.open(make_settings(tmp_path / "batched"))
    try:
        decoded = _decoded(one, tmp_path / "files")
        each = [store_decoded(one.db, one.settings, "me", d, NOW) for d in decoded]
        together = store_decoded_batch(batched.db, batched.settings, "me", decoded, NOW)
        assert [_shape(r) for r in together] == [_shape(r) for r in each]
        assert [r.status for r in together] == ["ingested"] * 4 + ["rejected", "duplicate"]
        assert all(r.replan_owed for r in together[:4])
        assert _rows(batched) == _rows(one)
        assert _rows(batched)[2] == START  # the mark: the earliest run of the batch
        # Storing the batch again changes nothing: every file is a duplicate.
        again = store_decoded_batch(batched.db, batched.settings, "me", decoded, NOW)
        assert {r.status for r in again} == {"duplicate"}
        assert _rows(batched) == _rows(one)
    finally:
        one.close()
        batched.close()


def test_a_unique_violation_in_a_batch_stores_each_file_on_its_own(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = _decoded(rt, tmp_path / "files")
    real = store._store_in
    calls = {"n": 0}

    def clash(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        out = real(*args, **kwargs)
        if calls["n"] == 3:  # as if a concurrent import had stored this file's run first
            raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
        return out

    monkeypatch.setattr(store, "_store_in", clash)
    reports = store_decoded_batch(rt.db, rt.settings, "me", decoded, NOW)
    assert [r.status for r in reports] == ["ingested"] * 4 + ["rejected", "duplicate"]
    files, runs, mark = _rows(rt)
    assert (files, runs, mark) == (5, 4, START)
