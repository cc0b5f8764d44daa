"""athletes.replan_progress_at: the last sign of life of the replan that owns a set stale mark

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 05:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import stridecare.db.models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("athletes") as batch:
        batch.add_column(
            sa.Column("replan_progress_at", stridecare.db.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("athletes") as batch:
        batch.drop_column("replan_progress_at")
