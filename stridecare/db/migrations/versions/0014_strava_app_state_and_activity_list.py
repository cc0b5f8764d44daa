"""Strava after its paywall and events as hints: the app's inactive state, the per-athlete activity-list
schedule, and the list misses of an event

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 01:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import stridecare.db.models

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str) -> sa.Column[object]:
    return sa.Column(name, stridecare.db.models.UTCDateTime(timezone=True), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("api_budgets") as batch:
        batch.add_column(_when("app_inactive_since"))
        batch.add_column(_when("app_probe_at"))
    with op.batch_alter_table("strava_accounts") as batch:
        batch.add_column(_when("list_due_at"))
        batch.add_column(_when("listed_at"))
    with op.batch_alter_table("strava_events") as batch:
        batch.add_column(sa.Column("list_misses", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("strava_events") as batch:
        batch.drop_column("list_misses")
    with op.batch_alter_table("strava_accounts") as batch:
        batch.drop_column("listed_at")
        batch.drop_column("list_due_at")
    with op.batch_alter_table("api_budgets") as batch:
        batch.drop_column("app_probe_at")
        batch.drop_column("app_inactive_since")
