"""The distributed deployment: docker-compose.yml, .env.example and the Dockerfile.

Docker is not needed: the compose file is validated against the Compose specification's JSON schema
(tests/data/compose-spec.json), and every command it runs is run here with ``--help`` from this venv, which
parses the exact arguments without starting anything.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from jsonschema import Draft7Validator  # type: ignore[import-untyped]

from stridecare.settings import SETTINGS_FILE, Settings, known_variables

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
BIN = Path(sys.executable).parent

APP_SERVICES = ("migrate", "web", "worker", "beat", "watcher")
VARIABLE = re.compile(r"\bSTRIDECARE_[A-Z0-9_]+")
# Compose's ${NAME:-default}; the tests read the compose file as Compose would with an empty .env.
INTERPOLATION = re.compile(r"\$\{([A-Za-z0-9_]+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose sees it (PyYAML resolves the anchors and ``<<`` merges the same way)."""
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    """A validator for the Compose specification (the schema declares draft 7)."""
    schema = json.loads(SCHEMA.read_text())
    assert "draft-07" in schema["$schema"]
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _errors(validator: Draft7Validator, document: dict[str, Any]) -> list[str]:
    return sorted(
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in validator.iter_errors(document)
    )


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` with ${...} replaced by its default, as with nothing set in .env."""
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment is written as a mapping"
    return {k: INTERPOLATION.sub(lambda m: m.group(2) or "", str(v)) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(source, target)`` for each volume in short syntax."""
    mounts = []
    for item in service.get("volumes", []):
        assert isinstance(item, str), "volumes use the short syntax"
        source, target = item.split(":")[:2]
        mounts.append((source, target))
    return mounts


# -- the specification ---------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any], validator: Draft7Validator) -> None:
    assert _errors(validator, compose) == []


def test_the_schema_rejects_what_compose_rejects(compose: dict[str, Any], validator: Draft7Validator) -> None:
    # Guard against a schema that accepts anything: typical slips must fail validation.
    unquoted_no = copy.deepcopy(compose)
    unquoted_no["services"]["migrate"]["restart"] = False  # `restart: no` without quotes is YAML false
    assert any("migrate/restart" in e for e in _errors(validator, unquoted_no))

    typo = copy.deepcopy(compose)
    typo["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert _errors(validator, typo)

    unknown = copy.deepcopy(compose)
    unknown["services"]["web"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert _errors(validator, unknown)


# -- commands -----------------------------------------------------------------------------------------


def test_every_app_service_builds_this_image_and_runs_a_known_program(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["build"] == ".", name
        assert service["env_file"] == ".env", name
        command = service["command"]
        # Exec form: the process is PID 1 and gets SIGTERM itself (a shell would swallow it).
        assert isinstance(command, list), name
        assert command[0] in ("stridecare", "celery"), name


def test_stridecare_commands_are_registered_commands(compose: dict[str, Any]) -> None:
    import typer.main

    from stridecare_app.cli import main

    group = typer.main.get_command(main.app)
    # Commands are imported when named: ask the group for each, as `stridecare NAME` does.
    ctx = group.make_context("stridecare", ["--help"], resilient_parsing=True)
    registered = {name for name in group.list_commands(ctx) if group.get_command(ctx, name) is not None}  # type: ignore[attr-defined]
    used = {
        compose["services"][n]["command"][1]
        for n in APP_SERVICES
        if compose["services"][n]["command"][0] == "stridecare"
    }
    assert used == {"migrate", "web", "watch"}
    assert used <= registered
    # The image's `stridecare` is this console script.
    (script,) = entry_points(group="console_scripts", name="stridecare")
    assert script.value == "stridecare_app.cli.main:main"


def test_celery_commands_load_the_celery_app() -> None:
    from celery import Celery

    import workers.app

    assert isinstance(workers.app.app, Celery)
    # The single beat is also guarded in SQL: a second one only stands by.
    assert workers.app.app.conf.beat_scheduler == "workers.beat:LeaderScheduler"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_service_command_parses(compose: dict[str, Any], service: str, tmp_path: Path) -> None:
    # The exact arguments plus --help: click rejects an unknown command, option or Celery app (exit 2)
    # before printing help, and nothing is started or connected to.
    command = compose["services"][service]["command"]
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "STRIDECARE_DATA_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:], "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_a_wrong_option_would_be_caught(tmp_path: Path) -> None:
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "STRIDECARE_DATA_HOME": str(tmp_path / "home")}
    typos = (
        ["stridecare", "web", "--hots", "0.0.0.0"],
        ["celery", "-A", "workers.app", "worker", "--concurency=2"],
    )
    for argv in typos:
        result = subprocess.run(
            [str(BIN / argv[0]), *argv[1:], "--help"], env=env, cwd=tmp_path, capture_output=True, timeout=120
        )
        assert result.returncode == 2, argv


# -- settings -----------------------------------------------------------------------------------------


def test_every_stridecare_variable_in_compose_is_a_setting() -> None:
    names = set(VARIABLE.findall(COMPOSE.read_text()))
    assert "STRIDECARE_DATABASE_URL" in names
    assert names - known_variables() == set()


def test_every_stridecare_variable_in_env_example_is_a_setting() -> None:
    text = ENV_EXAMPLE.read_text()
    names = set(VARIABLE.findall(text))
    assert {"STRIDECARE_SECRET_KEY", "STRIDECARE_ENCRYPTION_KEYS", "STRIDECARE_PUBLIC_URL"} <= names
    assert names - known_variables() == set()
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.fullmatch(r"STRIDECARE_[A-Z0-9_]+=.*", line), line


def test_env_example_values_are_valid_settings(tmp_path: Path) -> None:
    # As shipped, and with every commented example that has a value switched on: each must parse.
    as_shipped = Settings(_env_file=ENV_EXAMPLE)
    assert as_shipped.mail_from == "stridecare <stridecare@localhost>"
    assert as_shipped.log_json is False
    # An empty secret would sign links with an empty key, so the example never sets one to nothing.
    assert as_shipped.secret_key is None
    assert as_shipped.encryption_keys == []

    examples = [m.group(1) for m in re.finditer(r"^#\s*(STRIDECARE_[A-Z0-9_]+=\S.*)$", ENV_EXAMPLE.read_text(), re.M)]
    assert len(examples) >= 5
    enabled = tmp_path / "enabled.env"
    enabled.write_text("\n".join(examples) + "\n")
    settings = Settings(_env_file=enabled)
    assert settings.smtp_security in ("starttls", "ssl", "none")
    assert settings.webhook_allowed_networks


def test_container_environment_makes_valid_settings(compose: dict[str, Any]) -> None:
    env = _environment(compose["services"]["worker"])
    settings = Settings.model_validate({k.removeprefix("STRIDECARE_").lower(): v for k, v in env.items()})
    assert settings.effective_database_url.startswith("postgresql+psycopg://stridecare:")
    assert "@postgres:5432/" in settings.effective_database_url
    assert settings.effective_broker_url == "redis://redis:6379/0"
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == ("mailpit", 1025, "none")
    assert settings.web_host == "0.0.0.0"
    # Every app service shares one environment (the anchor), so they all reach the same database and broker.
    for name in APP_SERVICES:
        assert _environment(compose["services"][name]) == env, name


def test_every_app_service_reads_the_settings_file_on_the_data_volume(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`docker compose exec web stridecare config set …` writes DATA_HOME/stridecare.toml: every app service has
    that data home on the shared volume, reads the file, and its compose environment still wins over it."""
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert _environment(service)["STRIDECARE_DATA_HOME"] == "/data", name
        assert ("data", "/data") in _mounts(service), name
    # A container's settings: its environment, with the data home at a copy of the volume.
    volume = tmp_path / "data"
    volume.mkdir()
    (volume / SETTINGS_FILE).write_text('strava_client_id = "4711"\nsmtp_host = "smtp.example.org"\n')
    for key, value in _environment(compose["services"]["worker"]).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("STRIDECARE_DATA_HOME", str(volume))
    settings = Settings()
    assert settings.strava_client_id == "4711"
    assert settings.smtp_host == "mailpit"  # set by the compose environment, which wins


# -- topology -----------------------------------------------------------------------------------------


def test_exactly_one_beat(compose: dict[str, Any]) -> None:
    beat = compose["services"]["beat"]
    assert beat["deploy"]["replicas"] == 1
    assert "scale" not in beat


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    # A fixed container name or a published host port makes `--scale worker=N` fail for N > 1.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "--concurrency=2" in worker["command"]


def test_watcher_and_worker_mount_the_inbox_the_settings_name(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = _environment(services["watcher"])
    settings = Settings.model_validate({"inboxes": env["STRIDECARE_INBOXES"], "data_home": env["STRIDECARE_DATA_HOME"]})
    inboxes = [path for _, path in settings.inbox_map()]
    assert inboxes == [Path("/data/inbox")]
    for name in ("watcher", "worker"):
        # The watcher enqueues paths under the inbox and a worker opens them: both see it at the same path,
        # bound from the host folder people drop files into.
        mounts = _mounts(services[name])
        binds = {target: source for source, target in mounts if source.startswith(("./", "/"))}
        for inbox in inboxes:
            assert str(inbox) in binds, name
            assert binds[str(inbox)] == "./inbox"


def test_healthchecks_guard_the_services_others_wait_for(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("redis", "postgres", "web"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", name
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    web_test = " ".join(services["web"]["healthcheck"]["test"])
    assert "urllib" in web_test
    assert "127.0.0.1:8080/healthz" in web_test

    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"
            if rule["condition"] == "service_completed_successfully":
                assert services[dependency]["restart"] == "no", f"{dependency} must run once and exit"
    for name in APP_SERVICES:
        if name != "migrate":
            assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_web_healthcheck_path_is_served(tmp_path: Path) -> None:
    from conftest import make_settings
    from starlette.testclient import TestClient

    from stridecare.runtime import Runtime
    from stridecare_app.web.app import create_app

    rt = Runtime.open(make_settings(tmp_path))
    try:
        assert TestClient(create_app(rt), base_url="http://127.0.0.1:8080").get("/healthz").status_code == 200
    finally:
        rt.close()


def test_the_home_page_works_through_the_published_port_with_the_login(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's path: `docker compose up`, open http://localhost:8080, log in with the link from
    `docker compose exec web stridecare admin link`. Requests through the published port arrive from the bridge's
    gateway (not loopback) with the browser's Host, localhost:8080; the container's healthcheck asks 127.0.0.1."""
    import re

    from starlette.testclient import TestClient
    from typer.testing import CliRunner
    from webclient import csrf_of

    from stridecare.db.models import Athlete
    from stridecare.runtime import Runtime
    from stridecare_app.cli.main import app as cli
    from stridecare_app.web.app import create_app

    web = compose["services"]["web"]
    env = _environment(web)
    assert web["command"] == ["stridecare", "web", "--host", "0.0.0.0"]
    published = {p.rsplit(":", 1)[-1]: p.split(":")[-2] for p in web["ports"]}
    assert published == {env["STRIDECARE_WEB_PORT"]: env["STRIDECARE_WEB_PORT"]}
    assert env["STRIDECARE_PUBLIC_URL"] == f"http://localhost:{env['STRIDECARE_WEB_PORT']}"
    # The web container's settings, with its database and data volume here (SQLite stands in for PostgreSQL).
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("STRIDECARE_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("STRIDECARE_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    monkeypatch.setenv("STRIDECARE_ENCRYPTION_KEYS", "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c=")
    rt = Runtime.open(Settings())
    try:
        with rt.db.transaction() as s:
            s.add(Athlete(name="anna", timezone="UTC"))
        printed = CliRunner().invoke(cli, ["admin", "link"])
        assert printed.exit_code == 0, printed.output
        link = next(line for line in printed.output.splitlines() if "/login?t=" in line).strip()
        assert link.startswith("http://localhost:8080/login?t=")
        app = create_app(rt)
        browser = TestClient(
            app, client=("172.18.0.1", 51234), base_url="http://localhost:8080", follow_redirects=False
        )
        assert browser.get("/").headers["location"] == "/login"
        page = browser.get(link.removeprefix("http://localhost:8080"))
        token = re.search(r'name="t" value="([^"]+)"', page.text)
        assert page.status_code == 200 and token
        assert browser.post("/login", data={"csrf": csrf_of(page.text), "t": token.group(1)}).status_code == 303
        home = browser.get("/")
        assert home.status_code == 200 and 'data-athlete="anna"' in home.text
        healthcheck = TestClient(app, client=("127.0.0.1", 40000), base_url="http://127.0.0.1:8080")
        assert healthcheck.get("/healthz").status_code == 200
    finally:
        rt.close()


def test_mailpit_catches_the_mail(compose: dict[str, Any]) -> None:
    mailpit = compose["services"]["mailpit"]
    assert mailpit["image"].startswith("axllent/mailpit")
    published = {p.rsplit(":", 1)[-1] for p in mailpit["ports"]}
    assert published == {"1025", "8025"}


# -- the image ----------------------------------------------------------------------------------------


def test_dockerfile_installs_every_package_and_drops_root() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install '?\.", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users
    assert users[-1] not in ("root", "0")
    # The image copies packages one by one (never the whole context, which may hold .env): every package
    # setuptools would install must be copied, or `pip install .` builds an image missing it.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\S+) \./\1$", text, re.M))
    assert {pattern.rstrip("*") for pattern in includes} <= copied
    assert not re.search(r"^COPY \. ", text, re.M)
