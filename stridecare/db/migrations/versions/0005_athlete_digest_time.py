"""athletes.digest_time: the local time of day the weekly digest goes out (its weekday is digest_weekday)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("athletes") as batch:
        batch.add_column(sa.Column("digest_time", sa.String(5), nullable=False, server_default="08:00"))


def downgrade() -> None:
    with op.batch_alter_table("athletes") as batch:
        batch.drop_column("digest_time")
