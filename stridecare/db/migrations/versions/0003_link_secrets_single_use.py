"""per-athlete link secret and single-use tokens (Strava connect links, OAuth state)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:35:00.000000
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Links signed before this revision stop working: they named no per-athlete secret.
    with op.batch_alter_table("athletes") as batch:
        batch.add_column(sa.Column("link_secret", sa.String(length=64), nullable=True))
    athletes = sa.table("athletes", sa.column("id", sa.Integer), sa.column("link_secret", sa.String))
    conn = op.get_bind()
    for (athlete_id,) in conn.execute(sa.select(athletes.c.id)).all():
        conn.execute(athletes.update().where(athletes.c.id == athlete_id).values(link_secret=uuid.uuid4().hex))
    with op.batch_alter_table("athletes") as batch:
        batch.alter_column("link_secret", existing_type=sa.String(length=64), nullable=False)
    op.create_table(
        "used_tokens",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_used_tokens")),
    )
    op.create_index(op.f("ix_used_tokens_expires_at"), "used_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_used_tokens_expires_at"), table_name="used_tokens")
    op.drop_table("used_tokens")
    with op.batch_alter_table("athletes") as batch:
        batch.drop_column("link_secret")
