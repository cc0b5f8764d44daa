"""Real worker processes: a Celery worker on Redis and the embedded ``stridecare run`` with no server, each
ingesting dropped files, and each killed mid-import and restarted without losing or doubling a file."""

from __future__ import annotations

import socket
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from fitgen import write_activity
from harness import celery_worker, processes, settings_env, stridecare, wait_for
from sqlalchemy import func, select

from stridecare.db.models import ImportedFile, Run
from stridecare.runtime import Runtime
from stridecare.settings import Settings

pytestmark = pytest.mark.slow
START = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def counts(rt: Runtime) -> tuple[int, int, int]:
    """(files ingested, runs, distinct run keys)"""
    with rt.db.transaction() as s:
        files = s.scalar(select(func.count()).select_from(ImportedFile).where(ImportedFile.status == "ingested"))
        runs = s.scalar(select(func.count()).select_from(Run))
        keys = s.scalar(select(func.count(func.distinct(Run.source_key))))
    return int(files or 0), int(runs or 0), int(keys or 0)


def _write(args: tuple[Path, int, int]) -> Path:
    path, i, minutes = args
    write_activity(path, start=START + timedelta(days=i), duration_s=minutes * 60, speed_mps=3.0 + i % 3 * 0.1)
    return path


def make_files(folder: Path, n: int, minutes: int = 60) -> None:
    """``n`` distinct runs, written elsewhere (two processes: the FIT encoder is slow) and moved in whole, as a
    sync tool does."""
    staging = folder.parent / "staging"
    staging.mkdir(exist_ok=True)
    jobs = [(staging / f"run{i:03d}.fit", i, minutes) for i in range(n)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        written = list(pool.map(_write, jobs))
    for tmp in written:
        tmp.rename(folder / tmp.name)


def embedded_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, web_port=free_port(), rescan_interval_s=1.0, settle_seconds=0.3)


def test_a_real_celery_worker_on_redis_ingests_dropped_files(tmp_path: Path, redis_db: str) -> None:
    settings = make_settings(tmp_path, broker_url=redis_db)
    rt = Runtime.open(settings)
    env = settings_env(settings)
    inbox = settings.inbox_map()[0][1]
    inbox.mkdir(parents=True)
    worker = celery_worker("worker", env, tmp_path / "logs")
    watcher = stridecare("watcher", ["watch"], env, tmp_path / "logs")
    with processes(worker, watcher):
        make_files(inbox, 4, minutes=20)
        wait_for(lambda: counts(rt)[0] == 4, timeout=90, what="four files ingested by the worker")
        assert "stridecare.ingest_file" in worker.output()
    assert counts(rt) == (4, 4, 4)


def test_worker_killed_mid_import_then_restarted_ingests_every_file_exactly_once(tmp_path: Path, redis_db: str) -> None:
    settings = make_settings(tmp_path, broker_url=redis_db, rescan_interval_s=1.0)
    rt = Runtime.open(settings)
    env = settings_env(settings)
    inbox = settings.inbox_map()[0][1]
    inbox.mkdir(parents=True)
    n = 8
    logs = tmp_path / "logs"
    watcher = stridecare("watcher", ["watch"], env, logs)
    first = celery_worker("worker1", env, logs, concurrency=2)
    with processes(watcher, first):
        make_files(inbox, n, minutes=120)
        wait_for(lambda: counts(rt)[0] >= 1, timeout=120, interval=0.05, what="the first file")
        first.kill()
        done_at_kill = counts(rt)[0]
        assert done_at_kill < n, "the kill came too late to interrupt the import"
        second = celery_worker("worker2", env, logs, concurrency=2)
        with processes(second):
            wait_for(lambda: counts(rt)[0] == n, timeout=240, what="every file after the restart")
    assert counts(rt) == (n, n, n)


def test_embedded_run_with_no_server_ingests_and_survives_a_kill(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    assert settings.embedded and settings.effective_broker_url.startswith("sqla+sqlite:///")
    rt = Runtime.open(settings)
    env = settings_env(settings)
    inbox = settings.inbox_map()[0][1]
    inbox.mkdir(parents=True)
    n = 8
    logs = tmp_path / "logs"
    first = stridecare("run1", ["run"], env, logs)
    with processes(first):
        make_files(inbox, n, minutes=120)
        wait_for(lambda: counts(rt)[0] >= 1, timeout=120, interval=0.05, what="the first file in embedded mode")
        first.kill()
    assert counts(rt)[0] < n, "the kill came too late to interrupt the import"
    second = stridecare("run2", ["run"], env, logs)
    with processes(second):
        wait_for(lambda: counts(rt)[0] == n, timeout=240, what="every file after restarting stridecare run")
    assert counts(rt) == (n, n, n)
