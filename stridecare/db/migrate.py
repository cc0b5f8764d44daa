"""Schema migrations with Alembic, run from code so that ``stridecare migrate`` needs no ini file.

Every command opens the runtime, which brings the schema to head first; almost always it is there already.
That case is answered with one query against the revisions named in the migration files, without importing
Alembic (about 0.2 s of every command's start-up). Anything unusual — no version table, an older revision,
a merge revision the quick reading does not understand — goes through Alembic as before.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from stridecare.db.engine import READ_ONLY_OPTION

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
_REVISION = re.compile(r"""^revision(?:\s*:\s*[\w\[\] |]+)?\s*=\s*["']([^"']+)["']""", re.MULTILINE)
_DOWN_REVISION = re.compile(
    r"""^down_revision(?:\s*:\s*[\w\[\], |]+)?\s*=\s*(?:None|["']([^"']+)["'])\s*$""", re.MULTILINE
)


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at our migration scripts and ``url``."""
    from alembic.config import Config  # deferred: start-up time (a database at head never loads Alembic)

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def script_heads() -> frozenset[str] | None:
    """The head revisions of the migration files, read as text; None when a file is not of the simple
    one-parent form this reading understands (Alembic then decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        revision = _REVISION.findall(source)
        down = _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0]:
            parents.add(down[0])
    heads = frozenset(revisions - parents)
    return heads or None


def _database_revisions(conn: Connection) -> frozenset[str] | None:
    try:
        # A savepoint keeps PostgreSQL's transaction usable when the table does not exist yet.
        with conn.begin_nested():
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:
        return None
    return frozenset(rows)


def at_head(engine: Engine) -> bool:
    """True when the database's recorded revisions are exactly the migration files' heads."""
    heads = script_heads()
    if heads is None:
        return False
    # Read-only: a command starting while a worker writes must not queue for SQLite's write lock.
    with engine.execution_options(**{READ_ONLY_OPTION: True}).connect() as conn:
        current = _database_revisions(conn)
        conn.rollback()
    return current == heads


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema; a no-op when it is already there."""
    if at_head(engine):
        return
    from alembic import command  # deferred: start-up time (only a database behind head loads Alembic)

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several services may start at once; the advisory lock makes them migrate one after the other.
            conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
