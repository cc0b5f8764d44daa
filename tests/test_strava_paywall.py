"""Strava after its paywall, through the fake Strava with the real stravalib client: an app whose owner has no
subscription (403 Application/Status/Inactive) pauses every read, keeps every run and token, tells the operator
once on the console and on every status surface, and asks again at most hourly; a connect past the app's athlete
limit says so; and the 2027 changes (tokens in headers only, the new API host, ``/oauth/revoke``)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_settings
from factories import backfill_planned, process_and_plan
from fake_strava import (
    FERNET_KEY,
    FakeClock,
    FakeStrava,
    add_stridecare_athlete,
    api_host,
    connect_account,
    follow_authorize,
    make_activity,
    running,
)
from sqlalchemy import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from ingest.strava.client import BaseUrlSession, TokenOutsideHeader
from ingest.strava.errors import APP_INACTIVE_MESSAGE, StravaAthleteLimit, StravaConnectError
from ingest.strava.events import sweep
from ingest.strava.oauth import (
    athlete_client,
    authorization_url,
    deauthorize,
    exchange_code,
    fresh_access_token,
    make_state,
)
from ingest.strava.ratelimit import PROBE_INTERVAL, app_status
from ingest.strava.reader import ApiReader
from stridecare.clock import write_clock_file
from stridecare.db.models import Run, StravaAccount, StravaEvent
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.web.app import create_app

STRAVA_ID = 6160
SUB_ID = 1001
METRICS_TOKEN = "metrics-token-for-the-paywall-test"
INACTIVE_LIST = "GET /api/v3/athlete/activities"


@pytest.fixture
def fake() -> Iterator[FakeStrava]:
    with running(clock=FakeClock(datetime.now(UTC).replace(microsecond=0))) as f:
        f.add_athlete(STRAVA_ID)
        yield f


def overrides(tmp_path: Path, fake: FakeStrava, **extra: Any) -> dict[str, Any]:
    clock = tmp_path / "clock.txt"
    write_clock_file(clock, fake.clock.now())
    values: dict[str, Any] = {
        "strava_client_id": str(fake.client_id),
        "strava_client_secret": fake.client_secret,
        "strava_base_url": fake.base_url,
        "strava_subscription_id": SUB_ID,
        "strava_verify_token": "verify-paywall",
        "metrics_token": METRICS_TOKEN,
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
    runtime = Runtime.open(make_settings(tmp_path, **overrides(tmp_path, fake, **extra)))
    yield runtime
    runtime.close()


def advance(rt: Runtime, fake: FakeStrava, seconds: float) -> None:
    fake.clock.advance(seconds)
    assert rt.settings.clock_file is not None
    write_clock_file(rt.settings.clock_file, fake.clock.now())


def connected(rt: Runtime, fake: FakeStrava, name: str = "me") -> int:
    athlete_id = add_stridecare_athlete(rt.db, name)
    return connect_account(rt.db, rt.settings, fake, athlete_id, rt.now()).account_id


def add_run(fake: FakeStrava, aid: int, start: datetime) -> None:
    fake.add_activity(STRAVA_ID, make_activity(aid, start, athlete_id=STRAVA_ID))


def post_event(web: TestClient, aspect: str, object_id: int) -> None:
    body = {
        "object_type": "activity",
        "object_id": object_id,
        "aspect_type": aspect,
        "owner_id": STRAVA_ID,
        "subscription_id": SUB_ID,
        "event_time": int(time.time() * 1000) + object_id,  # distinct events, as Strava's are
        "updates": {},
    }
    assert web.post("/strava/webhook", json=body).status_code == 200


def stored_keys(rt: Runtime) -> list[str]:
    with rt.db.read() as s:
        return sorted(r.source_key for r in s.scalars(select(Run)))


def run_due(rt: Runtime) -> list[str]:
    """What the beat and the workers do: enqueue what is due, then process it."""
    due: list[int] = []
    sweep(rt, enqueue_event=due.append, enqueue_backfill=lambda _id: None)
    return [process_and_plan(rt, i).status for i in due]


def console_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "stridecare.console"]


def cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, *args: str) -> Any:
    env = {
        "STRIDECARE_DATA_HOME": str(settings.data_home),
        "STRIDECARE_DATABASE_URL": settings.effective_database_url,
        "STRIDECARE_ENCRYPTION_KEYS": FERNET_KEY,
        "STRIDECARE_SECRET_KEY": "test-signing-key",
        "STRIDECARE_STRAVA_CLIENT_ID": str(settings.strava_client_id),
        "STRIDECARE_STRAVA_CLIENT_SECRET": "fake-client-secret",
        "STRIDECARE_STRAVA_BASE_URL": settings.strava_base_url,
        "STRIDECARE_CLOCK_FILE": str(settings.clock_file),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import stridecare_app.cli.main  # noqa: F401  (registers every command)
    from stridecare_app.cli.app import app

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        if hasattr(root, "_stridecare"):
            delattr(root, "_stridecare")


# -- the inactive app ----------------------------------------------------------------------------------------


def test_an_inactive_app_pauses_every_read_keeps_every_run_and_asks_again_hourly(
    srt: Runtime, fake: FakeStrava, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stridecare.console")
    account_id = connected(srt, fake)
    add_run(fake, 700001, fake.clock.now() - timedelta(days=3))
    progress = backfill_planned(srt, account_id)
    assert progress is not None and progress.state == "done"
    assert stored_keys(srt) == ["700001"]

    fake.app_inactive = True  # the owner's subscription lapsed
    add_run(fake, 700002, fake.clock.now() - timedelta(minutes=30))
    fake.reset_counts()
    with TestClient(create_app(srt, enqueue=lambda _id: None), base_url="http://127.0.0.1:8080") as web:
        for aid in (700002, *range(800000, 800020)):  # the real run, then twenty more events
            post_event(web, "create", aid)
    with srt.db.read() as s:
        ids = list(s.scalars(select(StravaEvent.id).order_by(StravaEvent.id)))
    outcomes = [process_and_plan(srt, i) for i in ids]
    # One request found out; every other read paused without asking.
    assert fake.count() == 1 and fake.count(INACTIVE_LIST, 403) == 1
    assert APP_INACTIVE_MESSAGE in outcomes[0].detail
    # A history import pauses too, with the same words and no request.
    restarted = backfill_planned(srt, account_id, restart=True)
    assert restarted is not None and restarted.state == "deferred"
    assert restarted.reason == APP_INACTIVE_MESSAGE
    assert restarted.resume_at is not None and restarted.resume_at <= srt.now() + PROBE_INTERVAL
    assert fake.count() == 1
    # Nothing deleted, nobody told to reconnect.
    assert stored_keys(srt) == ["700001"]
    with srt.db.read() as s:
        account = s.get(StravaAccount, account_id)
        assert account is not None and account.backfill_state == "deferred"
        details = [e.detail or "" for e in s.scalars(select(StravaEvent))] + [account.backfill_detail or ""]
        assert not any("reconnect" in d for d in details), details
        assert {e.status for e in s.scalars(select(StravaEvent))} <= {"pending", "listing"}
    assert sum(APP_INACTIVE_MESSAGE in line for line in console_lines(caplog)) == 1

    # Within the hour the periodic pass asks nothing; at the hour one request asks again.
    advance(srt, fake, 30 * 60)
    run_due(srt)
    assert fake.count() == 1
    advance(srt, fake, 31 * 60)
    run_due(srt)
    run_due(srt)
    assert fake.count() == 2, fake.counts()
    assert sum(APP_INACTIVE_MESSAGE in line for line in console_lines(caplog)) == 1  # still the one line

    # The owner subscribes: the next hourly probe finds it, the waiting run arrives, the state clears.
    fake.app_inactive = False
    advance(srt, fake, 61 * 60)
    for _ in range(3):
        run_due(srt)
    assert stored_keys(srt) == ["700001", "700002"]
    with srt.db.read() as s:
        assert app_status(s) is None
    assert any("active again" in line for line in console_lines(caplog))


def test_every_status_surface_says_the_app_is_inactive(
    srt: Runtime, fake: FakeStrava, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = connected(srt, fake)
    fake.app_inactive = True
    reader = ApiReader(srt.db, srt.settings, account_id, srt.now())
    with pytest.raises(Exception, match="inactive"):
        reader.get("/athlete/activities", per_page=1)

    status = cli(monkeypatch, srt.settings, "strava", "status")
    assert status.exit_code == 0, status.output
    assert APP_INACTIVE_MESSAGE in status.output
    assert "no athlete needs to reconnect" in status.output
    assert "reconnect Strava with" not in status.output
    as_json = cli(monkeypatch, srt.settings, "strava", "status", "--json")
    assert '"state": "inactive"' in as_json.output or '"state":"inactive"' in as_json.output

    backfill = cli(monkeypatch, srt.settings, "strava", "backfill", "--athlete", "me")
    assert backfill.exit_code == 0, backfill.output
    said = " ".join(backfill.output.split())  # the console wraps long lines
    assert f"Paused: {APP_INACTIVE_MESSAGE}." in said and "no athlete needs to reconnect" in said

    health = cli(monkeypatch, srt.settings, "health")
    assert health.exit_code == 1
    line = next(x for x in health.output.splitlines() if " strava " in f" {x} ")
    assert line.startswith("FAIL") and APP_INACTIVE_MESSAGE in line

    with TestClient(create_app(srt, enqueue=lambda _id: None), base_url="http://127.0.0.1:8080") as web:
        detail = web.get("/healthz/detail", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert detail.status_code == 200
        assert detail.json()["strava_app"]["message"] == APP_INACTIVE_MESSAGE
        assert detail.json()["status"] == "degraded"
        assert web.get("/healthz/detail").status_code == 403  # the parts' state is the operator's
        assert web.get("/healthz").json() == {"status": "ok"}  # liveness stays a liveness answer
        scrape = web.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
        assert "stridecare_strava_app_inactive 1.0" in scrape
        page = admin_get(srt, web, "/")
        assert 'id="strava-app-inactive"' in page and APP_INACTIVE_MESSAGE in page


def admin_get(rt: Runtime, web: TestClient, path: str) -> str:
    """Log in with a one-time admin link as a browser would, then fetch ``path``."""
    from stridecare_app.web.auth import login_url

    link = login_url(rt.settings, rt.now()).removeprefix(rt.settings.effective_public_url)
    form = web.get(link)
    assert form.status_code == 200, form.text
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.text))
    done = web.post("/login", data=fields, follow_redirects=False)
    assert done.status_code in (302, 303), done.text
    page = web.get(path)
    assert page.status_code == 200, page.text
    return str(page.text)


def test_an_active_app_shows_no_paywall_message(srt: Runtime, fake: FakeStrava) -> None:
    account_id = connected(srt, fake)
    ApiReader(srt.db, srt.settings, account_id, srt.now()).get("/athlete/activities", per_page=1)
    with srt.db.read() as s:
        assert app_status(s) is None
    with TestClient(create_app(srt, enqueue=lambda _id: None), base_url="http://127.0.0.1:8080") as web:
        detail = web.get("/healthz/detail", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert detail.json()["status"] == "ok" and detail.json()["strava_app"] is None


BOTH_DATABASES = pytest.mark.parametrize(
    "srt", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def in_threads(count: int, work: Any) -> list[BaseException]:
    """Run ``work`` in ``count`` threads at once; the exceptions they raised."""
    import threading

    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def one() -> None:
        start.wait()
        try:
            work()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


@BOTH_DATABASES
def test_workers_refused_at_once_write_one_console_line(
    srt: Runtime, fake: FakeStrava, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stridecare.console")
    account_id = connected(srt, fake)
    fake.app_inactive = True
    readers = [ApiReader(srt.db, srt.settings, account_id, srt.now()) for _ in range(8)]  # all think it active
    it = iter(readers)
    errors = in_threads(8, lambda: next(it).get("/athlete"))
    assert len(errors) == 8 and all(APP_INACTIVE_MESSAGE in str(e) for e in errors)
    assert sum(APP_INACTIVE_MESSAGE in line for line in console_lines(caplog)) == 1


@BOTH_DATABASES
def test_an_inactive_app_is_probed_once_by_many_workers_at_once(srt: Runtime, fake: FakeStrava) -> None:
    account_id = connected(srt, fake)
    fake.app_inactive = True
    with pytest.raises(Exception, match="inactive"):
        ApiReader(srt.db, srt.settings, account_id, srt.now()).get("/athlete")
    advance(srt, fake, PROBE_INTERVAL.total_seconds() + 1)
    fake.reset_counts()
    now = srt.now()
    errors = in_threads(8, lambda: ApiReader(srt.db, srt.settings, account_id, now).get("/athlete"))
    assert len(errors) == 8  # every one is told "not now"
    assert fake.count() == 1  # one probe for the hour, whoever asked


# -- the athlete limit ---------------------------------------------------------------------------------------


def test_a_connect_past_the_apps_athlete_limit_says_so(
    srt: Runtime, fake: FakeStrava, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.athlete_limit = 1
    connected(srt, fake, "first")
    fake.add_athlete(STRAVA_ID + 1)
    fake.authorize_athlete_id = STRAVA_ID + 1
    second = add_stridecare_athlete(srt.db, "second")
    state = make_state(srt.settings, second, srt.now())
    params = follow_authorize(authorization_url(srt.settings, "http://127.0.0.1:8080/strava/callback", state))
    with pytest.raises(StravaAthleteLimit, match="Limit of connected athletes exceeded") as refused:
        exchange_code(srt.db, srt.settings, code=params["code"], state=params["state"], accepted_scope=params["scope"])
    assert "at most 10" in str(refused.value)
    with srt.db.read() as s:
        assert [a.strava_athlete_id for a in s.scalars(select(StravaAccount))] == [STRAVA_ID]

    # The same words on the athlete's own connect page, at the end of the web flow.
    import stridecare_app.web.strava as web_strava

    with TestClient(create_app(srt, enqueue=lambda _id: None), base_url="http://127.0.0.1:8080") as web:
        path = web_strava.connect_link(srt, second).removeprefix(srt.settings.effective_public_url)
        to_strava = web.post(path, follow_redirects=False)
        assert to_strava.status_code == 303
        page = web.get("/strava/callback", params=follow_authorize(to_strava.headers["location"]))
    assert page.status_code == 400 and "Limit of connected athletes exceeded" in page.text

    # The same words on the command line.
    state = make_state(srt.settings, second, srt.now())
    params = follow_authorize(authorization_url(srt.settings, "http://localhost/exchange_token", state))
    pasted = "http://localhost/exchange_token?" + "&".join(f"{k}={v}" for k, v in params.items())
    out = cli(monkeypatch, srt.settings, "strava", "connect", "--athlete", "second", "--code", pasted)
    assert out.exit_code != 0 and "Limit of connected athletes exceeded" in out.output


def test_a_connect_while_the_app_is_inactive_says_why(srt: Runtime, fake: FakeStrava) -> None:
    athlete = add_stridecare_athlete(srt.db, "me")
    fake.app_inactive = fake.app_inactive_tokens = True  # the token endpoint may refuse it too
    state = make_state(srt.settings, athlete, srt.now())
    params = follow_authorize(authorization_url(srt.settings, "http://127.0.0.1:8080/strava/callback", state))
    with pytest.raises(StravaConnectError, match=re.escape(APP_INACTIVE_MESSAGE)):
        exchange_code(srt.db, srt.settings, code=params["code"], state=params["state"], accepted_scope=params["scope"])
    with srt.db.read() as s:
        assert app_status(s) is not None


# -- Strava's 2027 changes -----------------------------------------------------------------------------------


def test_tokens_travel_in_the_authorization_header_only(srt: Runtime, fake: FakeStrava) -> None:
    account_id = connected(srt, fake)
    # The fake refuses a token anywhere else (as Strava will from 2027), and every read here still works.
    add_run(fake, 700010, fake.clock.now() - timedelta(hours=1))
    progress = backfill_planned(srt, account_id)
    assert progress is not None and progress.state == "done" and stored_keys(srt) == ["700010"]
    deauthorize(srt.db, srt.settings, account_id)
    assert fake.count("POST /oauth/deauthorize", 200) == 1
    assert fake.count(status=401) == 0
    # And our session refuses to put one anywhere but the header.
    session = BaseUrlSession(fake.base_url)
    for kwargs in ({"params": {"access_token": "x"}}, {"data": {"access_token": "x"}}):
        with pytest.raises(TokenOutsideHeader):
            session.request("POST", "https://www.strava.com/oauth/deauthorize", **kwargs)
    with pytest.raises(TokenOutsideHeader):
        session.request("GET", "https://www.strava.com/api/v3/athlete?access_token=x")
    # The fake is as strict as promised.
    assert httpx.post(f"{fake.base_url}/oauth/deauthorize", data={"access_token": "x"}).status_code == 401


def test_the_api_host_is_a_setting_apart_from_the_oauth_host(tmp_path: Path, fake: FakeStrava) -> None:
    with api_host(fake) as api:
        settings = make_settings(tmp_path, **overrides(tmp_path, fake, strava_api_url=api))
        rt = Runtime.open(settings)
        try:
            account_id = connected(rt, fake)  # OAuth on the old host
            assert fake.requests[-1].path == "/oauth/token"
            add_run(fake, 700020, fake.clock.now() - timedelta(hours=1))
            fake.reset_counts()
            progress = backfill_planned(rt, account_id)  # the API on the new one, without /api/v3
            assert progress is not None and progress.state == "done" and progress.requests >= 1
            assert stored_keys(rt) == ["700020"]
            assert fake.count(INACTIVE_LIST) == 1
            session = athlete_client(rt.db, rt.settings, account_id, now=rt.now()).protocol.rsession
            assert isinstance(session, BaseUrlSession)
            assert session.rebase("https://www.strava.com/api/v3/athlete") == api + "/athlete"
            assert session.rebase("https://www.strava.com/oauth/token") == fake.base_url + "/oauth/token"
        finally:
            rt.close()


def test_deauthorize_uses_the_revoke_endpoint_when_configured(tmp_path: Path, fake: FakeStrava) -> None:
    settings = make_settings(tmp_path, **overrides(tmp_path, fake, strava_use_revoke=True))
    rt = Runtime.open(settings)
    try:
        account_id = connected(rt, fake)
        fake.reset_counts()
        deauthorize(rt.db, rt.settings, account_id)
        assert fake.counts() == {"POST /oauth/revoke": 1}  # no token refresh, no deauthorize
        assert fake.revoked == ["refresh_token"]
        assert STRAVA_ID in fake.deauthorized
        with pytest.raises(Exception, match="reconnect"):
            fresh_access_token(rt.db, rt.settings, account_id, now=fake.clock.advance(7 * 3600))
    finally:
        rt.close()
    # Wrong client credentials are refused by the fake, as Strava does.
    assert httpx.post(f"{fake.base_url}/oauth/revoke", data={"token": "x"}, auth=("1", "nope")).status_code == 401
