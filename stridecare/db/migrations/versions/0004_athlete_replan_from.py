"""athletes.replan_from: the earliest instant whose derived figures (loads, daily series, flags) are stale

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import stridecare.db.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("athletes") as batch:
        batch.add_column(sa.Column("replan_from", stridecare.db.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("athletes") as batch:
        batch.drop_column("replan_from")
