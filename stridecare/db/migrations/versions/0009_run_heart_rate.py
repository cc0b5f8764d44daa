"""runs.avg_heart_rate_bpm and max_heart_rate_bpm: the session's heart rate, where the source recorded it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 22:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("avg_heart_rate_bpm", sa.Float(), nullable=True))
        batch.add_column(sa.Column("max_heart_rate_bpm", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("max_heart_rate_bpm")
        batch.drop_column("avg_heart_rate_bpm")
