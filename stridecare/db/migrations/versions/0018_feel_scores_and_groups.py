"""feel_scores: the athlete's foot-discomfort score per day; athletes.group_name for the coach's roster;
an index of prompts by athlete and day

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 02:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from stridecare.db.models import UTCDateTime

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: never a batch recreate of athletes (foreign keys are on; it would cascade deletes).
    op.add_column("athletes", sa.Column("group_name", sa.String(64), nullable=True))
    op.create_table(
        "feel_scores",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("athlete_id", sa.Integer(), sa.ForeignKey("athletes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("location", sa.String(16), nullable=True),
        sa.Column("prompt_id", sa.String(32), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("athlete_id", "day", name="uq_feel_scores_athlete_day"),
    )
    op.create_index("ix_prompts_athlete_day", "prompts", ["athlete_id", "local_day"])


def downgrade() -> None:
    op.drop_index("ix_prompts_athlete_day", table_name="prompts")
    op.drop_table("feel_scores")
    # A plain DROP COLUMN (SQLite 3.35+ has it): never a batch copy of athletes, which would cascade deletes.
    op.drop_column("athletes", "group_name")
