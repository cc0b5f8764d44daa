"""Events are hints, the list is the truth: forged Strava events (unsigned; anyone who knows the public ids can
send them) cost one activity-list request per athlete per interval, never the budget a real run needs, while
real creates, updates and deletes keep working. Through our web app, the fake Strava and the real stravalib
client, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from factories import process_and_plan
from fake_strava import (
    FakeClock,
    FakeStrava,
    Limits,
    add_stridecare_athlete,
    connect_account,
    fake_strava_runtime,
    make_activity,
    running,
)
from sqlalchemy import func, select
from starlette.testclient import TestClient

from ingest.strava.events import LISTING, NOT_LISTED, due_event_ids, sweep
from stridecare.clock import write_clock_file
from stridecare.db.models import Prompt, Run, StravaEvent
from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app

STRAVA_ID = 7170
SUB_ID = 1001
LIST = "GET /api/v3/athlete/activities"
INTERVAL_S = 120  # the default strava_list_interval_s


@pytest.fixture
def fake() -> Iterator[FakeStrava]:
    with running(clock=FakeClock(datetime.now(UTC).replace(microsecond=0))) as f:
        f.add_athlete(STRAVA_ID)
        yield f


@pytest.fixture
def srt(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeStrava) -> Iterator[Runtime]:
    extra: dict[str, Any] = {}
    if getattr(request, "param", "sqlite") == "postgres":
        extra["database_url"] = request.getfixturevalue("pg_url")
    runtime = fake_strava_runtime(tmp_path, fake, SUB_ID, strava_verify_token="verify-flood", **extra)
    yield runtime
    runtime.close()


class Queue:
    """Stands in for the broker: the web app and the sweep put event ids here, the "workers" take them."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def __call__(self, event_id: int) -> None:
        self.ids.append(event_id)

    def work(self, rt: Runtime) -> list[str]:
        taken, self.ids = self.ids, []
        return [process_and_plan(rt, i).status for i in taken]


def advance(rt: Runtime, fake: FakeStrava, seconds: float) -> None:
    fake.clock.advance(seconds)
    assert rt.settings.clock_file is not None
    write_clock_file(rt.settings.clock_file, fake.clock.now())


def body(aspect: str, object_id: int, owner: int = STRAVA_ID, subscription: int = SUB_ID) -> dict[str, Any]:
    return {
        "object_type": "activity",
        "object_id": object_id,
        "aspect_type": aspect,
        "owner_id": owner,
        "subscription_id": subscription,
        "event_time": int(time.time()),
        "updates": {},
    }


def keys(rt: Runtime) -> list[str]:
    with rt.db.read() as s:
        return sorted(r.source_key for r in s.scalars(select(Run)))


def statuses(rt: Runtime) -> dict[str, int]:
    with rt.db.read() as s:
        return {
            str(k): int(n) for k, n in s.execute(select(StravaEvent.status, func.count()).group_by(StravaEvent.status))
        }


def list_times(fake: FakeStrava) -> list[datetime]:
    with fake.lock:
        return [r.at for r in fake.requests if r.endpoint == LIST]


@pytest.mark.parametrize("srt", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_forged_flood_costs_one_list_per_interval_and_a_real_run_still_arrives(
    srt: Runtime, fake: FakeStrava
) -> None:
    account = connect_account(srt.db, srt.settings, fake, add_stridecare_athlete(srt.db, "me"), srt.now())
    assert account.account_id
    queue = Queue()
    fake.reset_counts()
    with TestClient(create_app(srt, enqueue=queue), base_url="http://127.0.0.1:8080") as web:
        for i in range(150):
            if i == 75:  # in the middle of the flood the athlete saves a real run
                real_start = fake.clock.now() - timedelta(minutes=50)
                fake.add_activity(STRAVA_ID, make_activity(555001, real_start, athlete_id=STRAVA_ID))
                assert web.post("/strava/webhook", json=body("create", 555001)).status_code == 200
                real_sent = fake.clock.now()
            assert web.post("/strava/webhook", json=body("create", 990000 + i)).status_code == 200
            queue.work(srt)  # workers keep up with the hook, one event after the other
            advance(srt, fake, 0.2)
    # The flood arrived within the interval: one list so far, and no fetch of any forged id.
    assert fake.count(LIST) == 1
    assert fake.count() == 1
    # The beat ticks every few seconds until the real run is in.
    arrived: datetime | None = None
    for _ in range(200):
        advance(srt, fake, 5)
        sweep(srt, enqueue_event=queue, enqueue_backfill=lambda _id: None)
        queue.work(srt)
        if arrived is None and "555001" in keys(srt):
            arrived = fake.clock.now()
        if arrived is not None and statuses(srt).keys() <= {"done"}:
            break
    assert arrived is not None
    # The real run waited at most one interval (and a tick) behind the flood's list.
    assert (arrived - real_sent).total_seconds() <= INTERVAL_S + 5 + 1
    # 150 forged events cost two list requests (the second confirms the misses), a full interval apart;
    # the real run cost one streams request. Nothing else.
    times = list_times(fake)
    assert len(times) == 2
    assert (times[1] - times[0]).total_seconds() >= INTERVAL_S
    assert fake.counts() == {LIST: 2, "GET /api/v3/activities/{id}/streams": 1}
    assert fake.count(status=429) == 0
    # Every forged event is finished, none will be retried; the real run has its one prompt.
    assert statuses(srt) == {"done": 151}
    with srt.db.read() as s:
        details = [
            e.detail
            for e in s.scalars(select(StravaEvent).where(StravaEvent.payload["object_id"].as_integer() != 555001))
        ]
        assert set(details) == {NOT_LISTED}
        assert s.scalar(select(func.count()).select_from(Prompt).where(Prompt.kind == "post_run")) == 1
    assert keys(srt) == ["555001"]


def test_a_burst_of_real_events_costs_one_list_and_every_run_arrives(srt: Runtime, fake: FakeStrava) -> None:
    connect_account(srt.db, srt.settings, fake, add_stridecare_athlete(srt.db, "me"), srt.now())
    start = fake.clock.now() - timedelta(days=1)
    for n in range(5):  # a watch that synced five runs at once
        fake.add_activity(STRAVA_ID, make_activity(556000 + n, start + timedelta(hours=2 * n), athlete_id=STRAVA_ID))
    queue = Queue()
    fake.reset_counts()
    with TestClient(create_app(srt, enqueue=queue), base_url="http://127.0.0.1:8080") as web:
        for n in range(5):
            assert web.post("/strava/webhook", json=body("create", 556000 + n)).status_code == 200
    outcomes = [process_and_plan(srt, i) for i in queue.ids]
    assert keys(srt) == [str(556000 + n) for n in range(5)]
    assert fake.count(LIST) == 1
    assert fake.count("GET /api/v3/activities/{id}") == 0  # the list's summaries carry what a run needs
    # One list answered the five events; each event whose run it stored is named for its console line.
    assert outcomes[0].runs_changed and len(outcomes[0].changed_events) == 5
    assert [o.status for o in outcomes[1:]] == ["skipped"] * 4
    assert statuses(srt) == {"done": 5}


def test_update_and_delete_events_keep_working_and_an_unknown_update_goes_to_the_list(
    srt: Runtime, fake: FakeStrava
) -> None:
    connect_account(srt.db, srt.settings, fake, add_stridecare_athlete(srt.db, "me"), srt.now())
    activity = make_activity(557001, fake.clock.now() - timedelta(hours=3), athlete_id=STRAVA_ID)
    fake.add_activity(STRAVA_ID, activity)
    queue = Queue()
    with TestClient(create_app(srt, enqueue=queue), base_url="http://127.0.0.1:8080") as web:
        web.post("/strava/webhook", json=body("create", 557001))
        queue.work(srt)
        assert keys(srt) == ["557001"]
        fake.reset_counts()
        # An update of a run we hold fetches the activity itself, at once (no list).
        activity["name"] = "Tempo"
        web.post("/strava/webhook", json=body("update", 557001))
        assert queue.work(srt) == ["done"]
        assert fake.counts() == {"GET /api/v3/activities/{id}": 1}
        with srt.db.read() as s:
            assert s.scalars(select(Run.name)).one() == "Tempo"
        # Forged updates for activities we do not hold go to the list like creates: no fetch per event.
        for n in range(30):
            web.post("/strava/webhook", json=body("update", 880000 + n))
        queue.work(srt)
        assert fake.count("GET /api/v3/activities/{id}") == 1
        assert fake.count("GET /api/v3/athlete/activities") == 0  # the create's list was moments ago: they wait
        advance(srt, fake, INTERVAL_S + 1)
        sweep(srt, enqueue_event=queue, enqueue_backfill=lambda _id: None)
        queue.work(srt)
        assert fake.count("GET /api/v3/athlete/activities") == 1
        # A burst of (forged) updates or deletes of a run we hold: one fetch answers the burst.
        fake.reset_counts()
        for n in range(30):
            web.post("/strava/webhook", json=body("update", 557001) | {"event_time": n})
            web.post("/strava/webhook", json=body("delete", 557001) | {"event_time": n})
        outcomes = queue.work(srt)
        assert fake.counts() == {"GET /api/v3/activities/{id}": 2}  # one for the updates, one for the deletes
        assert outcomes.count("skipped") == 58
        assert keys(srt) == ["557001"]
        # A delete is still confirmed with the API before anything goes.
        fake.delete_activity(STRAVA_ID, 557001)
        web.post("/strava/webhook", json=body("delete", 557001))
        assert queue.work(srt) == ["done"]
        assert keys(srt) == []
        assert fake.count("GET /api/v3/activities/{id}", 404) == 1


def test_the_sweep_hands_one_waiting_event_per_athlete_to_the_workers(srt: Runtime, fake: FakeStrava) -> None:
    connect_account(srt.db, srt.settings, fake, add_stridecare_athlete(srt.db, "me"), srt.now())
    queue = Queue()
    with TestClient(create_app(srt, enqueue=queue), base_url="http://127.0.0.1:8080") as web:
        for n in range(40):
            web.post("/strava/webhook", json=body("create", 881000 + n))
    queue.work(srt)
    assert statuses(srt) == {LISTING: 40}
    advance(srt, fake, INTERVAL_S + 1)
    due = due_event_ids(srt, srt.now())
    assert len(due) == 1  # its list answers the other 39
    assert process_and_plan(srt, due[0]).status == "done"
    assert statuses(srt) == {"done": 40}


def test_a_reserve_of_the_budget_is_kept_for_new_runs(tmp_path: Path) -> None:
    # Twenty reads in this 15-minute window; the app has used 15 of them.
    with running(clock=FakeClock(datetime.now(UTC).replace(microsecond=0)), limits=Limits(read=(20, 1000))) as fake:
        fake.add_athlete(STRAVA_ID)
        clock = tmp_path / "clock.txt"
        write_clock_file(clock, fake.clock.now())
        settings = make_settings(
            tmp_path,
            strava_client_id=str(fake.client_id),
            strava_client_secret=fake.client_secret,
            strava_base_url=fake.base_url,
            strava_subscription_id=SUB_ID,
            clock_file=clock,
        )
        rt = Runtime.open(settings)
        try:
            connect_account(rt.db, rt.settings, fake, add_stridecare_athlete(rt.db, "me"), rt.now())
            held = make_activity(558001, fake.clock.now() - timedelta(days=2), athlete_id=STRAVA_ID)
            fake.add_activity(STRAVA_ID, held)
            queue = Queue()
            with TestClient(create_app(rt, enqueue=queue), base_url="http://127.0.0.1:8080") as web:
                web.post("/strava/webhook", json=body("create", 558001))
                queue.work(rt)
                with fake.lock:
                    quarter = fake._windows()[0]
                    fake.usage[("read15", quarter)] += 13  # 15 used, 5 left
                # Forged updates and deletes of a run we hold: each wants a fetch, and they may not take the
                # last strava_event_reserve (10) reads.
                fake.reset_counts()
                for n in range(3):
                    web.post("/strava/webhook", json=body("update", 558001) | {"event_time": n})
                    web.post("/strava/webhook", json=body("delete", 558001) | {"event_time": n})
                queue.work(rt)
                assert fake.count() == 1  # the one that told us the budget
                # A real run now still gets its list and its streams.
                fake.add_activity(
                    STRAVA_ID, make_activity(558002, fake.clock.now() - timedelta(minutes=30), athlete_id=STRAVA_ID)
                )
                write_clock_file(clock, fake.clock.advance(INTERVAL_S + 1))
                web.post("/strava/webhook", json=body("create", 558002))
                queue.work(rt)
            assert "558002" in keys(rt)
            assert fake.count(status=429) == 0
        finally:
            rt.close()


def test_the_webhook_answers_alike_for_a_right_and_a_wrong_subscription(srt: Runtime) -> None:
    with TestClient(create_app(srt, enqueue=lambda _id: None), base_url="http://127.0.0.1:8080") as web:
        right = web.post("/strava/webhook", json=body("create", 1))
        wrong = web.post("/strava/webhook", json=body("create", 1, subscription=SUB_ID + 1))
    assert (right.status_code, right.content, right.headers["content-type"]) == (
        wrong.status_code,
        wrong.content,
        wrong.headers["content-type"],
    )
    assert statuses(srt) == {"pending": 1}  # only the right one is stored
