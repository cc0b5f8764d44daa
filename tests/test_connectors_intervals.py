"""intervals.icu as a connector, against our fake intervals.icu on loopback serving real FIT bytes: first sync
and incremental sync, gzip originals, Strava stubs and other sports skipped without a download, a refused key
(no retry storm), a 429 cooldown, a file that fails alone, and two athletes with two accounts."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings
from fake_intervals import FakeActivity, FakeIntervals, running
from fitgen import write_activity
from sqlalchemy import func, select

from ingest.connectors.intervals import STRAVA_STUB, credentials_json
from ingest.connectors.ledger import account_states, connect, due_accounts
from ingest.connectors.poller import sync_account
from recommender.planner import replan
from stridecare.clock import write_clock_file
from stridecare.db.models import ConnectorAccount, ConnectorItem, Prompt, Run
from stridecare.runtime import Runtime

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def fit_maker(folder: Path, name: str, start: datetime, duration_s: int = 120) -> FakeActivity:
    """An activity whose original is a real FIT file of a run starting at ``start`` (written on first use)."""

    def make() -> bytes:
        path = folder / f"{name}.fit"
        write_activity(path, start=start, duration_s=duration_s, speed_mps=3.0)
        return path.read_bytes()

    return FakeActivity(name, start, make_file=make)


@pytest.fixture
def fake() -> Iterator[FakeIntervals]:
    with running() as server:
        server.add_account("i1001", "key-one", "Anna")
        yield server


def open_rt(tmp_path: Path, fake: FakeIntervals, at: datetime = NOW) -> Runtime:
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, at)
    return Runtime.open(make_settings(tmp_path, intervals_base_url=fake.url, clock_file=clock))


def set_clock(rt: Runtime, at: datetime) -> None:
    assert rt.settings.clock_file is not None
    write_clock_file(rt.settings.clock_file, at)


def connect_one(rt: Runtime, athlete: str = "me", athlete_id: str = "i1001", key: str = "key-one") -> int:
    return connect(rt.db, rt.settings, athlete, "intervals", athlete_id, credentials_json(key, athlete_id), rt.now())


def statuses(rt: Runtime, account_id: int) -> Counter[str]:
    with rt.db.read() as s:
        return Counter(s.scalars(select(ConnectorItem.status).where(ConnectorItem.account_id == account_id)))


@pytest.mark.slow
def test_first_sync_of_a_thousand_activities_then_an_incremental_one(tmp_path: Path, fake: FakeIntervals) -> None:
    src = tmp_path / "src"
    src.mkdir()
    runs = 0
    # 1,000 activities listed: a run in every sixteenth (the downloads, decoded in the sandbox, are what cost the
    # test its time; bench/bench_connectors.py syncs 1,000 and 4,000 runs), the rest rides and Strava stubs.
    for i in range(1000):
        start = NOW - timedelta(hours=2) - timedelta(hours=30 * i)
        if 1 <= i % 16 <= 11:
            fake.add("i1001", FakeActivity(f"r{i}", start, sport="Ride"))
        elif i % 16 >= 12:
            fake.add("i1001", FakeActivity(f"s{i}", start, strava_stub=True))
        else:
            activity = fake.add("i1001", fit_maker(src, f"a{i}", start))
            activity.gzipped = i % 32 == 0
            runs += 1
    rt = open_rt(tmp_path, fake)
    account = connect_one(rt)

    result = sync_account(rt.db, rt.settings, account, rt.now)

    assert result.stopped is None
    assert dict(fake.requests) == {"list": 1, "file": runs}  # one listing, one download per run, nothing else
    assert set(fake.downloads.values()) == {1}
    assert runs == 63
    assert Counter(i.status for i in result.items) == {"ingested": runs, "skipped": 937}
    assert statuses(rt, account) == {"ingested": runs, "skipped": 937}
    assert result.replan_owed
    replan(rt.db, rt.settings, result.athlete_id, rt.now())
    with rt.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Run).where(Run.duplicate_of_id.is_(None))) == runs
        # History counts for load only: the one run of the last day gets the prompt.
        assert s.scalar(select(func.count()).select_from(Prompt)) == 1

    # Incremental: the same listing again downloads nothing; two new runs are the only downloads.
    set_clock(rt, NOW + timedelta(hours=3))
    fake.add("i1001", fit_maker(src, "new1", NOW + timedelta(minutes=30)))
    fake.add("i1001", fit_maker(src, "new2", NOW + timedelta(hours=1, minutes=30)))
    fake.requests.clear()
    again = sync_account(rt.db, rt.settings, account, rt.now)
    assert dict(fake.requests) == {"list": 1, "file": 2}
    assert sorted(i.activity_id for i in again.items) == ["new1", "new2"]
    assert all(i.status == "ingested" for i in again.items)
    assert set(fake.downloads.values()) == {1}


def test_gzip_and_plain_originals_give_the_same_run(tmp_path: Path, fake: FakeIntervals) -> None:
    src = tmp_path / "src"
    src.mkdir()
    plain = fake.add("i1001", fit_maker(src, "plain", NOW - timedelta(days=3)))
    zipped = fake.add("i1001", fit_maker(src, "zipped", NOW - timedelta(days=2)))
    zipped.gzipped = True
    assert zipped.original()[:2] == b"\x1f\x8b" and plain.original()[8:12] == b".FIT"
    rt = open_rt(tmp_path, fake)
    result = sync_account(rt.db, rt.settings, connect_one(rt), rt.now)

    by_id = {i.activity_id: i for i in result.items}
    assert {k: v.status for k, v in by_id.items()} == {"plain": "ingested", "zipped": "ingested"}
    for item in by_id.values():
        assert [r["distance_m"] for r in item.runs] == [360.0]
        assert item.path is not None and Path(item.path).read_bytes()[8:12] == b".FIT"  # stored unpacked
    assert gzip.decompress(zipped.original()) == Path(str(by_id["zipped"].path)).read_bytes()


def test_strava_stubs_and_other_sports_are_skipped_without_a_download(tmp_path: Path, fake: FakeIntervals) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fake.add("i1001", FakeActivity("stub", NOW - timedelta(days=1), strava_stub=True))
    fake.add("i1001", FakeActivity("ride", NOW - timedelta(days=2), sport="Ride"))
    fake.add("i1001", fit_maker(src, "run", NOW - timedelta(days=3)))
    rt = open_rt(tmp_path, fake)
    result = sync_account(rt.db, rt.settings, connect_one(rt), rt.now)

    assert {i.activity_id: (i.status, i.reason) for i in result.items} == {
        "stub": ("skipped", STRAVA_STUB),
        "ride": ("skipped", "not a foot sport (Ride)"),
        "run": ("ingested", None),
    }
    assert dict(fake.downloads) == {"run": 1}


def test_a_refused_key_stops_the_account_without_a_retry_storm_and_deletes_nothing(
    tmp_path: Path, fake: FakeIntervals
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fake.add("i1001", fit_maker(src, "one", NOW - timedelta(days=2)))
    rt = open_rt(tmp_path, fake)
    account = connect_one(rt)
    assert sync_account(rt.db, rt.settings, account, rt.now).items[0].status == "ingested"

    fake.refuse_key("i1001")
    fake.add("i1001", fit_maker(src, "two", NOW - timedelta(days=1)))
    set_clock(rt, NOW + timedelta(hours=1))
    fake.requests.clear()
    result = sync_account(rt.db, rt.settings, account, rt.now)
    assert result.trouble and result.stopped is not None and "refused the API key (HTTP 401)" in result.stopped
    assert dict(fake.requests) == {"list": 1}

    # Refused: never due again, and a manual pull asks nothing until the athlete reconnects.
    for hours in (2, 24, 24 * 7):
        set_clock(rt, NOW + timedelta(hours=hours))
        assert due_accounts(rt.db, rt.now()) == []
        assert sync_account(rt.db, rt.settings, account, rt.now).trouble
    assert dict(fake.requests) == {"list": 1}
    [state] = account_states(rt.db, "me")
    assert state.state == "refused" and state.stored == 1
    assert state.last_error is not None and "stridecare intervals connect" in state.last_error
    with rt.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 1  # nothing deleted

    # Reconnecting with the new key resumes where the ledger stopped.
    fake.accounts["i1001"].api_key = "key-new"
    assert connect_one(rt, key="key-new") == account
    result = sync_account(rt.db, rt.settings, account, rt.now)
    assert [(i.activity_id, i.status) for i in result.items] == [("two", "ingested")]
    assert dict(fake.downloads) == {"one": 1, "two": 1}


def test_a_429_starts_a_cooldown_that_is_never_retried_at_once(tmp_path: Path, fake: FakeIntervals) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        fake.add("i1001", fit_maker(src, f"a{i}", NOW - timedelta(days=i + 1)))
    rt = open_rt(tmp_path, fake)
    account = connect_one(rt)
    fake.fail_next("file", 429)

    first = sync_account(rt.db, rt.settings, account, rt.now)
    assert first.trouble and first.stopped is not None and "HTTP 429" in first.stopped
    assert dict(fake.requests) == {"list": 1, "file": 1}
    with rt.db.read() as s:
        row = s.get(ConnectorAccount, account)
        assert row is not None and row.cooldown_until == NOW + timedelta(minutes=15)
        assert row.next_poll_at is not None and row.next_poll_at > row.cooldown_until

    # Inside the cooldown: not due, and `sync` asks nothing.
    set_clock(rt, NOW + timedelta(minutes=14))
    assert due_accounts(rt.db, rt.now()) == []
    assert sync_account(rt.db, rt.settings, account, rt.now).stopped.startswith("cooling down until")  # type: ignore[union-attr]
    assert dict(fake.requests) == {"list": 1, "file": 1}

    # A second 429 after it doubles the cooldown.
    set_clock(rt, NOW + timedelta(minutes=20))
    fake.fail_next("list", 429)
    sync_account(rt.db, rt.settings, account, rt.now)
    with rt.db.read() as s:
        row = s.get(ConnectorAccount, account)
        assert row is not None and row.cooldown_until == NOW + timedelta(minutes=50)

    # Then it goes on: every activity downloaded once, the cooldown cleared.
    set_clock(rt, NOW + timedelta(hours=1))
    last = sync_account(rt.db, rt.settings, account, rt.now)
    assert last.stopped is None and sorted(i.activity_id for i in last.items) == ["a0", "a1", "a2"]
    assert dict(fake.downloads) == {"a0": 1, "a1": 1, "a2": 1}
    with rt.db.read() as s:
        row = s.get(ConnectorAccount, account)
        assert row is not None and row.cooldown_until is None and row.cooldown_s == 0


def test_a_server_error_backs_off_and_a_missing_file_is_retried_later_alone(
    tmp_path: Path, fake: FakeIntervals
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fake.add("i1001", fit_maker(src, "gone", NOW - timedelta(days=2)))
    fake.add("i1001", fit_maker(src, "fine", NOW - timedelta(days=1)))
    rt = open_rt(tmp_path, fake)
    account = connect_one(rt)

    fake.fail_next("list", 503)
    assert "HTTP 503" in str(sync_account(rt.db, rt.settings, account, rt.now).stopped)
    assert due_accounts(rt.db, rt.now()) == []

    set_clock(rt, NOW + timedelta(minutes=16))
    fake.fail_next("file", 404)  # the newest is asked first: "fine" fails this once
    result = sync_account(rt.db, rt.settings, account, rt.now)
    assert {i.activity_id: i.status for i in result.items} == {"fine": "failed", "gone": "ingested"}
    assert "attempt 1 of 8, retried later" in str(result.items[0].reason)
    again = sync_account(rt.db, rt.settings, account, rt.now)
    assert again.items == []  # its retry waits for its backoff
    set_clock(rt, NOW + timedelta(minutes=30))
    assert [(i.activity_id, i.status) for i in sync_account(rt.db, rt.settings, account, rt.now).items] == [
        ("fine", "ingested")
    ]


def test_two_athletes_with_two_accounts_each_get_their_own_runs(tmp_path: Path, fake: FakeIntervals) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fake.add_account("i2002", "key-two", "Ben")
    fake.add("i1001", fit_maker(src, "anna", NOW - timedelta(days=1)))
    fake.add("i2002", fit_maker(src, "ben", NOW - timedelta(days=1, hours=3)))
    rt = open_rt(tmp_path, fake)
    anna = connect_one(rt, "anna", "i1001", "key-one")
    ben = connect_one(rt, "ben", "i2002", "key-two")

    assert due_accounts(rt.db, rt.now()) == [anna, ben]
    assert due_accounts(rt.db, rt.now()) == []  # claimed as they are queued
    for account in (anna, ben):
        sync_account(rt.db, rt.settings, account, rt.now)
    states = {(s.athlete, s.account): (s.state, s.stored) for s in account_states(rt.db)}
    assert states == {("anna", "i1001"): ("connected", 1), ("ben", "i2002"): ("connected", 1)}
    with rt.db.read() as s:
        owners = dict(s.execute(select(Run.athlete_id, func.count()).group_by(Run.athlete_id)).all())
    assert len(owners) == 2 and set(owners.values()) == {1}
    assert dict(fake.downloads) == {"anna": 1, "ben": 1}


def test_a_file_already_whole_on_disk_is_not_downloaded_again(tmp_path: Path, fake: FakeIntervals) -> None:
    """The window of a kill between the rename and the ledger's commit: the file is there, the ledger still
    says pending. The next pull reads the file and asks intervals.icu for nothing but the listing."""
    src = tmp_path / "src"
    src.mkdir()
    activity = fake.add("i1001", fit_maker(src, "a1", NOW - timedelta(days=1)))
    rt = open_rt(tmp_path, fake)
    account = connect_one(rt)
    folder = rt.settings.data_home / "connectors" / "intervals" / "i1001"
    folder.mkdir(parents=True)
    (folder / "a1.fit").write_bytes(activity.original())
    (folder / "a2.fit.part").write_bytes(b"half a file")  # a kill mid-write leaves only this

    result = sync_account(rt.db, rt.settings, account, rt.now)
    assert [(i.activity_id, i.status) for i in result.items] == [("a1", "ingested")]
    assert dict(fake.requests) == {"list": 1}


def test_one_pull_at_a_time_per_provider_and_a_dead_pulls_lease_is_taken_over(
    tmp_path: Path, fake: FakeIntervals
) -> None:
    import socket
    import subprocess

    from stridecare.db import leases

    rt = open_rt(tmp_path, fake)
    account = connect_one(rt)
    alive = subprocess.Popen(["sleep", "60"])
    try:
        assert leases.acquire(rt.db, "connector:intervals", f"{socket.gethostname()}:{alive.pid}:x", NOW, 900)
        busy = sync_account(rt.db, rt.settings, account, rt.now)
        assert "another pull from intervals is running" in str(busy.stopped) and not busy.trouble
        assert dict(fake.requests) == {}
    finally:
        alive.kill()
        alive.wait()
    # Its holder is gone (killed): the lease is taken over at once, not after its 15 minutes.
    assert sync_account(rt.db, rt.settings, account, rt.now).stopped is None
    assert dict(fake.requests) == {"list": 1}
