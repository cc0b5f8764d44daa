"""imported_files: an index on content_hash, for the decode guard's count of unfinished reads of one content

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 19:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every file read counts the unfinished reads of its content for any athlete (ingest.service): the unique
    # (athlete_id, content_hash) index cannot serve that, so each read scanned the whole import log, a cost that
    # grew with the history and made an import quadratic in its files.
    op.create_index("ix_imported_files_content_hash", "imported_files", ["content_hash"])


def downgrade() -> None:
    op.drop_index("ix_imported_files_content_hash", table_name="imported_files")
