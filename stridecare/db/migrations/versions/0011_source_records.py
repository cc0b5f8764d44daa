"""source records: where each imported file came from, its kept original, retries, and API records as they came

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 01:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import stridecare.db.models

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("imported_files") as batch:
        batch.add_column(sa.Column("origin", sa.String(32), nullable=True))
        batch.add_column(sa.Column("origin_account", sa.String(128), nullable=True))
        batch.add_column(sa.Column("origin_item", sa.String(128), nullable=True))
        batch.add_column(sa.Column("original", sa.Text(), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("retry_at", stridecare.db.models.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "source_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("athlete_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_key", sa.String(128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("fetched_at", stridecare.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_records")),
        sa.ForeignKeyConstraint(
            ["athlete_id"], ["athletes.id"], name=op.f("fk_source_records_athlete_id_athletes"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint("athlete_id", "source", "source_key", name=op.f("uq_source_records_athlete_id")),
    )


def downgrade() -> None:
    op.drop_table("source_records")
    with op.batch_alter_table("imported_files") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("attempts")
        batch.drop_column("original")
        batch.drop_column("origin_item")
        batch.drop_column("origin_account")
        batch.drop_column("origin")
