"""shoe life: a pair's starting distance, the day it came into use, and when it was retired

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Pairs added before this revision keep no in-use-from date (no lower bound: their runs stay theirs) and,
    # when already retired, no retirement instant (they take no run at all, as before).
    with op.batch_alter_table("shoes") as batch:
        batch.add_column(sa.Column("start_km", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("in_use_from", sa.Date(), nullable=True))
        batch.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("shoes") as batch:
        batch.drop_column("retired_at")
        batch.drop_column("in_use_from")
        batch.drop_column("start_km")
