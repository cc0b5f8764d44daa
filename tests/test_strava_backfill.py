"""Backfilling a Strava history from the fake server: request counts, streams window, rate-limit scheduling
across windows of the fake clock, and 429 deferral with nothing lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_strava import (
    FakeStrava,
    Limits,
    add_stridecare_athlete,
    connect_account,
    make_activity,
    running,
    sqlite_db,
    strava_settings,
)

from ingest.strava import ratelimit
from ingest.strava.backfill import BackfillProgress, backfill_step, due_backfills, start_backfill
from stridecare.db.engine import Database
from stridecare.db.models import StravaAccount
from stridecare.domain.run import CadenceSource, ParsedRun
from stridecare.settings import Settings

ATHLETE = 4242
NOW = datetime(2026, 3, 2, 8, 3, tzinfo=UTC)


class Sink:
    """The caller's store: remembers every run, how often each was handed over, and what Strava said of it."""

    def __init__(self) -> None:
        self.runs: dict[str, ParsedRun] = {}
        self.times: Counter[str] = Counter()
        self.records: dict[str, Mapping[str, Any]] = {}
        self.calls = 0

    def __call__(self, runs: Sequence[ParsedRun], records: Mapping[str, Mapping[str, Any]]) -> None:
        self.calls += 1
        for r in runs:
            self.runs[r.source_key] = r
            self.times[r.source_key] += 1
            # Every run comes with the activity it was converted from: recompute rebuilds it from this.
            assert records[r.source_key]["activity"]["id"] == int(r.source_key)
            self.records[r.source_key] = records[r.source_key]


@pytest.fixture
def fake() -> Iterator[FakeStrava]:
    from fake_strava import FakeClock

    with running(clock=FakeClock(NOW)) as f:
        f.add_athlete(ATHLETE)
        yield f


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = sqlite_db(tmp_path / "strava.db")
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path, fake: FakeStrava) -> Settings:
    return strava_settings(tmp_path / "home", fake)


def history(fake: FakeStrava, count: int, newest: datetime, spacing: timedelta, ride_every: int = 0) -> dict[int, str]:
    """``count`` activities going back from ``newest``; returns id → sport_type."""
    sports: dict[int, str] = {}
    for i in range(count):
        aid = 10_000_000 + i
        sport = "Ride" if ride_every and i % ride_every == ride_every - 1 else "Run"
        fake.add_activity(ATHLETE, make_activity(aid, newest - i * spacing, athlete_id=ATHLETE, sport_type=sport))
        sports[aid] = sport
    return sports


def connect(fake: FakeStrava, settings: Settings, db: Database) -> int:
    return connect_account(db, settings, fake, add_stridecare_athlete(db), now=fake.clock.now()).account_id


def account(db: Database, account_id: int) -> StravaAccount:
    with db.read() as s:
        row = s.get(StravaAccount, account_id)
        assert row is not None
        return row


def run_until_done(
    fake: FakeStrava, settings: Settings, db: Database, account_id: int, sink: Sink, max_steps: int = 50
) -> list[BackfillProgress]:
    """Call backfill_step like the periodic job would, moving the fake clock to each resume time."""
    steps: list[BackfillProgress] = []
    for _ in range(max_steps):
        progress = backfill_step(db, settings, account_id, fake.clock.now(), sink)
        steps.append(progress)
        if progress.state == "done":
            return steps
        assert progress.state == "deferred", progress
        assert progress.resume_at is not None
        row = account(db, account_id)
        assert row.backfill_state == "deferred"
        assert row.backfill_resume_at == progress.resume_at
        if progress.resume_at > fake.clock.now():
            assert account_id not in due_backfills(db, fake.clock.now())
            fake.clock.set(progress.resume_at)
        assert account_id in due_backfills(db, fake.clock.now())
    raise AssertionError(f"backfill not done after {max_steps} steps: {steps[-1]}")


def test_4000_activities_without_streams_in_at_most_25_requests(
    fake: FakeStrava, settings: Settings, db: Database
) -> None:
    # All older than the 42-day streams window; every 10th is a ride.
    sports = history(fake, 4000, NOW - timedelta(days=43), timedelta(hours=20), ride_every=10)
    # Two activities sharing a start second exactly across the first page boundary (items 200 and 201).
    ids = sorted(sports)  # newest first
    tie = fake.athletes[ATHLETE].activities[ids[200]]
    fake.athletes[ATHLETE].activities[ids[199]]["start_date"] = tie["start_date"]
    fake.athletes[ATHLETE].activities[ids[199]]["start_date_local"] = tie["start_date_local"]

    account_id = connect(fake, settings, db)
    fake.clock.advance(6 * 3600 + 1)  # the token expired meanwhile: one refresh belongs to the backfill
    sink = Sink()
    steps = run_until_done(fake, settings, db, account_id, sink)

    total = len(fake.requests)
    counts = fake.counts()
    print(f"\n4,000 activities, no streams: {total} requests in all: {dict(counts)}")
    assert total <= 25
    assert counts["GET /api/v3/athlete/activities"] == 21  # 200 + 20 × 199 new per page (boundary overlap)
    assert counts["POST /oauth/token"] == 2  # code exchange + one refresh
    assert counts["GET /api/v3/activities/{id}/streams"] == 0
    assert len(steps) == 1
    assert steps[0].state == "done"
    runs = {str(a) for a, sport in sports.items() if sport == "Run"}
    assert set(sink.runs) == runs
    assert max(sink.times.values()) == 1
    assert steps[0].stored == 3600
    assert steps[0].skipped == 400
    assert all(r.cadence_source is CadenceSource.SESSION for r in sink.runs.values())
    assert sink.runs[str(ids[0])].steps == pytest.approx(8500.0)
    # Done is done: another step makes no request.
    before = len(fake.requests)
    assert backfill_step(db, settings, account_id, fake.clock.now(), sink).state == "done"
    assert len(fake.requests) == before


def test_streams_only_for_recent_foot_activities(fake: FakeStrava, settings: Settings, db: Database) -> None:
    recent = history(fake, 40, NOW - timedelta(hours=2), timedelta(days=1), ride_every=8)  # 35 runs, 5 rides
    manual = make_activity(9_000_001, NOW - timedelta(days=3, hours=5), athlete_id=ATHLETE, manual=True)
    fake.add_activity(ATHLETE, manual)
    for i in range(3960):
        aid = 20_000_000 + i
        fake.add_activity(ATHLETE, make_activity(aid, NOW - timedelta(days=45) - i * timedelta(hours=20)))
    account_id = connect(fake, settings, db)
    fake.reset_counts()
    sink = Sink()
    run_until_done(fake, settings, db, account_id, sink)

    counts = fake.counts()
    recent_runs = [a for a, sport in recent.items() if sport == "Run"]
    total = len(fake.requests)
    print(f"\n4,001 activities, {len(recent_runs)} runs in the last 42 days: {total} requests: {dict(counts)}")
    assert counts["GET /api/v3/activities/{id}/streams"] == len(recent_runs) == 35
    assert counts["GET /api/v3/athlete/activities"] == 21
    assert len(fake.requests) == 56
    for aid in recent_runs:
        parsed = sink.runs[str(aid)]
        assert parsed.cadence_source is CadenceSource.STREAM
        assert len(parsed.samples) > 3000
        assert parsed.steps == pytest.approx(8500.0)
    assert sink.runs[str(manual["id"])].cadence_source is CadenceSource.SESSION
    assert len(sink.runs) == 35 + 1 + 3960


def test_read_limit_spreads_work_over_windows_without_429(fake: FakeStrava, settings: Settings, db: Database) -> None:
    fake.limits = Limits(overall=(100, 2000), read=(50, 1000))
    runs = history(fake, 148, NOW - timedelta(minutes=90), timedelta(hours=3))  # all within 42 days
    account_id = connect(fake, settings, db)
    fake.reset_counts()
    sink = Sink()
    steps = run_until_done(fake, settings, db, account_id, sink)

    total = len(fake.requests)
    print(f"\n148 runs with streams at 50 reads/15 min: {total} requests over {len(steps)} steps: {steps}")
    assert fake.count(status=429) == 0
    assert fake.count("GET /api/v3/activities/{id}/streams") == 148
    assert total >= 150
    assert len(steps) == 4  # 50 reads per window: 4 windows for 150-odd requests
    for step in steps[:-1]:
        assert step.resume_at is not None
        assert step.resume_at.minute % 15 == 0
        assert step.resume_at.second == 0
    per_window = Counter(
        r.at.replace(minute=r.at.minute - r.at.minute % 15, second=0, microsecond=0) for r in fake.requests
    )
    assert max(per_window.values()) <= 50
    assert set(sink.runs) == {str(a) for a in runs}
    assert max(sink.times.values()) == 1
    assert all(r.cadence_source is CadenceSource.STREAM for r in sink.runs.values())


def test_daily_limit_defers_to_midnight_utc(fake: FakeStrava, settings: Settings, db: Database) -> None:
    fake.limits = Limits(overall=(300, 3000), read=(50, 75))
    history(fake, 90, NOW - timedelta(hours=1), timedelta(hours=4))
    account_id = connect(fake, settings, db)
    sink = Sink()
    first = backfill_step(db, settings, account_id, fake.clock.now(), sink)
    assert first.state == "deferred"
    assert first.resume_at == datetime(2026, 3, 2, 8, 15, tzinfo=UTC)
    fake.clock.set(first.resume_at)
    second = backfill_step(db, settings, account_id, fake.clock.now(), sink)
    assert second.state == "deferred"
    assert second.resume_at == datetime(2026, 3, 3, 0, 0, tzinfo=UTC)
    assert second.reason == "daily budget used up"
    fake.clock.set(second.resume_at)
    assert backfill_step(db, settings, account_id, fake.clock.now(), sink).state == "done"
    assert fake.count(status=429) == 0
    assert len(sink.runs) == 90


def test_forced_429_defers_to_next_window_and_loses_nothing(fake: FakeStrava, settings: Settings, db: Database) -> None:
    runs = history(fake, 30, NOW - timedelta(hours=1), timedelta(hours=5))
    account_id = connect(fake, settings, db)
    sink = Sink()
    capped = backfill_step(db, settings, account_id, fake.clock.now(), sink, max_requests=5)
    assert capped.state == "deferred"
    assert capped.resume_at == fake.clock.now()
    assert len(sink.runs) == 4  # list + 4 streams

    fake.fail_next("/api/v3/activities/", 429)
    blocked = backfill_step(db, settings, account_id, fake.clock.now(), sink)
    assert blocked.state == "deferred"
    assert blocked.reason == "Strava answered 429"
    assert blocked.resume_at == datetime(2026, 3, 2, 8, 15, tzinfo=UTC)
    with db.read() as s:
        assert ratelimit.load_budget(s).blocked_until == blocked.resume_at
    assert len(sink.runs) == 4

    # Before the window opens, a step sends nothing.
    sent = len(fake.requests)
    early = backfill_step(db, settings, account_id, fake.clock.advance(60), sink)
    assert early.state == "deferred"
    assert early.resume_at == blocked.resume_at
    assert len(fake.requests) == sent

    fake.clock.set(blocked.resume_at)
    assert backfill_step(db, settings, account_id, fake.clock.now(), sink).state == "done"
    assert set(sink.runs) == {str(a) for a in runs}
    assert max(sink.times.values()) == 1
    assert all(r.cadence_source is CadenceSource.STREAM for r in sink.runs.values())
    assert fake.count(status=429) == 1


def test_deleted_activity_and_restart(fake: FakeStrava, settings: Settings, db: Database) -> None:
    history(fake, 5, NOW - timedelta(hours=1), timedelta(hours=5))
    fake.add_activity(ATHLETE, make_activity(77, NOW - timedelta(days=2), athlete_id=ATHLETE), streams=None)
    account_id = connect(fake, settings, db)
    sink = Sink()
    assert backfill_step(db, settings, account_id, fake.clock.now(), sink).state == "done"
    # An activity whose streams are gone (404) still counts from its summary.
    assert sink.runs["77"].cadence_source is CadenceSource.SESSION
    start_backfill(db, account_id, fake.clock.now())
    assert account(db, account_id).backfill_state == "pending"
    again = Sink()
    assert backfill_step(db, settings, account_id, fake.clock.now(), again).state == "done"
    assert set(again.runs) == set(sink.runs)


def test_revoked_access_stops_with_error(fake: FakeStrava, settings: Settings, db: Database) -> None:
    history(fake, 3, NOW - timedelta(hours=1), timedelta(hours=5))
    account_id = connect(fake, settings, db)
    fake.deauthorized.add(ATHLETE)
    fake.expire_tokens()
    progress = backfill_step(db, settings, account_id, fake.clock.advance(6 * 3600 + 1), Sink())
    assert progress.state == "error"
    assert account(db, account_id).backfill_state == "error"


def test_budget_from_stravalib_header_examples() -> None:
    """The header dicts stravalib's own tests use (lower-case names, a space in "601, 602")."""
    now = NOW
    budget = ratelimit.Budget().observe({"x-ratelimit-limit": "600,30000", "x-ratelimit-usage": "4,67"}, now)
    assert budget.remaining(now, "read") == (596, 29933)
    budget = budget.observe({"x-ratelimit-limit": "600,30000", "x-ratelimit-usage": "601, 602"}, now)
    assert not ratelimit.decide(budget, now).allowed
    assert ratelimit.decide(budget, now).resume_at == datetime(2026, 3, 2, 8, 15, tzinfo=UTC)
    # The next window starts fresh; usage seen in an earlier window no longer counts.
    assert ratelimit.decide(budget, datetime(2026, 3, 2, 8, 15, tzinfo=UTC)).allowed
    enrolled = ratelimit.Budget().observe(
        {
            "X-RateLimit-Limit": "600,30000",
            "X-RateLimit-Usage": "4,67",
            "X-ReadRateLimit-Limit": "300,15000",
            "X-ReadRateLimit-Usage": "301,302",
        },
        now,
    )
    assert not ratelimit.decide(enrolled, now, "read").allowed
    assert ratelimit.decide(enrolled, now, "write").allowed
    assert ratelimit.next_quarter(datetime(2026, 3, 2, 23, 59, tzinfo=UTC)) == datetime(2026, 3, 3, tzinfo=UTC)
    assert ratelimit.next_day(now) == datetime(2026, 3, 3, tzinfo=UTC)
