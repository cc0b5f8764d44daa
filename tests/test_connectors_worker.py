"""The beat polls connected accounts by itself: `stridecare run` (embedded worker and beat, no server) with an
intervals.icu account pulls a run that appears at the fake, stores it once and writes its prompt, with no
command typed."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from fake_intervals import running
from harness import processes, settings_env, stridecare, wait_for
from sqlalchemy import func, select
from test_connectors_intervals import fit_maker

from ingest.connectors.intervals import credentials_json
from ingest.connectors.ledger import connect
from stridecare.db.models import ConnectorAccount, Prompt, Run
from stridecare.runtime import Runtime

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_beat_pulls_a_new_run_and_its_prompt_follows(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with running() as fake:
        fake.add_account("i1001", "key")
        settings = make_settings(
            tmp_path, web_port=free_port(), intervals_base_url=fake.url, connector_poll_interval_s=2.0
        )
        rt = Runtime.open(settings)
        account = connect(rt.db, settings, "me", "intervals", "i1001", credentials_json("key", "i1001"), rt.now())
        worker = stridecare("run", ["run"], settings_env(settings), tmp_path / "logs")
        with processes(worker):
            # First pull of an empty account: the beat has polled once the account records it.
            wait_for(lambda: _polled(rt, account), timeout=120, what="the first pull")
            fake.add("i1001", fit_maker(src, "fresh", datetime.now(UTC) - timedelta(minutes=40), duration_s=1800))

            def prompted() -> int:
                with rt.db.read() as s:
                    return int(s.scalar(select(func.count()).select_from(Prompt)) or 0)

            wait_for(prompted, timeout=120, what="the prompt of the pulled run")
        assert dict(fake.downloads) == {"fresh": 1}
        with rt.db.read() as s:
            assert s.scalar(select(func.count()).select_from(Run)) == 1
        assert "fresh.fit ingested" in worker.output()


def _polled(rt: Runtime, account_id: int) -> bool:
    with rt.db.read() as s:
        row = s.get(ConnectorAccount, account_id)
        return row is not None and row.last_poll_at is not None
