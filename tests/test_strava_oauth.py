"""Connecting Strava through the fake server: authorize URL, state and scope checks, tokens encrypted at rest,
refresh under a row lock (exactly one refresh for ten concurrent callers, on SQLite and PostgreSQL), secrets
kept out of logs, and stravalib's own requests-based client talking to the fake."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import sqlalchemy as sa
from fake_strava import (
    REDIRECT_URI,
    FakeStrava,
    add_stridecare_athlete,
    connect_account,
    follow_authorize,
    running,
    sqlite_db,
    strava_settings,
)
from stravalib import exc as strava_exc

from ingest.strava.client import BaseUrlSession, app_client, rebase_url
from ingest.strava.oauth import (
    StravaAuthError,
    StravaConnectError,
    StravaScopeError,
    StravaStateError,
    athlete_client,
    authorization_url,
    deauthorize,
    exchange_code,
    fresh_access_token,
    make_state,
)
from stridecare.crypto import Vault
from stridecare.db.engine import Database
from stridecare.db.models import Base, StravaAccount
from stridecare.settings import Settings

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def fake() -> Iterator[FakeStrava]:
    with running(token_delay_s=0.0) as f:
        f.add_athlete(777)
        yield f


@pytest.fixture
def settings(tmp_path: Path, fake: FakeStrava) -> Settings:
    return strava_settings(tmp_path / "home", fake)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = sqlite_db(tmp_path / "strava.db")
    yield database
    database.dispose()


def account_row(db: Database, account_id: int) -> StravaAccount:
    with db.read() as s:
        account = s.get(StravaAccount, account_id)
        assert account is not None
        return account


# -- authorize and connect --


def test_authorize_url_points_at_configured_base_and_asks_for_activity_scopes(
    fake: FakeStrava, settings: Settings
) -> None:
    url = authorization_url(settings, REDIRECT_URI, "s1")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == fake.base_url
    assert parts.path == "/oauth/authorize"
    query = dict(parse_qsl(parts.query))
    assert query["scope"] == "read,activity:read,activity:read_all"
    assert query["client_id"] == str(fake.client_id)
    assert (query["state"], query["response_type"], query["redirect_uri"]) == ("s1", "code", REDIRECT_URI)
    callback = follow_authorize(url)
    assert callback["state"] == "s1"
    assert callback["scope"] == "read,activity:read,activity:read_all"
    assert callback["code"]


def test_connect_stores_tokens_encrypted(fake: FakeStrava, settings: Settings, db: Database) -> None:
    athlete_id = add_stridecare_athlete(db)
    connected = connect_account(db, settings, fake, athlete_id)
    assert connected.created
    assert connected.strava_athlete_id == 777
    assert connected.athlete_id == athlete_id
    grant = fake.grants[-1]
    with db.engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT * FROM strava_accounts")).mappings().one()
    dump = json.dumps({k: str(v) for k, v in raw.items()})
    assert grant.access_token not in dump
    assert grant.refresh_token not in dump
    vault = Vault.from_settings(settings)
    assert vault.decrypt(raw["access_token_enc"]) == grant.access_token
    assert vault.decrypt(raw["refresh_token_enc"]) == grant.refresh_token
    account = account_row(db, connected.account_id)
    assert account.expires_at == fake.clock.now().replace(microsecond=0) + timedelta(hours=6)
    assert set(account.scope.split(",")) == {"read", "activity:read", "activity:read_all"}
    assert account.backfill_state == "pending"
    # stravalib's requests-based client made the exchange.
    token_calls = [r for r in fake.requests if r.endpoint == "POST /oauth/token"]
    assert len(token_calls) == 1
    assert token_calls[0].user_agent.startswith("python-requests/")


def test_reconnect_updates_the_same_account(fake: FakeStrava, settings: Settings, db: Database) -> None:
    athlete_id = add_stridecare_athlete(db)
    first = connect_account(db, settings, fake, athlete_id)
    second = connect_account(db, settings, fake, athlete_id)
    assert second.account_id == first.account_id
    assert not second.created
    with db.read() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(StravaAccount)) == 1
    assert Vault.from_settings(settings).decrypt(account_row(db, first.account_id).refresh_token_enc) == (
        fake.last_refresh_token
    )


def test_same_strava_account_cannot_join_another_athlete(fake: FakeStrava, settings: Settings, db: Database) -> None:
    connect_account(db, settings, fake, add_stridecare_athlete(db, "a"))
    with pytest.raises(StravaConnectError, match="another stridecare athlete"):
        connect_account(db, settings, fake, add_stridecare_athlete(db, "b"))


def test_forged_or_expired_state_is_refused_before_the_code_is_spent(
    fake: FakeStrava, settings: Settings, db: Database
) -> None:
    athlete_id = add_stridecare_athlete(db)
    now = fake.clock.now()
    state = make_state(settings, athlete_id, now)
    callback = follow_authorize(authorization_url(settings, REDIRECT_URI, state))
    forged = f"{athlete_id + 1}." + state.split(".", 1)[1]
    for bad, when in [(forged, now), ("nonsense", now), (state, now + timedelta(minutes=16))]:
        with pytest.raises(StravaStateError):
            exchange_code(db, settings, code=callback["code"], state=bad, accepted_scope=callback["scope"], now=when)
    assert fake.count("POST /oauth/token") == 0
    exchange_code(db, settings, code=callback["code"], state=state, accepted_scope=callback["scope"], now=now)


@pytest.mark.parametrize("accepted", ["read", "", "read,profile:read_all"])
def test_scope_without_activity_access_is_a_clear_error(
    fake: FakeStrava, settings: Settings, db: Database, accepted: str
) -> None:
    fake.accepted_scope = accepted
    athlete_id = add_stridecare_athlete(db)
    with pytest.raises(StravaScopeError, match="activities"):
        connect_account(db, settings, fake, athlete_id)
    assert fake.count("POST /oauth/token") == 0
    with db.read() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(StravaAccount)) == 0


@pytest.mark.parametrize("accepted", ["read,activity:read", "activity:read_all"])
def test_either_activity_scope_is_enough(fake: FakeStrava, settings: Settings, db: Database, accepted: str) -> None:
    fake.accepted_scope = accepted
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    assert "activity:read" in connected.scope


def test_private_activities_need_read_all(fake: FakeStrava, settings: Settings, db: Database) -> None:
    from fake_strava import make_activity

    now = fake.clock.now()
    fake.add_activity(777, make_activity(1, now - timedelta(days=3)))
    fake.add_activity(777, make_activity(2, now - timedelta(days=2), private=True))
    fake.accepted_scope = "read,activity:read"
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    client = athlete_client(db, settings, connected.account_id, now=now)
    assert [a["id"] for a in client.protocol.get("/athlete/activities")] == [1]


# -- refresh --


def test_no_refresh_while_token_is_fresh(fake: FakeStrava, settings: Settings, db: Database) -> None:
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    token = fresh_access_token(db, settings, connected.account_id, now=fake.clock.advance(5 * 3600))
    assert token == fake.grants[-1].access_token
    assert fake.refresh_count == 0


def test_refresh_a_few_minutes_before_expiry(fake: FakeStrava, settings: Settings, db: Database) -> None:
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    old = fake.grants[-1]
    # 4 minutes before expiry, inside the 5-minute margin: the old token is still valid but is replaced.
    now = fake.clock.advance(6 * 3600 - 240)
    token = fresh_access_token(db, settings, connected.account_id, now=now)
    assert fake.refresh_count == 1
    assert token != old.access_token
    account = account_row(db, connected.account_id)
    assert Vault.from_settings(settings).decrypt(account.refresh_token_enc) == fake.last_refresh_token
    assert account.expires_at > now + timedelta(hours=5)


def test_refresh_token_is_single_use_in_the_fake(fake: FakeStrava, settings: Settings, db: Database) -> None:
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    old_refresh = fake.last_refresh_token
    assert old_refresh is not None
    fake.clock.advance(6 * 3600 + 1)
    fresh_access_token(db, settings, connected.account_id, now=fake.clock.now())
    client = app_client(settings)
    with pytest.raises(strava_exc.Fault) as info:
        client.refresh_access_token(fake.client_id, fake.client_secret, old_refresh)
    assert info.value.response is not None
    assert info.value.response.status_code == 400


def run_parallel_refresh(fake: FakeStrava, settings: Settings, db: Database, callers: int = 10) -> None:
    fake.token_delay_s = 0.2  # widen the window in which an unlocked refresh would race
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    now = fake.clock.advance(6 * 3600 + 60)  # expired
    barrier = threading.Barrier(callers)
    results: list[str] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            barrier.wait()
            results.append(fresh_access_token(db, settings, connected.account_id, now=now))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == callers
    assert fake.refresh_count == 1
    assert len(set(results)) == 1
    account = account_row(db, connected.account_id)
    assert Vault.from_settings(settings).decrypt(account.refresh_token_enc) == fake.last_refresh_token
    # The token works against the API, and a later refresh (with the stored refresh token) succeeds.
    client = athlete_client(db, settings, connected.account_id, now=now)
    assert client.protocol.get("/athlete")["id"] == 777
    fresh_access_token(db, settings, connected.account_id, now=fake.clock.advance(7 * 3600))
    assert fake.refresh_count == 2


def test_ten_parallel_refreshes_sqlite(fake: FakeStrava, settings: Settings, db: Database) -> None:
    run_parallel_refresh(fake, settings, db)


@pytest.fixture
def pg_db() -> Iterator[Database]:
    schema = f"sc_strava_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable: {type(exc.orig).__name__}")
    database = Database(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        Base.metadata.create_all(database.engine)
        yield database
    finally:
        database.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.mark.postgres
def test_ten_parallel_refreshes_postgres(fake: FakeStrava, settings: Settings, pg_db: Database) -> None:
    with pg_db.engine.connect() as conn:
        assert str(conn.execute(sa.text("SHOW search_path")).scalar()).startswith("sc_strava_")
    run_parallel_refresh(fake, settings, pg_db)


def test_rejected_token_forces_one_refresh(fake: FakeStrava, settings: Settings, db: Database) -> None:
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    now = fake.clock.now()
    first = fresh_access_token(db, settings, connected.account_id, now=now)
    second = fresh_access_token(db, settings, connected.account_id, now=now, rejected_token=first)
    assert second != first
    assert fake.refresh_count == 1
    # A caller still holding the first (already replaced) token does not refresh again.
    third = fresh_access_token(db, settings, connected.account_id, now=now, rejected_token=first)
    assert third == second
    assert fake.refresh_count == 1


def test_revoked_access_is_reported_without_secrets(fake: FakeStrava, settings: Settings, db: Database) -> None:
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    refresh = fake.last_refresh_token
    assert refresh is not None
    deauthorize(db, settings, connected.account_id, now=fake.clock.now())
    assert fake.count("POST /oauth/deauthorize") == 1
    with pytest.raises(StravaAuthError) as info:
        fresh_access_token(db, settings, connected.account_id, now=fake.clock.advance(7 * 3600))
    text = str(info.value) + repr(info.value)
    assert refresh not in text
    assert fake.client_secret not in text
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_secrets_never_logged_even_at_debug(
    fake: FakeStrava, settings: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    athlete_id = add_stridecare_athlete(db)
    state = make_state(settings, athlete_id, fake.clock.now())
    # The browser's visit (simulated with httpx, which logs the redirect) is not ours to check.
    callback = follow_authorize(authorization_url(settings, REDIRECT_URI, state))
    caplog.set_level(logging.DEBUG)
    connected = exchange_code(
        db,
        settings,
        code=callback["code"],
        state=state,
        accepted_scope=callback["scope"],
        now=fake.clock.now(),
    )
    now = fake.clock.advance(6 * 3600 + 1)
    client = athlete_client(db, settings, connected.account_id, now=now)
    client.protocol.get("/athlete")
    assert fake.refresh_count == 1
    assert caplog.records, "expected DEBUG records from requests/urllib3/stravalib"
    secrets_seen = [fake.client_secret, callback["code"]]
    for grant in fake.grants:
        secrets_seen += [grant.access_token]
    secrets_seen += fake.issued_refresh_tokens
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets_seen:
        assert secret not in text


# -- the fake itself, through stravalib's client --


def test_base_url_rewrite() -> None:
    assert rebase_url("http://127.0.0.1:9", "https://www.strava.com/api/v3/athlete") == (
        "http://127.0.0.1:9/api/v3/athlete"
    )
    assert rebase_url("https://www.strava.com", "https://www.strava.com/oauth/token") == (
        "https://www.strava.com/oauth/token"
    )
    assert rebase_url("http://x/prefix/", "https://www.strava.com/oauth/token") == "http://x/prefix/oauth/token"
    assert rebase_url("http://x", "https://www.strava.com.evil/") == "https://www.strava.com.evil/"
    assert BaseUrlSession("http://x").rebase("https://other.example/a") == "https://other.example/a"


def test_api_requires_valid_unexpired_bearer(fake: FakeStrava, settings: Settings, db: Database) -> None:
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    client = athlete_client(db, settings, connected.account_id, now=fake.clock.now())
    assert client.get_athlete().id == 777
    fake.clock.advance(6 * 3600 + 1)
    with pytest.raises(strava_exc.AccessUnauthorized):
        client.protocol.get("/athlete")
    client.access_token = "not-a-token"
    with pytest.raises(strava_exc.AccessUnauthorized):
        client.protocol.get("/athlete")
    api = [r for r in fake.requests if r.endpoint == "GET /api/v3/athlete"]
    assert [r.status for r in api] == [200, 401, 401]
    assert all(r.user_agent.startswith("python-requests/") for r in api)


class _Callback(BaseHTTPRequestHandler):
    verify_token = "verify-me"
    events: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        q = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        if q.get("hub.mode") == "subscribe" and q.get("hub.verify_token") == self.verify_token:
            self._reply(200, {"hub.challenge": q["hub.challenge"]})
        else:
            self._reply(403, {"error": "bad verify token"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.events.append(json.loads(self.rfile.read(length)))
        self._reply(200, {})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def callback_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/strava/webhook"
    server.shutdown()
    server.server_close()


def test_push_subscription_validation_through_stravalib(
    fake: FakeStrava, settings: Settings, callback_url: str
) -> None:
    client = app_client(settings)
    with pytest.raises(strava_exc.Fault) as info:
        client.create_subscription(fake.client_id, fake.client_secret, callback_url, verify_token="wrong")
    assert info.value.response is not None
    assert info.value.response.status_code == 400
    assert not fake.subscriptions
    sub = client.create_subscription(fake.client_id, fake.client_secret, callback_url, verify_token="verify-me")
    assert sub.id in fake.subscriptions
    assert [s.id for s in client.list_subscriptions(fake.client_id, fake.client_secret)] == [sub.id]
    with pytest.raises(strava_exc.Fault):  # one subscription per application
        client.create_subscription(fake.client_id, fake.client_secret, callback_url, verify_token="verify-me")
    _Callback.events.clear()
    status = fake.push_event({"object_type": "activity", "object_id": 5, "aspect_type": "create", "owner_id": 777})
    assert status == 200
    assert _Callback.events[0]["subscription_id"] == sub.id
    client.delete_subscription(sub.id, fake.client_id, fake.client_secret)
    assert not fake.subscriptions
    # Every API response carried Strava's rate-limit headers; the subscription calls count against them.
    assert fake.count("POST /api/v3/push_subscriptions") == 3


def test_rate_limit_headers_and_429_shape(fake: FakeStrava, settings: Settings, db: Database) -> None:
    from fake_strava import Limits

    fake.limits = Limits(overall=(200, 2000), read=(2, 1000))
    connected = connect_account(db, settings, fake, add_stridecare_athlete(db))
    seen: list[Any] = []
    client = athlete_client(db, settings, connected.account_id, now=fake.clock.now(), on_response=seen.append)
    client.protocol.get("/athlete")
    client.protocol.get("/athlete")
    with pytest.raises(strava_exc.Fault) as info:
        client.protocol.get("/athlete")
    assert info.value.response is not None
    assert info.value.response.status_code == 429
    assert info.value.response.json()["message"] == "Rate Limit Exceeded"
    assert [r.headers["X-ReadRateLimit-Usage"] for r in seen] == ["1,1", "2,2", "3,3"]
    assert seen[0].headers["X-RateLimit-Limit"] == "200,2000"
    assert seen[0].headers["X-ReadRateLimit-Limit"] == "2,1000"
    fake.clock.set(fake.clock.now().replace(minute=0, second=0) + timedelta(minutes=15))
    client.protocol.get("/athlete")
    assert seen[-1].headers["X-ReadRateLimit-Usage"] == "1,4"
