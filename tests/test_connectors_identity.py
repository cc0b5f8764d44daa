"""A run is one run whatever the mix: the same session arriving from intervals.icu (its re-encoded, gzip'ed
file), from Garmin Connect (the watch's ORIGINAL zip) and as a file dropped in the inbox, in every order, is
one primary run with one prompt (the session-identity rules of ``ingest/dedupe.py``, across connectors)."""

from __future__ import annotations

import io
import itertools
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from fake_intervals import FakeActivity, running
from fitgen import write_activity
from sqlalchemy import func, select
from test_connectors_garmin import FakeAdapter, FakeGarmin

from ingest.connectors.garmin import GarminConnector
from ingest.connectors.intervals import credentials_json
from ingest.connectors.ledger import connect
from ingest.connectors.poller import sync_account
from ingest.service import ingest_path
from recommender.planner import replan
from stridecare.clock import write_clock_file
from stridecare.db.models import Prompt, Run
from stridecare.runtime import Runtime

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
START = NOW - timedelta(hours=2)


def session_file(path: Path, **kwargs: object) -> bytes:
    """The one session (50 min at 3 m/s from START) as one source's file; ``kwargs`` make its bytes differ."""
    write_activity(path, start=START, duration_s=3000, speed_mps=3.0, **kwargs)  # type: ignore[arg-type]
    return path.read_bytes()


@pytest.mark.parametrize("order", list(itertools.permutations(["intervals", "garmin", "inbox"])))
def test_the_same_session_from_three_sources_is_one_run_with_one_prompt(
    tmp_path: Path, order: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    intervals_bytes = session_file(src / "intervals.fit", sample_interval_s=2, product=7)
    watch_bytes = session_file(src / "watch.fit", heart_rate_bpm=(120, 150), product=3)
    dropped = src / "dropped.fit"
    session_file(dropped, sample_interval_s=1, include_cadence=True, product=5, heart_rate_bpm=(118, 149))
    assert len({intervals_bytes, watch_bytes, dropped.read_bytes()}) == 3  # three different files

    garmin = FakeGarmin()
    monkeypatch.setattr(GarminConnector, "adapter_factory", lambda: FakeAdapter(garmin))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("777_ACTIVITY.fit", watch_bytes)
    garmin.originals["777"] = buffer.getvalue()
    garmin.activities.append(
        {"activityId": 777, "startTimeGMT": START.strftime("%Y-%m-%d %H:%M:%S"), "activityType": {"typeKey": "running"}}
    )

    with running() as fake:
        fake.add_account("i1001", "key")
        fake.add("i1001", FakeActivity("i777", START, gzipped=True, make_file=lambda: intervals_bytes))
        clock = tmp_path / "clock.txt"
        write_clock_file(clock, NOW)
        rt = Runtime.open(make_settings(tmp_path, intervals_base_url=fake.url, clock_file=clock))
        intervals = connect(rt.db, rt.settings, "me", "intervals", "i1001", credentials_json("key", "i1001"), NOW)
        watch = connect(rt.db, rt.settings, "me", "garmin", "anna", garmin.tokens(), NOW)

        arrivals: dict[str, Callable[[], list[str]]] = {
            "intervals": lambda: [i.status for i in sync_account(rt.db, rt.settings, intervals, rt.now).items],
            "garmin": lambda: [
                i.status for i in sync_account(rt.db, rt.settings, watch, rt.now, sleep=lambda s: None).items
            ],
            "inbox": lambda: [ingest_path(rt.db, rt.settings, "me", dropped, rt.now()).status],
        }
        for step, source in enumerate(order):
            # The sources arrive minutes apart, each planned before the next (as the workers would).
            write_clock_file(clock, NOW + timedelta(minutes=5 * step))
            assert arrivals[source]() == ["ingested"], source
            with rt.db.read() as s:
                athlete_id = s.scalar(select(Run.athlete_id))
            assert athlete_id is not None
            replan(rt.db, rt.settings, athlete_id, rt.now())

    with rt.db.read() as s:
        runs = s.scalars(select(Run)).all()
        prompts = s.scalar(select(func.count()).select_from(Prompt))
    assert len(runs) == 3
    primaries = [r for r in runs if r.duplicate_of_id is None]
    assert len(primaries) == 1, [(r.id, r.source, r.duplicate_of_id) for r in runs]
    assert {r.duplicate_of_id for r in runs if r.duplicate_of_id is not None} == {primaries[0].id}
    assert prompts == 1
