"""prompts: an index on (athlete_id, created_at), the newest prompts of an athlete without sorting them all

Revision ID: 0023
Revises: 0020
Create Date: 2026-12-07 04:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The home page's cards and `stridecare status` read an athlete's newest prompts: without it, every prompt of
    # the athlete's history is read and sorted on each view.
    op.create_index("ix_prompts_athlete_created", "prompts", ["athlete_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_prompts_athlete_created", table_name="prompts")
