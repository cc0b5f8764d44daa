"""Shared fixtures: settings in a temporary data home, real SQLite and PostgreSQL databases, Redis."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection

from stridecare.db.engine import Database
from stridecare.runtime import Runtime
from stridecare.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


def distinct_fit_files(corpus: Path = CORPUS / "fit") -> list[Path]:
    """One path per distinct FIT file content below ``corpus`` (the corpus keeps byte-identical copies); none
    when the corpus is absent (the tests that use it skip with the reason)."""
    if not corpus.is_dir():
        return []
    seen: dict[str, Path] = {}
    for path in sorted(corpus.rglob("*")):
        if path.is_file() and path.suffix.lower() == ".fit":
            seen.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return list(seen.values())


PG_ADMIN_URL = os.environ.get("STRIDECARE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("STRIDECARE_TEST_REDIS", "redis://127.0.0.1:6379")

# No test may read the developer's own configuration: neither their variables nor the settings file in their
# data home (a test that builds settings without a data home gets an empty one of its own).
for _key in [k for k in os.environ if k.startswith("STRIDECARE_") and not k.startswith("STRIDECARE_TEST_")]:
    del os.environ[_key]
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="stridecare-tests-xdg-")


# -- the calendar an end-to-end test runs on ----------------------------------------------------------------------
#
# `pytest --clock NAME` runs the end-to-end tests with the project's clock (STRIDECARE_CLOCK_FILE) frozen at one of
# these instants, and their athletes created in its time zone: the moments the calendar rules turn on. `.ci/run`
# runs the end-to-end modules once under each.
CLOCKS: dict[str, tuple[datetime, str]] = {
    # Sunday 18:30 UTC: half an hour after every athlete's default weekly balance prompt fell due.
    "sunday-evening": (datetime(2026, 12, 6, 18, 30, tzinfo=UTC), "UTC"),
    # Europe/Berlin's fall-back night: 02:30 local for the second time (01:30 UTC, CET), an hour after 02:30 CEST.
    "dst-night": (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "Europe/Berlin"),
}
# With the system clock, a test this close to the end of the week runs on a clock frozen this much earlier, so
# that no weekly schedule set to the week's last minute falls due while its processes run.
_WEEK_END_MARGIN = timedelta(minutes=20)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--clock NAME`` (one of :data:`CLOCKS`) or ``--clock ISO-TIMESTAMP[@ZONE]``, repeatable."""
    parser.addoption(
        "--clock",
        action="append",
        default=[],
        metavar="NAME|ISO[@ZONE]",
        help=(
            "Run end-to-end tests on the project's clock frozen at this instant: "
            f"system (the machine's clock), {', '.join(CLOCKS)}, or an ISO 8601 timestamp with offset, "
            "optionally @ an IANA zone for new athletes. Repeated: each such test runs once per clock."
        ),
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``e2e_clock`` runs once per ``--clock`` given (with the system clock when none is)."""
    names: list[str] = metafunc.config.getoption("--clock")
    if "e2e_clock" in metafunc.fixturenames and names:
        metafunc.parametrize("e2e_clock", names, indirect=True)


@dataclass(frozen=True)
class E2EClock:
    """The "now" of an end-to-end test: the system clock, or an instant frozen in a clock file."""

    at: datetime | None
    timezone: str = "UTC"

    def now(self) -> datetime:
        """The test's current time, timezone-aware UTC."""
        return self.at or datetime.now(UTC)

    def overrides(self, folder: Path) -> dict[str, object]:
        """Settings that put a process on this clock (for ``make_settings``): the clock file, written into
        ``folder``, and the time zone new athletes get. Nothing for the system clock in UTC."""
        values: dict[str, object] = {}
        if self.timezone != "UTC":
            values["default_timezone"] = self.timezone
        if self.at is not None:
            from stridecare.clock import write_clock_file

            folder.mkdir(parents=True, exist_ok=True)
            write_clock_file(folder / "clock", self.at)
            values["clock_file"] = folder / "clock"
        return values


def parse_clock(value: str | None, system_now: datetime) -> E2EClock:
    """The clock ``--clock`` names; without one (or ``system``), the system clock (frozen a little earlier at the
    week's end)."""
    if value is None or value == "system":
        week_end = _week_end(system_now, "UTC")
        return E2EClock(None) if system_now < week_end - _WEEK_END_MARGIN else E2EClock(week_end - 2 * _WEEK_END_MARGIN)
    if value in CLOCKS:
        at, zone = CLOCKS[value]
        return E2EClock(at, zone)
    text, _, zone = value.partition("@")
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise pytest.UsageError(f"--clock {value!r}: give the timestamp's offset, e.g. 2026-12-06T18:30:00+00:00")
    return E2EClock(at.astimezone(UTC), zone or "UTC")


def _week_end(now: datetime, zone: str) -> datetime:
    """The last minute of ``now``'s ISO week in ``zone`` (Sunday 23:59 local), as UTC."""
    local = now.astimezone(ZoneInfo(zone))
    sunday = local.date() + timedelta(days=6 - local.weekday())
    return datetime.combine(sunday, time(23, 59), tzinfo=ZoneInfo(zone)).astimezone(UTC)


@pytest.fixture
def e2e_clock(request: pytest.FixtureRequest) -> E2EClock:
    """The clock this end-to-end test runs on (one ``--clock``; the system clock by default)."""
    return parse_clock(getattr(request, "param", None), datetime.now(UTC))


def set_weekly_schedule(settings: Settings, athlete: str, weekday: int = 6, at: str = "23:59") -> None:
    """Create ``athlete`` (as its inbox would) with the weekly balance and digest on ``weekday`` at ``at`` local.

    For tests that expect an exact set of prompts: the default, the week's last minute, falls due in no test on
    an :class:`E2EClock` (a frozen instant is never in it, and the system clock is frozen before it)."""
    from stridecare.db.athletes import ensure_athlete

    rt = Runtime.open(settings)
    try:
        with rt.db.transaction() as session:
            row = ensure_athlete(session, athlete, settings)
            row.balance_weekday, row.balance_time = weekday, at
            row.digest_weekday, row.digest_time = weekday, at
    finally:
        rt.close()


def _start_order(item: pytest.Item) -> int:
    slow = item.get_closest_marker("slow")
    if slow is None:
        return 2
    return 0 if slow.kwargs.get("longest") else 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the end-to-end tests first, the longest of them (``slow(longest=True)``: 15 s to a minute each)
    before the rest: each waits on real processes, and one of them left for the end keeps a parallel worker
    busy alone while the others sit idle."""
    items.sort(key=_start_order)


def xdist_index() -> int:
    """0 for a plain run or the first parallel worker (gw0), 1 for gw1, …"""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0)


@pytest.fixture(scope="session", autouse=True)
def fitgen_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One folder per test run where tests/fitgen.py keeps the files it wrote, by their arguments.

    Parallel workers share it (their base folders have one parent); entries are written aside and renamed.
    """
    from fitgen import CACHE_ENV

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "fitgen-cache"
    folder.mkdir(exist_ok=True)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    os.environ.pop(CACHE_ENV, None)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip when PostgreSQL is not installed here (the test command starts it when it is)."""
    if not _port_open("127.0.0.1", 5432):
        if shutil.which("pg_ctlcluster") is None and shutil.which("postgres") is None:
            pytest.skip("PostgreSQL is not installed on this machine")
        pytest.fail("PostgreSQL is installed but not running on 127.0.0.1:5432 (run scripts/services.sh)")


def require_redis() -> None:
    """Skip when Redis is not installed here (the test command starts it when it is)."""
    if not _port_open("127.0.0.1", 6379):
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed on this machine")
        pytest.fail("Redis is installed but not running on 127.0.0.1:6379 (run scripts/services.sh)")


_sqlite_template: Path | None = None


def migrated_sqlite_template() -> Path:
    """An embedded database at the newest schema, made once per test process by the real migrations.

    Running every migration costs about 0.17 s of CPU per fresh database; most tests need a database, not the
    migrations, so :func:`make_settings` starts their data home with a copy of this file. The migrations
    themselves are tested from an empty file in ``test_migrations.py`` (and by ``fresh=True``).
    """
    global _sqlite_template
    if _sqlite_template is None:
        import sqlite3

        home = Path(tempfile.mkdtemp(prefix="stridecare-tests-schema-"))
        runtime = Runtime.open(Settings(data_home=home, secret_key="test-signing-key"))  # type: ignore[call-arg]
        runtime.close()
        # One self-contained file: a backup carries whatever is still in the write-ahead log.
        template = home / "template.db"
        with sqlite3.connect(home / "stridecare.db") as src, sqlite3.connect(template) as dst:
            src.backup(dst)
        _sqlite_template = template
    return _sqlite_template


def make_settings(tmp_path: Path, *, fresh: bool = False, **overrides: object) -> Settings:
    """Settings confined to ``tmp_path`` with fast timings for tests.

    On the embedded database the data home starts with a migrated copy of :func:`migrated_sqlite_template`,
    unless ``fresh`` (or the database file already exists); ``Runtime.open`` then finds it at head.
    """
    values: dict[str, object] = {
        "data_home": tmp_path / "home",
        "inboxes": [str(tmp_path / "inbox")],
        "settle_seconds": 0.3,
        "rescan_interval_s": 1.0,
        "relay_interval_s": 0.5,
        "encryption_keys": ["6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="],
        "secret_key": "test-signing-key",
    }
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    if not fresh and settings.database_url is None:
        seed_data_home(settings.data_home)
    return settings


def seed_data_home(home: Path) -> None:
    """Start the data home ``home`` with a migrated copy of :func:`migrated_sqlite_template`, unless it already
    holds a database."""
    database = home / "stridecare.db"
    if not database.exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_sqlite_template(), database)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment of a ``stridecare`` command run in this process: a data home under ``tmp_path``, its
    database a migrated copy of :func:`migrated_sqlite_template` (the first command finds it at head)."""
    seed_data_home(tmp_path / "home")
    monkeypatch.setenv("STRIDECARE_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STRIDECARE_ENCRYPTION_KEYS", "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c=")
    return tmp_path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for the embedded default in a temporary data home."""
    return make_settings(tmp_path)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    """A runtime on a fresh SQLite database, migrated."""
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


def _pg_admin() -> str:
    return PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """One PostgreSQL database per test run (and parallel worker), migrated once: every test copies it."""
    require_postgres()
    import psycopg

    from stridecare.db.migrate import upgrade

    name = f"sc_tmpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_pg_admin(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    upgrade(db.engine)
    db.dispose()  # a template must have no open connection when it is copied
    try:
        yield name
    finally:
        with psycopg.connect(_pg_admin(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the newest schema (a copy of the migrated template), dropped afterwards."""
    import psycopg

    name = f"sc_test_{uuid.uuid4().hex[:10]}"
    admin = _pg_admin()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def any_rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """The same test on the embedded SQLite database and on PostgreSQL."""
    if request.param == "sqlite":
        s = make_settings(tmp_path)
        runtime = Runtime.open(s)
        yield runtime
        runtime.close()
        return
    url = request.getfixturevalue("pg_url")
    s = make_settings(tmp_path, database_url=url)
    runtime = Runtime.open(s)
    yield runtime
    runtime.close()


# -- one migrated database per session, a rolled-back transaction per test -------------------------------------
#
# For tests that reach the database only through this process's Database: every unit of work runs in a savepoint
# of one outer transaction that the test's end rolls back. Anything that opens its own connection (a subprocess,
# a Celery worker, a command that opens its own runtime, a second engine) sees none of the test's rows (and on
# SQLite waits for the write lock the test holds), and what commits or locks is tested on a database of its own
# (rt, any_rt, pg_url).


@pytest.fixture(scope="session")
def sqlite_session_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    """One SQLite file per test run (and parallel worker), migrated once, and the one connection tests share."""
    from stridecare.db.migrate import upgrade

    db = Database(f"sqlite:///{tmp_path_factory.mktemp('session-db') / 'stridecare.db'}")
    upgrade(db.engine)
    with db.engine.connect() as connection:
        yield connection
    db.dispose()


@pytest.fixture(scope="session")
def pg_session_connection(pg_template: str) -> Iterator[Connection]:
    """One PostgreSQL database per test run (and parallel worker), copied from the migrated template once, and
    the one connection tests share."""
    import psycopg

    name = f"sc_tx_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_pg_admin(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    db = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    try:
        with db.engine.connect() as connection:
            yield connection
    finally:
        db.dispose()
        with psycopg.connect(_pg_admin(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def rolled_back(connection: Connection) -> Iterator[Database]:
    """A Database on ``connection`` inside a transaction that is rolled back when the block ends."""
    outer = connection.begin()
    try:
        yield Database.bound_to(connection)
    finally:
        if connection.dialect.name == "sqlite":
            # A read left open by a failed test would otherwise leave the shared connection read-only.
            connection.exec_driver_sql("PRAGMA query_only=OFF")
        outer.rollback()


def runtime_on(db: Database, tmp_path: Path, **overrides: object) -> Runtime:
    """A runtime around ``db`` with settings confined to ``tmp_path`` (``overrides`` as for make_settings)."""
    return Runtime(make_settings(tmp_path, database_url=db.url, **overrides), db)


@pytest.fixture
def tx_rt(sqlite_session_connection: Connection, tmp_path: Path) -> Iterator[Runtime]:
    """Like ``rt``, on the session's SQLite database, everything the test wrote rolled back at its end."""
    with rolled_back(sqlite_session_connection) as db:
        yield runtime_on(db, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def any_tx_rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """Like ``any_rt``, on the session's databases, everything the test wrote rolled back at its end."""
    backend = "pg" if request.param == "postgres" else "sqlite"
    connection: Connection = request.getfixturevalue(f"{backend}_session_connection")
    with rolled_back(connection) as db:
        yield runtime_on(db, tmp_path)


@pytest.fixture
def redis_db() -> Iterator[str]:
    """A Redis URL on a database number of its own, flushed before and after."""
    require_redis()
    import redis

    db = 1 + xdist_index()  # each parallel worker on a database of its own (10 and 13 are used elsewhere)
    client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
    client.flushdb()
    yield f"{REDIS_URL}/{db}"
    client.flushdb()
    client.close()
