"""The Alembic migrations produce exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from stridecare.db.migrate import script_heads, upgrade
from stridecare.db.models import Base
from stridecare.runtime import Runtime


def test_migrated_schema_matches_the_models(any_rt: Runtime) -> None:
    with any_rt.db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_upgrade_twice_is_a_no_op(any_rt: Runtime) -> None:
    upgrade(any_rt.db.engine)
    upgrade(any_rt.db.engine)
    with any_rt.db.engine.connect() as conn:
        revisions = MigrationContext.configure(conn).get_current_heads()
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert frozenset(revisions) == script_heads() and len(revisions) == 1
    assert diff == []
