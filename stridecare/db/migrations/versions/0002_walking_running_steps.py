"""walking and running steps on run loads (foot-load model version 2)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Loads stored by model version 1 did not tell gaits apart: they read as zero until recomputed.
    with op.batch_alter_table("run_loads") as batch:
        batch.add_column(sa.Column("walking_steps", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("running_steps", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("run_loads") as batch:
        batch.drop_column("running_steps")
        batch.drop_column("walking_steps")
