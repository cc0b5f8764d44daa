"""channels in one place: the email, webhook and console columns move into athletes.channel_settings

Each built-in channel's settings become one entry in the JSON column push already used (revision 0008), in its
channel's schema: ``email`` {address, unsubscribed_at}, ``webhook`` {url, secret (still the vault's ciphertext),
disabled_at}, ``console`` {enabled}. Every value is carried over, times as ISO 8601 UTC; the downgrade puts
them back into their columns. On SQLite the columns are dropped and added in place, never by copying the table
(see ``_sqlite_in_place``: a copy would cascade-delete every athlete's runs).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 01:40:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, type) of the columns that move; the downgrade adds them back nullable, fills them, then makes console
# NOT NULL as it was.
_OLD_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("email", sa.String(320)),
    ("webhook_url", sa.Text()),
    ("webhook_secret_enc", sa.Text()),
    ("webhook_disabled_at", sa.DateTime(timezone=True)),
    ("email_unsubscribed_at", sa.DateTime(timezone=True)),
    ("console", sa.Boolean()),
)
_MOVED = ("email", "webhook", "console")


def _athletes(with_old: bool) -> sa.TableClause:
    columns: list[sa.ColumnClause[Any]] = [sa.column("id", sa.Integer()), sa.column("channel_settings", sa.JSON())]
    if with_old:
        columns += [sa.column(name, type_) for name, type_ in _OLD_COLUMNS]
    return sa.table("athletes", *columns)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite without type information: "2026-12-01 10:00:00.000000+00:00"
        value = datetime.fromisoformat(value)
    when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return str(when.astimezone(UTC).isoformat())


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(str(value))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _compact(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def upgrade() -> None:
    bind = op.get_bind()
    table = _athletes(with_old=True)
    for row in bind.execute(sa.select(table)).mappings().all():
        settings = dict(row["channel_settings"] or {})
        email = _compact({"address": row["email"], "unsubscribed_at": _iso(row["email_unsubscribed_at"])})
        webhook = _compact(
            {
                "url": row["webhook_url"],
                "secret": row["webhook_secret_enc"],
                "disabled_at": _iso(row["webhook_disabled_at"]),
            }
        )
        if email:
            settings["email"] = email
        if webhook:
            settings["webhook"] = webhook
        settings["console"] = {"enabled": row["console"] is not False}  # NULL was read as the default: on
        bind.execute(sa.update(table).where(table.c.id == row["id"]).values(channel_settings=settings))
    if bind.dialect.name == "sqlite":
        _sqlite_in_place(bind)
        for name, _type in _OLD_COLUMNS:
            op.execute(f'ALTER TABLE athletes DROP COLUMN "{name}"')
        return
    for name, _type in _OLD_COLUMNS:
        op.drop_column("athletes", name)


def _sqlite_in_place(bind: sa.Connection) -> None:
    """Refuse an SQLite too old to change the athletes table in place.

    A batch operation would copy the table and DROP the old one, and with foreign keys on (the engine turns
    them on, inside the migration's transaction where they cannot be turned off) that DROP deletes every row
    that cascades from an athlete: runs, prompts, imported files. ALTER TABLE … DROP/ADD COLUMN (SQLite 3.35)
    changes the table in place and deletes nothing."""
    version = tuple(int(part) for part in str(bind.exec_driver_sql("select sqlite_version()").scalar()).split("."))
    if version < (3, 35):
        raise RuntimeError(
            f"schema revision 0012 needs SQLite 3.35 or newer (this Python has {'.'.join(map(str, version))}); "
            "nothing was changed"
        )


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    if sqlite:
        _sqlite_in_place(bind)
    for name, type_ in _OLD_COLUMNS:
        if sqlite and name == "console":
            # NOT NULL in place needs a default on SQLite (no copy of the table: see _sqlite_in_place).
            op.add_column("athletes", sa.Column(name, type_, nullable=False, server_default=sa.true()))
        else:
            op.add_column("athletes", sa.Column(name, type_, nullable=True))
    table = _athletes(with_old=True)
    for row in bind.execute(sa.select(table.c.id, table.c.channel_settings)).mappings().all():
        settings = dict(row["channel_settings"] or {})
        email = settings.get("email") or {}
        webhook = settings.get("webhook") or {}
        console = settings.get("console") or {}
        bind.execute(
            sa.update(table)
            .where(table.c.id == row["id"])
            .values(
                email=email.get("address"),
                email_unsubscribed_at=_when(email.get("unsubscribed_at")),
                webhook_url=webhook.get("url"),
                webhook_secret_enc=webhook.get("secret"),
                webhook_disabled_at=_when(webhook.get("disabled_at")),
                console=bool(console.get("enabled", True)),
                channel_settings={k: v for k, v in settings.items() if k not in _MOVED},
            )
        )
    if not sqlite:
        op.alter_column("athletes", "console", existing_type=sa.Boolean(), nullable=False)
