#!/usr/bin/env bash
# Development helper: regenerate the initial migration from the models (only while no release exists).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f stridecare/db/migrations/versions/0001_initial_schema.py /tmp/sc_autogen.db
.venv/bin/python - <<'PY'
from alembic import command
from stridecare.db.migrate import alembic_config
command.revision(alembic_config("sqlite:////tmp/sc_autogen.db"), message="initial schema", autogenerate=True, rev_id="0001")
PY
.venv/bin/ruff format -q stridecare/db/migrations/versions/ || true
