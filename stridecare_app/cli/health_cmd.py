"""``stridecare health``: is this installation able to work? One line per check, exit 0 only when all pass.

Meant for operators and container health checks (``docker compose exec web stridecare health``). It only
looks: unlike the other commands it does not open the database through :class:`~stridecare.runtime.Runtime`,
which would migrate it and so hide a schema that is behind.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from cryptography.fernet import Fernet
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ingest.strava.errors import APP_INACTIVE_MESSAGE
from stridecare.db.migrate import alembic_config
from stridecare.db.models import ApiBudget, Athlete
from stridecare.settings import Settings, load_settings
from stridecare_app.cli.app import app, emit_json, state

# Long enough for a server under load, short enough that a container health check does not time out first.
CONNECT_TIMEOUT_S = 5
# Shorter than this, an HMAC key for links is guessable.
MIN_SECRET_KEY_CHARS = 16


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one check: ``detail`` says what was found, or what to do about it."""

    name: str
    ok: bool
    detail: str


@app.command()
def health(
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Check the database (reachable, schema at head), the broker, the inboxes, the data home, SMTP and keys.

    Prints one line per check and exits 0 when every check passes, 1 otherwise.
    """
    try:
        s = load_settings(state.config)
    except (FileNotFoundError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        checks = [Check("settings", False, f"cannot read settings: {_first_line(exc)}")]
    else:
        checks = run_checks(s)
    healthy = all(c.ok for c in checks)
    if as_json:
        emit_json({"healthy": healthy, "checks": [asdict(c) for c in checks]})
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            typer.echo(f"{'ok' if c.ok else 'FAIL':<4}  {c.name:<{width}}  {c.detail}")
    raise typer.Exit(0 if healthy else 1)


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order an operator would fix them."""
    database = check_database(settings)
    checks = [database, check_broker(settings), check_data_home(settings)]
    checks += check_inboxes(settings)
    checks.append(check_smtp(settings, database_ok=database.ok))
    checks.append(check_keys(settings))
    if settings.strava_client_id and database.ok:
        checks.append(check_strava(settings))
    return checks


def _first_line(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {message[0]}" if message else exc.__class__.__name__


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    # No pool: one connection, closed when the check is done.
    return create_engine(url, poolclass=NullPool, connect_args=connect_args)


def check_database(settings: Settings) -> Check:
    """The database answers ``SELECT 1`` and its Alembic revision is the newest migration."""
    # deferred: start-up time of the command line (Alembic, which only this check and a migration need)
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    url = settings.effective_database_url
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    on_disk = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    # Connecting to a missing SQLite file would create an empty one; say what is missing instead.
    if on_disk and not Path(str(parsed.database)).is_file():
        return Check("database", False, f"{shown}: no database file (run `stridecare migrate`)")
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:
        return Check("database", False, f"{shown}: {_first_line(exc)}")
    finally:
        engine.dispose()
    if current != heads:
        at = ",".join(sorted(current)) or "none"
        return Check(
            "database",
            False,
            f"{shown}: schema at {at}, newest is {','.join(sorted(heads))} (run `stridecare migrate`)",
        )
    return Check("database", True, f"{shown}: reachable, schema at head ({','.join(sorted(heads))})")


def check_broker(settings: Settings) -> Check:
    """Redis answers PING; the embedded SQLite broker file exists or can be created; others connect."""
    from kombu.utils.url import sanitize_url  # deferred: start-up time of the command line (kombu)

    url = settings.effective_broker_url
    shown = sanitize_url(url)
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis  # deferred: start-up time of the command line (the Redis client)

            client = redis.Redis.from_url(
                url, socket_timeout=CONNECT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S
            )
            try:
                client.ping()
            finally:
                client.close()
            return Check("broker", True, f"{shown}: PONG")
        if url.startswith("sqla+sqlite"):
            path = Path(str(make_url(url.removeprefix("sqla+")).database))
            if path.is_file():
                return Check("broker", True, f"{shown}: file present")
            if _writable_dir(path.parent):
                return Check("broker", True, f"{shown}: file is created with the first message")
            return Check("broker", False, f"{shown}: {path.parent} is missing or not writable")
        from kombu.connection import Connection  # deferred: start-up time of the command line (kombu)

        # Any other transport Celery supports (AMQP, …): kombu connects with a single attempt.
        with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1)
        return Check("broker", True, f"{shown}: connected")
    except Exception as exc:
        return Check("broker", False, f"{shown}: {_first_line(exc)}")


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def check_data_home(settings: Settings) -> Check:
    """The data home (quarantine, beat schedule, generated keys) is a writable folder."""
    home = settings.data_home
    if _writable_dir(home):
        return Check("data home", True, f"{home}: writable")
    if home.exists():
        return Check("data home", False, f"{home}: not a writable folder")
    return Check("data home", False, f"{home}: missing (created by `stridecare migrate` or `stridecare run`)")


def check_inboxes(settings: Settings) -> list[Check]:
    """Each watched folder exists and is writable (damaged files are moved out of it)."""
    checks = []
    for athlete, root in settings.inbox_map():
        name = f"inbox {athlete}"
        if _writable_dir(root):
            checks.append(Check(name, True, f"{root}: writable"))
        elif root.exists():
            checks.append(Check(name, False, f"{root}: not a writable folder for this user"))
        else:
            checks.append(Check(name, False, f"{root}: missing (`stridecare watch` creates it)"))
    return checks


def check_smtp(settings: Settings, *, database_ok: bool) -> Check:
    """SMTP, when configured, accepts a TCP connection; unset is fine unless some athlete has an email."""
    if not settings.smtp_host:
        with_email = _athletes_with_email(settings) if database_ok else None
        if with_email:
            return Check(
                "smtp",
                False,
                f"not configured, but {with_email} athlete(s) have an email address (set STRIDECARE_SMTP_HOST)",
            )
        return Check("smtp", True, "not configured (prompts go to the console log and webhooks)")
    where = f"{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security})"
    try:
        timeout = min(settings.smtp_timeout_s, CONNECT_TIMEOUT_S)
        with socket.create_connection((settings.smtp_host, settings.smtp_port), timeout=timeout):
            pass
    except OSError as exc:
        return Check("smtp", False, f"{where}: {_first_line(exc)}")
    return Check("smtp", True, f"{where}: reachable")


def _athletes_with_email(settings: Settings) -> int | None:
    engine = _engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            # Channel settings are one JSON value per athlete (stridecare.plugins): read them, count in Python.
            rows = conn.execute(select(Athlete.channel_settings)).scalars()
            return sum(1 for value in rows if isinstance(value, dict) and (value.get("email") or {}).get("address"))
    except Exception:
        return None  # the database check already reports why
    finally:
        engine.dispose()


def check_keys(settings: Settings) -> Check:
    """The link-signing key is long enough and every configured encryption key is a Fernet key."""
    if settings.secret_key is not None and len(settings.secret_key.get_secret_value()) < MIN_SECRET_KEY_CHARS:
        return Check(
            "keys",
            False,
            f"STRIDECARE_SECRET_KEY is shorter than {MIN_SECRET_KEY_CHARS} characters; links could be forged",
        )
    for index, key in enumerate(settings.encryption_keys, start=1):
        try:
            Fernet(key.get_secret_value().encode())
        except ValueError:
            return Check("keys", False, f"STRIDECARE_ENCRYPTION_KEYS: key {index} is not a Fernet key")
    if settings.encryption_keys:
        source = f"{len(settings.encryption_keys)} encryption key(s) from STRIDECARE_ENCRYPTION_KEYS"
    else:
        source = f"encryption key kept in {settings.data_home / 'secret.keys'}"
    signing = "STRIDECARE_SECRET_KEY" if settings.secret_key is not None else "a key derived from it"
    return Check("keys", True, f"{source}; links signed with {signing}")


def check_strava(settings: Settings) -> Check:
    """Strava still serves this app: it fails while Strava answers 403 Application/Status/Inactive (the app's
    owner needs a subscription); stored runs are kept and imports resume by themselves once it is active."""
    engine = _engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(ApiBudget.app_inactive_since, ApiBudget.app_probe_at).where(ApiBudget.name == "strava")
            ).first()
    except Exception as exc:
        return Check("strava", False, f"cannot read the Strava state: {_first_line(exc)}")
    finally:
        engine.dispose()
    if row is None or row.app_inactive_since is None:
        return Check("strava", True, "the app is active (or has not been refused)")
    nxt = f"; checked again at {row.app_probe_at:%Y-%m-%d %H:%M} UTC" if row.app_probe_at is not None else ""
    return Check("strava", False, f"{APP_INACTIVE_MESSAGE}{nxt}")
