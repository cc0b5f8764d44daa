"""Strava wired into the product, end to end through the fake Strava server with the real stravalib client:
OAuth connect (web and command line), push events through our web app into runs, load and prompts, updates,
deletions, (forged) deauthorizations, Strava's retries, one run from two sources, secrets kept out of logs,
and a real Celery worker on the local Redis."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from channel_settings import channel_settings
from conftest import make_settings
from cryptography.fernet import Fernet
from factories import backfill_planned, drain_and_plan, ingest_planned, process_and_plan
from fake_strava import (
    FERNET_KEY,
    FakeClock,
    FakeStrava,
    add_stridecare_athlete,
    connect_account,
    follow_authorize,
    make_activity,
    running,
)
from fitgen import write_activity
from harness import wait_for
from sqlalchemy import func, select
from starlette.testclient import TestClient
from typer.testing import CliRunner

import stridecare_app.web.strava as web_strava
from ingest.connectors.ledger import connect as connect_connector
from ingest.strava.events import sweep
from ingest.strava.oauth import deauthorize
from ingest.strava.sync import backfill_account
from recommender.planner import replan
from stridecare.clock import write_clock_file
from stridecare.crypto import Vault
from stridecare.db.models import Athlete, ConnectorAccount, DailyLoad, Delivery, Prompt, Run, StravaAccount, StravaEvent
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.web.app import create_app
from workers.announce import announce_stored

STRAVA_ID = 5150
SUB_ID = 1001  # the fake's first subscription id
VERIFY = "verify-tok-e2e-7f3a9c"
ROOT = Path(__file__).resolve().parents[1]


# -- fixtures ------------------------------------------------------------------------------------------------


class Recorder:
    """Stands in for the Celery enqueue of the web app: remembers the event ids it was given."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def __call__(self, event_id: int) -> None:
        self.ids.append(event_id)


@pytest.fixture
def fake() -> Iterator[FakeStrava]:
    # The fake's clock starts at the wall clock: token expiry and the freshness window line up with rt.now().
    with running(clock=FakeClock(datetime.now(UTC).replace(microsecond=0))) as f:
        f.add_athlete(STRAVA_ID)
        yield f


def strava_overrides(tmp_path: Path, fake: FakeStrava, **extra: Any) -> dict[str, Any]:
    """Settings values aimed at the fake, with a simulation clock file kept at the fake's time."""
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, fake.clock.now())
    values: dict[str, Any] = {
        "strava_client_id": str(fake.client_id),
        "strava_client_secret": fake.client_secret,
        "strava_base_url": fake.base_url,
        "strava_verify_token": VERIFY,
        "strava_subscription_id": SUB_ID,
        "clock_file": clock,
    }
    values.update(extra)
    return values


@pytest.fixture
def srt(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeStrava) -> Iterator[Runtime]:
    """A runtime aimed at the fake: SQLite, or PostgreSQL for tests parametrized ``indirect`` with it."""
    extra: dict[str, Any] = {}
    if getattr(request, "param", "sqlite") == "postgres":
        extra["database_url"] = request.getfixturevalue("pg_url")
    runtime = Runtime.open(make_settings(tmp_path, **strava_overrides(tmp_path, fake, **extra)))
    yield runtime
    runtime.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def web(srt: Runtime, recorder: Recorder) -> Iterator[TestClient]:
    with TestClient(create_app(srt, enqueue=recorder), base_url="http://127.0.0.1:8080") as client:
        yield client


def advance(rt: Runtime, fake: FakeStrava, seconds: float) -> None:
    """Move the fake's clock and ours together."""
    fake.clock.advance(seconds)
    assert rt.settings.clock_file is not None
    write_clock_file(rt.settings.clock_file, fake.clock.now())


def connected(rt: Runtime, fake: FakeStrava) -> int:
    """A stridecare athlete "me" connected to the fake's athlete; returns the account id."""
    athlete_id = add_stridecare_athlete(rt.db, "me")
    return connect_account(rt.db, rt.settings, fake, athlete_id, rt.now()).account_id


def event(aspect: str, object_id: int, *, object_type: str = "activity", **extra: Any) -> dict[str, Any]:
    """A push event body as Strava sends it."""
    body: dict[str, Any] = {
        "object_type": object_type,
        "object_id": object_id,
        "aspect_type": aspect,
        "owner_id": STRAVA_ID,
        "subscription_id": SUB_ID,
        "event_time": int(time.time()),
        "updates": {},
    }
    body.update(extra)
    return body


def post(web: TestClient, body: dict[str, Any]) -> None:
    resp = web.post("/strava/webhook", json=body)
    assert resp.status_code == 200, resp.text


def process_all(rt: Runtime) -> list[str]:
    """What the worker does: process every stored event (the task calls process_event with the id)."""
    with rt.db.read() as s:
        ids = list(s.scalars(select(StravaEvent.id).order_by(StravaEvent.id)))
    return [process_and_plan(rt, i).status for i in ids]


def add_run(fake: FakeStrava, aid: int, start: datetime, **kwargs: Any) -> dict[str, Any]:
    activity = make_activity(aid, start, athlete_id=STRAVA_ID, **kwargs)
    fake.add_activity(STRAVA_ID, activity)
    return activity


def runs(rt: Runtime) -> list[Run]:
    with rt.db.read() as s:
        return list(s.scalars(select(Run).order_by(Run.id)))


def prompts(rt: Runtime) -> list[Prompt]:
    with rt.db.read() as s:
        return list(s.scalars(select(Prompt).where(Prompt.kind == "post_run")))


def count(rt: Runtime, model: Any) -> int:
    with rt.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


# -- connect -------------------------------------------------------------------------------------------------


def start_connect(srt: Runtime, web: TestClient, name: str) -> Any:
    """Open the athlete's signed connect link as their browser would: the GET asks, the POST goes to Strava."""
    with srt.db.read() as s:
        athlete_id = s.scalars(select(Athlete.id).where(Athlete.name == name)).one()
    path = web_strava.connect_link(srt, athlete_id).removeprefix(srt.settings.effective_public_url)
    assert "Continue to Strava" in web.get(path).text
    return web.post(path, follow_redirects=False)


def test_connect_through_web_endpoints_checks_state_and_scope(srt: Runtime, fake: FakeStrava, web: TestClient) -> None:
    add_stridecare_athlete(srt.db, "me")
    resp = start_connect(srt, web, "me")
    assert resp.status_code == 303
    assert resp.headers["location"].startswith(fake.base_url + "/oauth/authorize")
    params = follow_authorize(resp.headers["location"])  # the athlete approves at "Strava"
    assert "activity:read_all" in params["scope"]

    # The state cookie ties the callback to the browser that started it.
    with TestClient(create_app(srt), base_url="http://127.0.0.1:8080") as stranger:
        assert stranger.get("/strava/callback", params=params).status_code == 400
    assert count(srt, StravaAccount) == 0

    resp = web.get("/strava/callback", params=params)
    assert resp.status_code == 200, resp.text
    assert "Strava connected" in resp.text
    # The state is single-use: the same callback replayed (cookie and all) connects nothing again.
    web.cookies.set(web_strava.STATE_COOKIE, params["state"], path="/strava")
    replay = web.get("/strava/callback", params=params)
    assert replay.status_code == 400 and "already used" in replay.text
    web.cookies.clear()
    with srt.db.read() as s:
        account = s.scalars(select(StravaAccount)).one()
        assert account.strava_athlete_id == STRAVA_ID
        assert account.backfill_state == "pending"
        # Tokens are encrypted at rest.
        grant = fake.grants[-1]
        assert grant.access_token not in account.access_token_enc
        assert srt.vault.decrypt(account.access_token_enc) == grant.access_token

    # A second athlete who untick the activity scope is refused before the code is spent.
    add_stridecare_athlete(srt.db, "bo")
    fake.add_athlete(777)
    fake.authorize_athlete_id, fake.accepted_scope = 777, "read"
    resp = start_connect(srt, web, "bo")
    params = follow_authorize(resp.headers["location"])
    resp = web.get("/strava/callback", params=params)
    assert resp.status_code == 400
    assert "activities" in resp.text
    assert count(srt, StravaAccount) == 1
    # A tampered state is refused too.
    resp = start_connect(srt, web, "bo")
    params = follow_authorize(resp.headers["location"])
    forged = dict(params, state=params["state"][:-2] + "xx")
    web.cookies.set(web_strava.STATE_COOKIE, forged["state"], path="/strava")
    assert web.get("/strava/callback", params=forged).status_code == 400


def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, **extra: str) -> None:
    """Point the command line (which reads STRIDECARE_*) at the same database and fake as ``settings``."""
    env = {
        "STRIDECARE_DATA_HOME": str(settings.data_home),
        "STRIDECARE_DATABASE_URL": settings.effective_database_url,
        "STRIDECARE_ENCRYPTION_KEYS": FERNET_KEY,
        "STRIDECARE_SECRET_KEY": "test-signing-key",
        "STRIDECARE_STRAVA_CLIENT_ID": str(settings.strava_client_id),
        "STRIDECARE_STRAVA_CLIENT_SECRET": settings.strava_client_secret.get_secret_value()
        if settings.strava_client_secret
        else "",
        "STRIDECARE_STRAVA_BASE_URL": settings.strava_base_url,
        "STRIDECARE_STRAVA_VERIFY_TOKEN": VERIFY,
        "STRIDECARE_STRAVA_SUBSCRIPTION_ID": str(SUB_ID),
        "STRIDECARE_CLOCK_FILE": str(settings.clock_file),
    }
    env.update(extra)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def cli(*args: str) -> Any:
    from stridecare_app.cli.main import app

    root = logging.getLogger()
    handlers, level, marked = list(root.handlers), root.level, getattr(root, "_stridecare", None)
    try:
        return CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        # setup_logging attaches a handler to the runner's stream, which closes with the invocation.
        root.handlers[:] = handlers
        root.setLevel(level)
        if marked is None and hasattr(root, "_stridecare"):
            delattr(root, "_stridecare")


def test_connect_from_the_command_line_with_a_pasted_code(
    srt: Runtime, fake: FakeStrava, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_env(monkeypatch, srt.settings)
    add_stridecare_athlete(srt.db, "me")
    first = cli("strava", "connect", "--athlete", "me")
    assert first.exit_code == 0, first.output
    url = next(line for line in first.stdout.splitlines() if line.startswith("http"))
    params = follow_authorize(url)  # approved in a browser on another machine
    pasted = "http://localhost/exchange_token?" + urlencode(params)
    done = cli("strava", "connect", "--athlete", "me", "--code", pasted)
    assert done.exit_code == 0, done.output
    with srt.db.read() as s:
        account = s.scalars(select(StravaAccount)).one()
        assert account.strava_athlete_id == STRAVA_ID
        assert fake.grants[-1].access_token not in done.output

    # A bare code (no scope known) is checked with one API read: without the activity scope, no account.
    add_stridecare_athlete(srt.db, "bo")
    fake.add_athlete(778)
    fake.authorize_athlete_id, fake.accepted_scope = 778, "read"
    url = next(line for line in cli("strava", "connect", "-a", "bo").stdout.splitlines() if line.startswith("http"))
    bare = follow_authorize(url)["code"]
    refused = cli("strava", "connect", "-a", "bo", "--code", bare)
    assert refused.exit_code == 2
    assert "activities" in refused.stderr
    assert count(srt, StravaAccount) == 1

    status = cli("strava", "status", "--json")
    assert status.exit_code == 0
    assert '"strava_athlete_id": 5150' in status.stdout


# -- events --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("srt", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_create_event_stores_run_with_stream_steps_and_one_prompt(
    srt: Runtime, fake: FakeStrava, web: TestClient, recorder: Recorder
) -> None:
    connected(srt, fake)
    start = fake.clock.now() - timedelta(hours=1)
    add_run(fake, 900001, start, moving_time=3000, average_cadence=85.0)
    fake.reset_counts()

    post(web, event("create", 900001))
    # Answered at once with no API call; the event is stored and its id enqueued.
    assert fake.count() == 0
    with srt.db.read() as s:
        stored = s.scalars(select(StravaEvent)).one()
    assert recorder.ids == [stored.id]

    assert process_and_plan(srt, stored.id).status == "done"
    (run,) = runs(srt)
    assert run.source == "strava"
    assert run.source_key == "900001"
    assert run.cadence_source == "stream"
    # Strava's cadence counts one foot: 85 strides/min over 3000 moving seconds is 8500 steps.
    assert run.steps == pytest.approx(8500, rel=0.01)
    assert run.avg_cadence_spm == pytest.approx(170, rel=0.01)
    (prompt,) = prompts(srt)
    assert prompt.run_id == run.id
    with srt.db.read() as s:
        deliveries = list(s.scalars(select(Delivery).where(Delivery.prompt_id == prompt.id)))
        assert [d.channel for d in deliveries] == ["console"]
        assert s.get(StravaEvent, stored.id).status == "done"  # type: ignore[union-attr]
        assert s.get(Run, run.id).load is not None  # type: ignore[union-attr]
    assert fake.counts()["GET /api/v3/activities/{id}/streams"] == 1

    # Processing the same id again (a redelivered task) changes nothing.
    assert process_and_plan(srt, stored.id).status == "skipped"
    assert len(runs(srt)) == 1
    assert len(prompts(srt)) == 1


def test_strava_retry_of_the_same_event_is_processed_once(
    srt: Runtime, fake: FakeStrava, web: TestClient, recorder: Recorder
) -> None:
    connected(srt, fake)
    add_run(fake, 900002, fake.clock.now() - timedelta(hours=2))
    body = event("create", 900002)
    post(web, body)
    post(web, body)  # Strava retries when our 200 came late
    assert count(srt, StravaEvent) == 1
    assert len(recorder.ids) == 1
    for event_id in recorder.ids * 2:  # and the task may even run twice
        process_and_plan(srt, event_id)
    assert len(runs(srt)) == 1
    assert len(prompts(srt)) == 1
    # One list read answers the event; its summary needs no fetch of the activity itself.
    assert fake.count("GET /api/v3/athlete/activities") == 1
    assert fake.count("GET /api/v3/activities/{id}") == 0


@pytest.mark.parametrize("srt", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_update_and_delete_events(srt: Runtime, fake: FakeStrava, web: TestClient) -> None:
    connected(srt, fake)
    start = fake.clock.now() - timedelta(hours=3)
    activity = add_run(fake, 900003, start)
    add_run(fake, 900004, start - timedelta(days=1))
    post(web, event("create", 900003))
    post(web, event("create", 900004))
    process_all(srt)
    assert len(runs(srt)) == 2

    # A new title: re-fetched, the run renamed, its stream steps kept.
    steps_before = next(r.steps for r in runs(srt) if r.source_key == "900003")
    activity["name"] = "Hill repeats"
    post(web, event("update", 900003, updates={"title": "Hill repeats"}))
    assert process_all(srt)[-1] == "done"
    run = next(r for r in runs(srt) if r.source_key == "900003")
    assert run.name == "Hill repeats"
    assert run.steps == pytest.approx(steps_before)
    assert len(prompts(srt)) == 1  # the day-old run is not fresh; an update makes no new prompt

    # Now a ride: no longer a foot sport, so the run goes and the day's load is recomputed.
    activity["sport_type"] = activity["type"] = "Ride"
    post(web, event("update", 900003, updates={"type": "Ride"}))
    process_all(srt)
    assert [r.source_key for r in runs(srt)] == ["900004"]

    # Deleted on Strava: removed here too once one API read confirms it (events are unsigned).
    fake.delete_activity(STRAVA_ID, 900004)
    fake.reset_counts()
    post(web, event("delete", 900004))
    process_all(srt)
    assert runs(srt) == []
    assert fake.count() == 1 and fake.count("GET /api/v3/activities/{id}", 404) == 1
    with srt.db.read() as s:
        assert sum(d.load for d in s.scalars(select(DailyLoad))) == 0


@pytest.mark.parametrize("srt", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_deauthorization_deletes_the_athletes_strava_data(
    srt: Runtime, fake: FakeStrava, web: TestClient, tmp_path: Path
) -> None:
    account_id = connected(srt, fake)
    start = fake.clock.now() - timedelta(hours=1)
    add_run(fake, 900005, start)
    post(web, event("create", 900005))
    fit = tmp_path / "other.fit"
    write_activity(fit, start=start - timedelta(days=2), duration_s=1800, speed_mps=3.0, cadence_rpm=84)
    ingest_planned(srt.db, srt.settings, "me", fit, srt.now())
    process_all(srt)
    assert {r.source for r in runs(srt)} == {"strava", "fit"}

    deauthorize(srt.db, srt.settings, account_id)  # the athlete revokes access at Strava
    post(web, event("update", STRAVA_ID, object_type="athlete", updates={"authorized": "false"}))
    process_all(srt)
    assert [r.source for r in runs(srt)] == ["fit"]  # the FIT file is not Strava data
    assert count(srt, StravaAccount) == 0
    assert count(srt, StravaEvent) == 0


def test_forged_deauthorizations_delete_nothing(srt: Runtime, fake: FakeStrava, web: TestClient) -> None:
    connected(srt, fake)
    add_run(fake, 900006, fake.clock.now() - timedelta(hours=1))
    post(web, event("create", 900006))
    process_all(srt)

    # Wrong subscription: answered 200 (nobody retries) and not even stored.
    body = event("update", STRAVA_ID, object_type="athlete", updates={"authorized": "false"})
    post(web, dict(body, subscription_id=4242))
    assert count(srt, StravaEvent) == 1
    # Right subscription, but our token still works: not confirmed, nothing deleted.
    post(web, body)
    statuses = process_all(srt)
    assert statuses[-1] == "ignored"
    assert len(runs(srt)) == 1
    assert count(srt, StravaAccount) == 1
    # Events for athletes we do not know are ignored too.
    post(web, dict(event("create", 1), owner_id=999))
    assert process_all(srt)[-1] == "ignored"


def test_validation_get_needs_the_verify_token(web: TestClient) -> None:
    ok = web.get(
        "/strava/webhook",
        params={"hub.mode": "subscribe", "hub.challenge": "c-123", "hub.verify_token": VERIFY},
    )
    assert ok.status_code == 200
    assert ok.json() == {"hub.challenge": "c-123"}
    for token in ("wrong", "", VERIFY[:-1]):
        bad = web.get(
            "/strava/webhook",
            params={"hub.mode": "subscribe", "hub.challenge": "c-123", "hub.verify_token": token},
        )
        assert bad.status_code == 403
        assert "c-123" not in bad.text
    assert web.post("/strava/webhook", content=b"not json").status_code == 400


# -- one run, two sources ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fit_first", [True, False], ids=["fit-then-strava", "strava-then-fit"])
@pytest.mark.parametrize("srt", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_same_run_from_fit_and_strava_is_one_run_with_one_prompt(
    srt: Runtime, fake: FakeStrava, web: TestClient, tmp_path: Path, fit_first: bool
) -> None:
    connected(srt, fake)
    start = (fake.clock.now() - timedelta(hours=1)).replace(microsecond=0)
    add_run(fake, 900007, start + timedelta(seconds=20), moving_time=3000, distance=10000.0, average_cadence=85.0)
    fit = tmp_path / "watch.fit"
    write_activity(fit, start=start, duration_s=3000, speed_mps=3.333, cadence_rpm=85)

    def from_fit() -> None:
        assert ingest_planned(srt.db, srt.settings, "me", fit, srt.now()).status == "ingested"

    def from_strava() -> None:
        post(web, event("create", 900007))
        process_all(srt)

    for arrive in (from_fit, from_strava) if fit_first else (from_strava, from_fit):
        arrive()

    both = runs(srt)
    assert sorted(r.source for r in both) == ["fit", "strava"]
    primary = [r for r in both if r.duplicate_of_id is None]
    # Both have per-sample cadence: the watch's own file is the richer record.
    assert [r.source for r in primary] == ["fit"]
    strava = next(r for r in both if r.source == "strava")
    assert strava.duplicate_of_id == primary[0].id
    assert len(prompts(srt)) == 1
    assert count(srt, Delivery) == 1
    with srt.db.read() as s:
        day_load = sum(d.load for d in s.scalars(select(DailyLoad)))
        fit_load = s.get(Run, primary[0].id).load.load  # type: ignore[union-attr]
    assert day_load == pytest.approx(fit_load)  # counted once

    # Deleting the Strava copy leaves the FIT run as it was, without a second prompt.
    fake.delete_activity(STRAVA_ID, 900007)
    post(web, event("delete", 900007))
    process_all(srt)
    assert [r.source for r in runs(srt)] == ["fit"]
    assert len(prompts(srt)) == 1


def test_summary_only_strava_copy_gives_way_to_a_fit_file(
    srt: Runtime, fake: FakeStrava, web: TestClient, tmp_path: Path
) -> None:
    connected(srt, fake)
    start = (fake.clock.now() - timedelta(hours=1)).replace(microsecond=0)
    activity = make_activity(900008, start, athlete_id=STRAVA_ID, moving_time=3000, average_cadence=85.0)
    fake.add_activity(STRAVA_ID, activity, streams=None)
    post(web, event("create", 900008))
    process_all(srt)
    assert runs(srt)[0].cadence_source == "session"
    fit = tmp_path / "watch.fit"
    write_activity(fit, start=start + timedelta(seconds=45), duration_s=2800, speed_mps=3.333, cadence_rpm=85)
    ingest_planned(srt.db, srt.settings, "me", fit, srt.now())
    strava, fitrun = sorted(runs(srt), key=lambda r: r.source != "strava")
    assert fitrun.duplicate_of_id is None
    assert strava.duplicate_of_id == fitrun.id
    assert len(prompts(srt)) == 1


# -- secrets -------------------------------------------------------------------------------------------------


def test_no_secret_reaches_the_logs(
    srt: Runtime, fake: FakeStrava, web: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    add_stridecare_athlete(srt.db, "me")
    resp = start_connect(srt, web, "me")
    assert web.get("/strava/callback", params=follow_authorize(resp.headers["location"])).status_code == 200
    with srt.db.read() as s:
        account_id = s.scalars(select(StravaAccount.id)).one()
    web.get("/strava/webhook", params={"hub.mode": "subscribe", "hub.challenge": "x", "hub.verify_token": "nope"})
    activity = add_run(fake, 900009, fake.clock.now() - timedelta(hours=1))
    post(web, event("create", 900009))
    fake.expire_tokens()  # the next call refreshes the token
    advance(srt, fake, 60)
    process_all(srt)
    activity["name"] = "renamed"
    post(web, event("update", 900009, updates={"title": "renamed"}))
    process_all(srt)
    deauthorize(srt.db, srt.settings, account_id)
    post(web, event("update", STRAVA_ID, object_type="athlete", updates={"authorized": "false"}))
    process_all(srt)
    assert count(srt, StravaAccount) == 0
    assert fake.refresh_count >= 1

    secrets = {fake.client_secret, VERIFY}
    for grant in fake.grants:
        secrets |= {grant.access_token}
    secrets |= set(fake.issued_refresh_tokens)
    logged = [f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert len(logged) > 10  # the flow did log (DEBUG from stravalib, urllib3, stridecare)
    leaks = [line for line in logged for secret in secrets if secret and secret in line]
    assert leaks == []


# -- subscription, backfill, keys ----------------------------------------------------------------------------


@pytest.fixture
def served(srt: Runtime, recorder: Recorder) -> Iterator[str]:
    """Our web app on a loopback port (the fake calls it back during subscription)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(srt, enqueue=recorder), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, interval=0.05, what="uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_subscribe_command_creates_a_validated_subscription(
    srt: Runtime, fake: FakeStrava, served: str, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_env(monkeypatch, srt.settings)
    connected(srt, fake)
    # The web app refuses the validation GET when the verify tokens differ: no subscription.
    monkeypatch.setenv("STRIDECARE_STRAVA_VERIFY_TOKEN", "not-the-web-apps-token")
    result = cli("strava", "subscribe", "--callback-url", f"{served}/strava/webhook")
    assert result.exit_code == 2, result.output
    assert fake.subscriptions == {}
    monkeypatch.setenv("STRIDECARE_STRAVA_VERIFY_TOKEN", VERIFY)
    result = cli("strava", "subscribe", "--callback-url", f"{served}/strava/webhook")
    assert result.exit_code == 0, result.output
    assert f"STRIDECARE_STRAVA_SUBSCRIPTION_ID={SUB_ID}" in result.stdout
    assert VERIFY not in result.output
    assert fake.client_secret not in result.output

    # Strava now pushes to our web app.
    add_run(fake, 900010, fake.clock.now() - timedelta(hours=1))
    assert (
        fake.push_event(
            {"object_type": "activity", "object_id": 900010, "aspect_type": "create", "owner_id": STRAVA_ID}
        )
        == 200
    )
    assert len(recorder.ids) == 1
    process_and_plan(srt, recorder.ids[0])
    assert [r.source_key for r in runs(srt)] == ["900010"]


def test_backfill_command_defers_on_rate_limit_and_the_periodic_sweep_continues(
    srt: Runtime, fake: FakeStrava, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_env(monkeypatch, srt.settings)
    account_id = connected(srt, fake)
    now = fake.clock.now()
    add_run(fake, 800001, now - timedelta(hours=2))  # fresh: prompted
    for i in range(2, 8):
        add_run(fake, 800000 + i, now - timedelta(days=i * 3))  # older than the freshness window
    add_run(fake, 800020, now - timedelta(days=5), sport_type="Ride")
    add_run(fake, 800030, now - timedelta(days=400))  # before --since

    fake.fail_next("/api/v3/athlete/activities", 429)
    paused = cli("strava", "backfill", "--since", (now - timedelta(days=100)).date().isoformat())
    assert paused.exit_code == 0, paused.output
    assert "resumes at" in paused.stderr
    with srt.db.read() as s:
        account = s.get(StravaAccount, account_id)
        assert account is not None
        assert account.backfill_state == "deferred"
        resume = account.backfill_resume_at
    assert resume is not None
    assert resume > now

    enqueued: list[int] = []
    sweep(srt, enqueue_backfill=enqueued.append)
    assert enqueued == []  # not due yet
    advance(srt, fake, (resume - now).total_seconds() + 1)
    sweep(srt, enqueue_backfill=enqueued.append)
    assert enqueued == [account_id]

    resumed = cli("strava", "backfill", "--since", (now - timedelta(days=100)).date().isoformat(), "--json")
    assert resumed.exit_code == 0, resumed.output
    assert '"state": "done"' in resumed.stdout
    assert sorted(r.source_key for r in runs(srt)) == [str(800000 + i) for i in range(1, 8)]
    (prompt,) = prompts(srt)  # only the fresh run
    assert prompt.run_id == next(r.id for r in runs(srt) if r.source_key == "800001")
    again = cli("strava", "backfill")
    assert again.exit_code == 0
    assert "already imported" in again.stderr


def test_rotate_keys_reencrypts_tokens_and_webhook_secrets(
    srt: Runtime, fake: FakeStrava, monkeypatch: pytest.MonkeyPatch
) -> None:
    connected(srt, fake)
    with srt.db.transaction() as s:
        athlete = s.scalars(select(Athlete)).one()
        athlete.channel_settings = channel_settings(
            srt.vault, webhook="https://hook.example/", webhook_secret="whsec_dGVzdHNlY3JldA=="
        )
    connect_connector(srt.db, srt.settings, "me", "intervals", "i42", "intervals-api-key", srt.now())
    new_key = Fernet.generate_key().decode()
    cli_env(monkeypatch, srt.settings, STRIDECARE_ENCRYPTION_KEYS=f"{new_key},{FERNET_KEY}")
    result = cli("strava", "rotate-keys")
    assert result.exit_code == 0, result.output
    assert "the credentials of 1 connector accounts" in " ".join(result.output.split())
    only_new = Vault([new_key])
    with srt.db.read() as s:
        account = s.scalars(select(StravaAccount)).one()
        assert only_new.decrypt(account.access_token_enc) == fake.grants[-1].access_token
        assert only_new.decrypt(account.refresh_token_enc) == fake.grants[-1].refresh_token
        stored = s.scalars(select(Athlete.channel_settings)).one()["webhook"]["secret"]
        assert only_new.decrypt(stored) == "whsec_dGVzdHNlY3JldA=="
        key = s.scalars(select(ConnectorAccount.credentials_enc)).one()
        assert key is not None and only_new.decrypt(key) == "intervals-api-key"


# -- a real worker -------------------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_real_celery_worker_processes_a_webhook_event(tmp_path: Path, fake: FakeStrava, redis_db: str) -> None:
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    overrides = strava_overrides(tmp_path, fake, database_url=db_url, broker_url=redis_db)
    rt = Runtime.open(make_settings(tmp_path, **overrides))
    s = rt.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
    env.update(
        {
            "STRIDECARE_BROKER_URL": redis_db,
            "STRIDECARE_DATABASE_URL": db_url,
            "STRIDECARE_DATA_HOME": str(s.data_home),
            "STRIDECARE_ENCRYPTION_KEYS": FERNET_KEY,
            "STRIDECARE_SECRET_KEY": "test-signing-key",
            "STRIDECARE_STRAVA_CLIENT_ID": str(fake.client_id),
            "STRIDECARE_STRAVA_CLIENT_SECRET": fake.client_secret,
            "STRIDECARE_STRAVA_BASE_URL": fake.base_url,
            "STRIDECARE_STRAVA_SUBSCRIPTION_ID": str(SUB_ID),
            "STRIDECARE_STRAVA_VERIFY_TOKEN": VERIFY,
            "STRIDECARE_CLOCK_FILE": str(s.clock_file),
        }
    )
    log_path = tmp_path / "worker.log"
    try:
        connected(rt, fake)
        add_run(fake, 900011, fake.clock.now() - timedelta(hours=1))
        with log_path.open("w") as log_file:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "workers.app",
                    "worker",
                    "--pool=solo",
                    "--concurrency=1",
                    "--loglevel=INFO",
                    "--without-heartbeat",
                    "--without-gossip",
                    "--without-mingle",
                ],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            # The real enqueue: Celery on Redis.
            with TestClient(create_app(rt), base_url="http://127.0.0.1:8080") as web:
                post(web, event("create", 900011))

            def stored() -> bool:
                assert worker.poll() is None, log_path.read_text()
                return bool(runs(rt) and prompts(rt))

            wait_for(stored, timeout=30, interval=0.2, what="the run and its prompt from the worker")
            assert [r.source_key for r in runs(rt)] == ["900011"], log_path.read_text()
            assert len(prompts(rt)) == 1
            with rt.db.read() as session:
                assert session.scalars(select(StravaEvent.status)).one() == "done"
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=5)
        assert fake.client_secret not in log_path.read_text()
    finally:
        rt.close()


def test_periodic_tick_drains_events_whose_nudge_was_lost(srt: Runtime, fake: FakeStrava) -> None:
    from workers.periodic import Enqueue, run_periodic

    def broker_down(_event_id: int) -> None:
        raise ConnectionError("broker unreachable")

    connected(srt, fake)
    add_run(fake, 900012, fake.clock.now() - timedelta(hours=1))
    with TestClient(create_app(srt, enqueue=broker_down), base_url="http://127.0.0.1:8080") as web:
        post(web, event("create", 900012))  # still 200: the event is stored
    drains: list[bool] = []
    backfills_sent: list[int] = []
    enqueue = Enqueue(
        delivery=lambda _i: None, strava_drain=lambda: drains.append(True), strava_backfill=backfills_sent.append
    )
    run_periodic(srt, enqueue)
    assert drains == [True]  # the event is due: the tick asks for the drain the lost nudge did not
    assert len(backfills_sent) == 1  # the new account's history import is due
    progress = backfill_planned(srt, backfills_sent[0])  # what the stridecare.strava_backfill task runs
    assert progress is not None
    assert progress.state == "done"
    # What the stridecare.strava_drain task runs: the backfill already stored the activity, so the event finds
    # it and changes nothing, no second prompt.
    assert drain_and_plan(srt) == ["done"]
    run_periodic(srt, enqueue)
    assert drains == [True]  # nothing due any more: no further drain
    assert len(runs(srt)) == 1
    assert len(prompts(srt)) == 1


def test_same_session_rule() -> None:
    from ingest.dedupe import same_session

    start = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)

    def run(sport: str = "running", offset_s: float = 0, timer_s: float = 3000) -> Run:
        return Run(sport=sport, start_time=start + timedelta(seconds=offset_s), timer_s=timer_s, elapsed_s=3000)

    assert same_session(run(), run(offset_s=60, timer_s=2700))
    assert same_session(run("walking"), run("hiking"))
    assert same_session(run(), run(offset_s=1400))  # elapsed ranges share more than half
    assert same_session(run(), run(timer_s=2550))  # moving time 15 % below the timer: same wall-clock range
    assert not same_session(run(), run(offset_s=1600))
    assert not same_session(run(), run("walking"))


def test_a_strava_run_gets_its_console_line_and_prompt_line(
    srt: Runtime, fake: FakeStrava, web: TestClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    from workers.announce import announce_strava_event

    connected(srt, fake)
    add_run(fake, 900077, fake.clock.now() - timedelta(hours=1), moving_time=3000, distance=10000.0)
    post(web, event("create", 900077))
    assert process_and_plan(srt, recorder.ids[0]).runs_changed
    with caplog.at_level("INFO", logger="stridecare.console"):
        announce_strava_event(srt.db, srt.settings, recorder.ids[0])
    lines = [r.getMessage() for r in caplog.records if r.name == "stridecare.console"]
    assert re.fullmatch(
        r"me: Strava activity 900077 created: run \d+, running, 10\.0 km, load [\d,]+ ref\. steps", lines[0]
    ), lines
    assert len(lines) == 2 and ("prompt" in lines[1])


def test_the_log_names_the_address_each_request_really_went_to(
    srt: Runtime, fake: FakeStrava, web: TestClient, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    connected(srt, fake)
    add_run(fake, 900101, fake.clock.now() - timedelta(hours=1))
    post(web, event("create", 900101))
    with caplog.at_level(logging.INFO):
        assert process_and_plan(srt, recorder.ids[0]).status == "done"
    lines = [r.getMessage() for r in caplog.records if "Strava" in r.getMessage() or "strava.com" in r.getMessage()]
    requests_logged = [line for line in lines if line.startswith("Strava GET ")]
    assert requests_logged and all(fake.base_url in line for line in requests_logged)
    assert not [line for line in lines if "www.strava.com" in line]


def test_a_history_import_names_every_activity_it_stores_or_ignores_on_the_console(
    srt: Runtime, fake: FakeStrava, caplog: pytest.LogCaptureFixture
) -> None:
    account_id = connected(srt, fake)
    now = fake.clock.now()
    for i in range(3):
        add_run(fake, 700000 + i, now - timedelta(days=3 + i))
    add_run(fake, 700010, now - timedelta(days=9), sport_type="Ride")
    stored: list[int] = []

    def replan_and_announce(athlete_id: int) -> None:
        # What the backfill task's replan does: plan, and a console line per activity once its load is known.
        replan(srt.db, srt.settings, athlete_id, srt.now(), on_chunk=lambda done: stored.extend(done.first_loads))
        announce_stored(srt.db, srt.settings, list(stored), activities=True)

    with caplog.at_level(logging.INFO, logger="stridecare.console"):
        backfill_account(srt, account_id, max_steps=None, replan=replan_and_announce)
    lines = [r.getMessage() for r in caplog.records if r.name == "stridecare.console"]
    for i in range(3):
        assert any(
            re.match(rf"me: Strava activity {700000 + i} stored: run \d+, running, .* ref\. steps", x) for x in lines
        )
    assert "me: Strava activity 700010 ignored: not a foot sport (Ride)" in " ".join(lines) or any(
        x.startswith("me: Strava activity 700010 ignored:") for x in lines
    )
