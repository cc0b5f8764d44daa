"""Revision 0012 moves the email, webhook and console columns into ``athletes.channel_settings`` without losing a
value, on SQLite and PostgreSQL, and its downgrade puts every value back. Rows are written at revision 0011 with
the columns of that time, through Alembic on the project's own engine (SQLite with foreign keys on), as an
installation that upgrades would have them; what hangs off an athlete (imported files, runs) survives both ways.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_ADMIN_URL, require_postgres
from sqlalchemy import Engine, create_engine, inspect, text

from stridecare.crypto import Vault
from stridecare.db.engine import Database
from stridecare.db.migrate import alembic_config
from stridecare.plugins import channel_classes, channel_options

FERNET = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="
UNSUBSCRIBED = datetime(2026, 11, 3, 20, 15, 7, 123456, tzinfo=UTC)
DISABLED = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'old.db'}")
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # cascades armed, as in real use
        yield db.engine
        db.dispose()
        return
    require_postgres()
    import psycopg

    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"sc_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    try:
        yield db.engine
    finally:
        db.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(engine: Engine, target: str, down: bool = False) -> None:
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, target)


OLD_ROWS: list[dict[str, Any]] = [
    # everything set, the console off, an unsubscribe and a 410'd webhook, and a push URL from revision 0008
    {
        "id": 1,
        "name": "anna",
        "email": "anna@example.org",
        "webhook_url": "https://hooks.example.org/anna?token=a b",
        "webhook_secret_enc": "gAAAA-secret-ciphertext",
        "webhook_disabled_at": DISABLED,
        "email_unsubscribed_at": UNSUBSCRIBED,
        "console": False,
        "channel_settings": '{"push": {"url": "gAAAA-push-ciphertext"}}',
    },
    # nothing but the default console
    {
        "id": 2,
        "name": "ben",
        "email": None,
        "webhook_url": None,
        "webhook_secret_enc": None,
        "webhook_disabled_at": None,
        "email_unsubscribed_at": None,
        "console": True,
        "channel_settings": "{}",
    },
    # a webhook without a secret yet, an address never unsubscribed, a plugin channel's settings
    {
        "id": 3,
        "name": "cleo",
        "email": "cleo@example.org",
        "webhook_url": "http://10.0.0.5/hook",
        "webhook_secret_enc": None,
        "webhook_disabled_at": None,
        "email_unsubscribed_at": None,
        "console": True,
        "channel_settings": '{"pager": {"folder": "/srv/pages"}}',
    },
]


def _insert_old(engine: Engine) -> None:
    columns = ", ".join(OLD_ROWS[0])
    values = ", ".join(f":{k}" for k in OLD_ROWS[0])
    with engine.begin() as conn:
        for row in OLD_ROWS:
            conn.execute(
                text(
                    f"INSERT INTO athletes ({columns}, timezone, balance_weekday, balance_time, balance_level, "
                    f"digest_weekday, digest_time, dashboard_token, link_secret, created_at) VALUES ({values}, "
                    f"'UTC', 6, '18:00', 0, 0, '08:00', :token, :secret, :created)"
                ),
                {**row, "token": f"t{row['id']}", "secret": f"s{row['id']}", "created": DISABLED},
            )
            # Something that cascades from the athlete: a copy of the table would take it along.
            conn.execute(
                text(
                    "INSERT INTO imported_files (athlete_id, content_hash, path, size, status, source, created_at) "
                    "VALUES (:id, :hash, '/inbox/run.fit', 1, 'ingested', 'fit', :created)"
                ),
                {"id": row["id"], "hash": f"h{row['id']}", "created": DISABLED},
            )


def _files(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM imported_files")).scalar() or 0)


def _settings_by_name(engine: Engine) -> dict[str, dict[str, Any]]:
    import json

    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, channel_settings FROM athletes ORDER BY id")).all()
    return {name: value if isinstance(value, dict) else json.loads(value) for name, value in rows}


def test_the_columns_move_into_channel_settings_and_back(engine: Engine) -> None:
    _migrate(engine, "0011")
    _insert_old(engine)
    _migrate(engine, "0012")
    assert _files(engine) == len(OLD_ROWS)

    moved = _settings_by_name(engine)
    assert moved["anna"] == {
        "email": {"address": "anna@example.org", "unsubscribed_at": UNSUBSCRIBED.isoformat()},
        "webhook": {
            "url": "https://hooks.example.org/anna?token=a b",
            "secret": "gAAAA-secret-ciphertext",
            "disabled_at": DISABLED.isoformat(),
        },
        "console": {"enabled": False},
        "push": {"url": "gAAAA-push-ciphertext"},
    }
    assert moved["ben"] == {"console": {"enabled": True}}
    assert moved["cleo"] == {
        "email": {"address": "cleo@example.org"},
        "webhook": {"url": "http://10.0.0.5/hook"},
        "console": {"enabled": True},
        "pager": {"folder": "/srv/pages"},
    }
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("athletes")}
    assert not columns & {"email", "webhook_url", "webhook_secret_enc", "webhook_disabled_at", "console"}

    _migrate(engine, "0011", down=True)
    assert _files(engine) == len(OLD_ROWS)
    with engine.connect() as conn:
        back = conn.execute(
            text(
                "SELECT id, name, email, webhook_url, webhook_secret_enc, webhook_disabled_at, "
                "email_unsubscribed_at, console, channel_settings FROM athletes ORDER BY id"
            )
        ).mappings()
        restored = [dict(r) for r in back]
    import json

    for got, want in zip(restored, OLD_ROWS, strict=True):
        for key in ("webhook_disabled_at", "email_unsubscribed_at"):
            value = got[key]
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            got[key] = value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
        settings = got.pop("channel_settings")
        got["channel_settings"] = settings if isinstance(settings, dict) else json.loads(settings)
        got["console"] = bool(got["console"])
        assert got == {**want, "channel_settings": json.loads(want["channel_settings"])}


def test_the_channels_read_what_the_migration_wrote(tmp_path: Path) -> None:
    """The moved values are what each channel's schema accepts and reads: wants and targets as before."""
    from stridecare.db.engine import Database
    from stridecare.db.models import Athlete
    from stridecare.settings import Settings

    eng = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    _migrate(eng, "0011")
    vault = Vault([FERNET])
    with eng.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO athletes (id, name, email, webhook_url, webhook_secret_enc, console, channel_settings, "
                "timezone, balance_weekday, balance_time, balance_level, digest_weekday, digest_time, "
                "dashboard_token, link_secret, created_at) VALUES (1, 'anna', 'anna@example.org', "
                "'https://hooks.example.org/a', :secret, 0, '{}', 'UTC', 6, '18:00', 0, 0, '08:00', 't', 's', "
                "'2026-12-01 00:00:00')"
            ),
            {"secret": vault.encrypt("whsec_dGVzdHNlY3JldA==")},
        )
    _migrate(eng, "head")
    eng.dispose()
    settings = Settings(
        data_home=tmp_path, database_url=f"sqlite:///{tmp_path / 'old.db'}", smtp_host="mail.example.org"
    )
    db = Database(settings.effective_database_url)
    classes = channel_classes()
    with db.read() as session:
        athlete = session.get(Athlete, 1)
        assert athlete is not None
        assert channel_options(athlete, "email") == {"address": "anna@example.org"}
        for name in ("email", "webhook", "console"):
            channel = classes[name](settings)
            assert channel.wants(athlete) is (name != "console"), name
        target = classes["webhook"](settings).target(athlete, vault)
        assert (target.address, target.secret) == ("https://hooks.example.org/a", "whsec_dGVzdHNlY3JldA==")
        assert classes["email"](settings).target(athlete, vault).address == "anna@example.org"
    db.dispose()
