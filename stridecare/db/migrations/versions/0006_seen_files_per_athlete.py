"""seen files per athlete: the rescan fast path is keyed by athlete and path

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The table is only a cache in front of the content-hash import log: rows keyed by path alone cannot say
    # which athlete saw the file, so they are dropped and the next scan hashes each file once more.
    op.drop_table("seen_files")
    op.create_table(
        "seen_files",
        sa.Column("athlete_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["athlete_id"], ["athletes.id"], name=op.f("fk_seen_files_athlete_id_athletes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("athlete_id", "path", name=op.f("pk_seen_files")),
    )


def downgrade() -> None:
    op.drop_table("seen_files")
    op.create_table(
        "seen_files",
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_seen_files")),
    )
