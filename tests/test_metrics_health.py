"""``GET /metrics`` and ``stridecare health`` against real databases and brokers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import redis
from channel_settings import channel_settings
from conftest import make_settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.testclient import TestClient
from typer.testing import CliRunner

from stridecare.clock import write_clock_file
from stridecare.db.models import ApiBudget, Athlete, Delivery, ImportedFile, Prompt, Run
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.cli import main
from stridecare_app.web import metrics
from stridecare_app.web.app import create_app

BIN = Path(sys.executable).parent
FERNET_KEY = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


SCRAPE_TOKEN = "scrape-token-7d1e"


def scraping(rt: Runtime) -> Runtime:
    """``rt`` with a metrics token, as a Prometheus scraper is configured (the database is shared)."""
    return Runtime(rt.settings.model_copy(update={"metrics_token": SecretStr(SCRAPE_TOKEN)}), rt.db)


def scrape(app: Starlette) -> Samples:
    """GET /metrics with the scraper's token and parse it as Prometheus does; samples keyed by name and sorted
    labels."""
    client = TestClient(app, base_url="http://127.0.0.1:8080")
    response = client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metrics_app(rt: Runtime) -> Starlette:
    """Only the metrics route, for tests about the numbers rather than the wiring."""
    return Starlette(routes=metrics.routes(scraping(rt)))


def closed_port() -> int:
    """A local port nobody listens on (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _run(athlete_id: int, key: str, start: datetime, source: str = "fit") -> Run:
    return Run(
        athlete_id=athlete_id,
        source=source,
        source_key=key,
        sport="running",
        start_time=start,
        elapsed_s=1800.0,
        timer_s=1800.0,
        distance_m=5000.0,
        steps=5000.0,
        cadence_source="device",
    )


def seed(rt: Runtime) -> None:
    """An athlete with 4 files, 3 runs, 3 prompts and 5 deliveries in known states."""
    start = datetime(2025, 5, 1, 7, 0, tzinfo=UTC)
    with rt.db.transaction() as session:
        ann = Athlete(name="ann", channel_settings=channel_settings(email="ann@example.org"))
        session.add(ann)
        session.flush()
        for i, status in enumerate(["ingested", "ingested", "rejected", "skipped"]):
            session.add(
                ImportedFile(
                    athlete_id=ann.id,
                    content_hash=f"h{i}",
                    path=f"/in/{i}.fit",
                    size=100,
                    status=status,
                    source="watch",
                )
            )
        for i in range(3):
            session.add(_run(ann.id, f"run{i}", start + timedelta(days=i)))
        prompts = [
            Prompt(athlete_id=ann.id, kind="post_run", dedupe_key="r0", local_day=date(2025, 5, 1)),
            Prompt(athlete_id=ann.id, kind="post_run", dedupe_key="r1", local_day=date(2025, 5, 2)),
            Prompt(athlete_id=ann.id, kind="weekly_balance", dedupe_key="W18", local_day=date(2025, 5, 4)),
        ]
        session.add_all(prompts)
        session.flush()
        for prompt, channel, status in [
            (prompts[0], "email", "sent"),
            (prompts[0], "webhook", "failed"),
            (prompts[1], "email", "sent"),
            (prompts[1], "webhook", "pending"),
            (prompts[2], "email", "pending"),
        ]:
            session.add(Delivery(prompt_id=prompt.id, athlete_id=ann.id, channel=channel, status=status))


# -- /metrics -----------------------------------------------------------------------------------------


def test_metrics_report_the_rows(any_rt: Runtime) -> None:
    seed(any_rt)
    samples = scrape(create_app(scraping(any_rt)))  # through the app: metrics is wired in by _page_routes

    assert samples[("stridecare_runs_ingested_total", ())] == 3
    assert samples[("stridecare_files_total", (("status", "ingested"),))] == 2
    assert samples[("stridecare_files_total", (("status", "rejected"),))] == 1
    assert samples[("stridecare_files_total", (("status", "skipped"),))] == 1
    assert samples[("stridecare_prompts_total", (("kind", "post_run"),))] == 2
    assert samples[("stridecare_prompts_total", (("kind", "weekly_balance"),))] == 1

    def delivered(channel: str, status: str) -> float:
        return samples[("stridecare_deliveries_total", (("channel", channel), ("status", status)))]

    assert delivered("email", "sent") == 2
    assert delivered("email", "pending") == 1
    assert delivered("webhook", "failed") == 1
    assert delivered("webhook", "pending") == 1
    # Zero is reported, not left out, so an alert on failures sees the first one arrive.
    assert delivered("email", "failed") == 0
    assert delivered("webhook", "sent") == 0
    assert samples[("stridecare_source_up", (("source", "database"),))] == 1


def test_metrics_are_read_at_scrape_time_not_kept_in_the_process(rt: Runtime) -> None:
    app = metrics_app(rt)
    before = scrape(app)
    assert before[("stridecare_runs_ingested_total", ())] == 0
    assert before[("stridecare_files_total", (("status", "ingested"),))] == 0

    # Another process (a worker) writes: the next scrape sees it, with no counter increment anywhere.
    seed(rt)
    assert scrape(app)[("stridecare_runs_ingested_total", ())] == 3
    # A second web process on the same database reports the same numbers.
    other = Runtime.open(rt.settings)
    try:
        assert scrape(metrics_app(other)) == scrape(app)
    finally:
        other.close()
    # Nothing was registered in the process-wide registry.
    assert not [m.name for m in REGISTRY.collect() if m.name.startswith("stridecare")]


def test_queue_depth_on_redis(tmp_path: Path, redis_db: str) -> None:
    rt = Runtime.open(make_settings(tmp_path, broker_url=redis_db))
    client = redis.Redis.from_url(redis_db)
    try:
        for i in range(3):
            client.lpush("celery", f"message {i}")
        client.lpush("files", "a dropped file")
        samples = scrape(metrics_app(rt))
        assert samples[("stridecare_queue_depth", (("queue", "celery"),))] == 3
        assert samples[("stridecare_queue_depth", (("queue", "files"),))] == 1
        assert samples[("stridecare_queue_depth", (("queue", "events"),))] == 0
        # kombu puts prioritised messages on their own list; they are waiting too.
        client.lpush("celery\x06\x163", "urgent")
        samples = scrape(metrics_app(rt))
        assert samples[("stridecare_queue_depth", (("queue", "celery"),))] == 4
        assert samples[("stridecare_source_up", (("source", "broker"),))] == 1
    finally:
        client.close()
        rt.close()


def test_queue_depth_on_the_embedded_sqlite_broker(rt: Runtime) -> None:
    from workers.app import make_app

    app = metrics_app(rt)
    # No broker file yet: nothing was ever queued, and the scrape must not create the file.
    assert scrape(app)[("stridecare_queue_depth", (("queue", "files"),))] == 0
    assert not (rt.settings.data_home / "broker.db").exists()

    # Queue tasks the way the watcher and beat do: through Celery onto the SQLite transport.
    celery = make_app(rt.settings)
    celery.send_task("stridecare.tick")
    celery.send_task("stridecare.dispatch_due")
    celery.send_task("stridecare.dispatch_due")
    samples = scrape(app)
    # Each kind of work waits in its own queue: the tick in planning, deliveries in delivery.
    assert samples[("stridecare_queue_depth", (("queue", "planning"),))] == 1
    assert samples[("stridecare_queue_depth", (("queue", "delivery"),))] == 2
    assert samples[("stridecare_queue_depth", (("queue", "events"),))] == 0


def test_unreachable_broker_leaves_the_depth_out_but_keeps_the_rest(tmp_path: Path) -> None:
    rt = Runtime.open(make_settings(tmp_path, broker_url=f"redis://127.0.0.1:{closed_port()}/0"))
    try:
        seed(rt)
        samples = scrape(metrics_app(rt))
    finally:
        rt.close()
    assert not [key for key in samples if key[0] == "stridecare_queue_depth"]
    assert samples[("stridecare_source_up", (("source", "broker"),))] == 0
    assert samples[("stridecare_runs_ingested_total", ())] == 3


def test_strava_budget_share_in_the_current_windows(tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    write_clock_file(clock, datetime(2025, 5, 1, 12, 7, tzinfo=UTC))
    rt = Runtime.open(make_settings(tmp_path, clock_file=clock))
    try:
        with rt.db.transaction() as session:
            session.add(
                ApiBudget(
                    name="strava",
                    limits={"overall": [200, 2000], "read": [100, 1000]},
                    usage={"overall": [50, 500], "read": [25, 100]},
                    observed_at=datetime(2025, 5, 1, 12, 1, tzinfo=UTC),
                )
            )
        samples = scrape(metrics_app(rt))
    finally:
        rt.close()

    def used(limit: str, window: str) -> float:
        return samples[("stridecare_strava_budget_used", (("limit", limit), ("window", window)))]

    assert used("overall", "15min") == pytest.approx(0.25)
    assert used("overall", "daily") == pytest.approx(0.25)
    assert used("read", "15min") == pytest.approx(0.25)
    assert used("read", "daily") == pytest.approx(0.1)


def test_strava_usage_from_a_closed_window_no_longer_counts() -> None:
    budget = ApiBudget(
        name="strava",
        limits={"overall": [200, 2000]},
        usage={"overall": [150, 1500]},
        observed_at=datetime(2025, 5, 1, 11, 50, tzinfo=UTC),
    )
    next_quarter = metrics.strava_budget_shares(budget, datetime(2025, 5, 1, 12, 5, tzinfo=UTC))
    assert next_quarter == [("overall", "15min", 0.0), ("overall", "daily", 0.75)]
    next_day = metrics.strava_budget_shares(budget, datetime(2025, 5, 2, 0, 1, tzinfo=UTC))
    assert next_day == [("overall", "15min", 0.0), ("overall", "daily", 0.0)]
    # Garbage in the JSON is left out, never turned into a number.
    broken = ApiBudget(
        name="strava",
        limits={"overall": "200,2000"},
        usage={"overall": [1, 2]},
        observed_at=datetime(2025, 5, 1, 11, 50, tzinfo=UTC),
    )
    assert metrics.strava_budget_shares(broken, datetime(2025, 5, 1, 11, 55, tzinfo=UTC)) == []


# -- stridecare health ------------------------------------------------------------------------------


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """STRIDECARE_* variables describing ``settings`` (conftest cleared the developer's own)."""
    env = {
        "STRIDECARE_DATA_HOME": str(settings.data_home),
        "STRIDECARE_INBOXES": ",".join(settings.inboxes),
        "STRIDECARE_ENCRYPTION_KEYS": FERNET_KEY,
        "STRIDECARE_SECRET_KEY": "a-test-signing-key-long-enough",
    }
    if settings.database_url:
        env["STRIDECARE_DATABASE_URL"] = settings.database_url
    env.update(extra)
    return env


@pytest.fixture
def healthy(rt: Runtime) -> Runtime:
    """A migrated database with its inbox in place."""
    for _, root in rt.settings.inbox_map():
        root.mkdir(parents=True)
    return rt


def health(env: dict[str, str], *args: str) -> tuple[int, dict[str, str]]:
    """Run ``stridecare health``; the exit code and each check's line keyed by check name."""
    result = CliRunner().invoke(main.app, ["health", *args], env=env)
    lines: dict[str, str] = {}
    for raw in result.stdout.splitlines():
        line = " ".join(raw.split())  # the columns are padded; compare words
        status, rest = line.split(maxsplit=1)
        for name in ("database", "broker", "data home", "smtp", "keys", "settings"):
            if rest.startswith(name):
                lines[name] = f"{status} {rest}"
        if rest.startswith("inbox"):
            lines["inbox"] = f"{status} {rest}"
    return result.exit_code, lines


def test_health_passes_on_a_working_setup(healthy: Runtime) -> None:
    code, lines = health(env_for(healthy.settings))
    assert code == 0, lines
    assert set(lines) == {"database", "broker", "data home", "inbox", "smtp", "keys"}
    assert all(line.startswith("ok ") for line in lines.values()), lines
    assert "schema at head" in lines["database"]


def test_health_fails_when_the_database_port_is_closed(healthy: Runtime) -> None:
    port = closed_port()
    url = f"postgresql+psycopg://stridecare:hunter2@127.0.0.1:{port}/stridecare"
    code, lines = health(env_for(healthy.settings, STRIDECARE_DATABASE_URL=url))
    assert code == 1
    assert lines["database"].startswith("FAIL database")
    assert f"127.0.0.1:{port}" in lines["database"]
    assert "hunter2" not in lines["database"]
    # The other checks still run and report.
    assert lines["inbox"].startswith("ok ")


def test_health_fails_when_the_schema_is_behind(healthy: Runtime, tmp_path: Path) -> None:
    import sqlite3

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    code, lines = health(env_for(healthy.settings, STRIDECARE_DATABASE_URL=f"sqlite:///{empty}"))
    assert code == 1
    assert "schema at none" in lines["database"]
    assert "stridecare migrate" in lines["database"]


def test_health_does_not_create_a_missing_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, fresh=True)
    code, lines = health(env_for(settings))
    assert code == 1
    assert "no database file" in lines["database"]
    assert not (settings.data_home / "stridecare.db").exists()


def test_health_checks_the_redis_broker(healthy: Runtime, redis_db: str) -> None:
    code, lines = health(env_for(healthy.settings, STRIDECARE_BROKER_URL=redis_db))
    assert code == 0
    assert "PONG" in lines["broker"]
    dead = f"redis://:secret@127.0.0.1:{closed_port()}/0"
    code, lines = health(env_for(healthy.settings, STRIDECARE_BROKER_URL=dead))
    assert code == 1
    assert lines["broker"].startswith("FAIL broker")
    assert "secret" not in lines["broker"]


def test_health_fails_on_a_missing_inbox(rt: Runtime) -> None:
    code, lines = health(env_for(rt.settings))
    assert code == 1
    assert lines["inbox"].startswith("FAIL inbox me")
    assert "missing" in lines["inbox"]


def test_health_smtp(healthy: Runtime) -> None:
    env = env_for(healthy.settings)
    with healthy.db.transaction() as session:
        session.add(Athlete(name="bo", channel_settings=channel_settings(email="bo@example.org")))
    code, lines = health(env)
    assert code == 1
    assert "1 athlete(s) have an email address" in lines["smtp"]

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code, lines = health({**env, "STRIDECARE_SMTP_HOST": "127.0.0.1", "STRIDECARE_SMTP_PORT": str(port)})
    assert code == 0, lines
    assert lines["smtp"].startswith(f"ok smtp 127.0.0.1:{port}")

    dead = str(closed_port())
    code, lines = health({**env, "STRIDECARE_SMTP_HOST": "127.0.0.1", "STRIDECARE_SMTP_PORT": dead})
    assert code == 1
    assert lines["smtp"].startswith("FAIL smtp")


def test_health_rejects_weak_or_broken_keys(healthy: Runtime) -> None:
    code, lines = health(env_for(healthy.settings, STRIDECARE_SECRET_KEY="short"))
    assert code == 1
    assert "STRIDECARE_SECRET_KEY" in lines["keys"]
    code, lines = health(env_for(healthy.settings, STRIDECARE_ENCRYPTION_KEYS=f"{FERNET_KEY},not-a-key"))
    assert code == 1
    assert "key 2 is not a Fernet key" in lines["keys"]


def test_health_json(healthy: Runtime) -> None:
    import json

    result = CliRunner().invoke(main.app, ["health", "--json"], env=env_for(healthy.settings))
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["healthy"] is True
    assert {c["name"] for c in report["checks"]} >= {"database", "broker", "smtp", "keys"}


def test_health_through_the_console_script(healthy: Runtime, tmp_path: Path) -> None:
    # The installed `stridecare` registers the command (main imports health_cmd).
    env = {"PATH": str(BIN), "HOME": str(tmp_path), **env_for(healthy.settings)}
    ok = subprocess.run([str(BIN / "stridecare"), "health"], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    database" in ok.stdout
    env["STRIDECARE_DATABASE_URL"] = f"postgresql+psycopg://x@127.0.0.1:{closed_port()}/x"
    bad = subprocess.run([str(BIN / "stridecare"), "health"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "FAIL  database" in bad.stdout
    assert os.environ.get("STRIDECARE_DATABASE_URL") is None  # nothing leaked into this process
