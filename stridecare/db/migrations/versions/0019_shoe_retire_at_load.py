"""shoe retirement by foot load: the cumulative load (reference steps) at which a pair is due

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 02:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch recreate of ``shoes`` with SQLite's foreign keys on would cascade into runs.
    op.add_column("shoes", sa.Column("retire_at_load", sa.Float(), nullable=True))


def downgrade() -> None:
    # SQLite drops a column in place since 3.35; the batch keeps older SQLite and PostgreSQL alike.
    with op.batch_alter_table("shoes", recreate="never") as batch:
        batch.drop_column("retire_at_load")
