"""strava events: an index on (status, next_attempt_at), the drain's and the sweep's look for due events

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 04:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The events table is the queue: every drain batch and every tick looks for due rows among all kept events.
    op.create_index("ix_strava_events_due", "strava_events", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_strava_events_due", table_name="strava_events")
