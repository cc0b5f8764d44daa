"""athlete channel settings: per-channel settings by channel name, for built-in and plugin channels alike

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("athletes") as batch:
        batch.add_column(sa.Column("channel_settings", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("athletes") as batch:
        batch.drop_column("channel_settings")
