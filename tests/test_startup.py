"""Start-up cost: a command on a database already at head does not import Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from conftest import ROOT
from sqlalchemy import text

from stridecare.db.engine import Database
from stridecare.db.migrate import MIGRATIONS, alembic_config, at_head, script_heads, upgrade

_PROBE = """
import sys
sys.path.insert(0, {root!r})
from stridecare.db.engine import Database
from stridecare.db.migrate import upgrade
import stridecare_app.cli.main  # the command line's own imports
db = Database({url!r})
upgrade(db.engine)
print("alembic" in sys.modules)
"""


def test_heads_read_from_the_files_match_alembic() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script_heads() == frozenset(script.get_heads())
    assert len(list((MIGRATIONS / "versions").glob("*.py"))) >= 1


def test_command_on_a_migrated_database_never_imports_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(root=str(ROOT), url=url)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_fresh_database_is_migrated_through_alembic(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert not at_head(db.engine)
        upgrade(db.engine)
        assert at_head(db.engine)
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM athletes")).scalar_one() == 0
    finally:
        db.dispose()


def test_unknown_recorded_revision_is_left_to_alembic(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        upgrade(db.engine)
        with db.transaction() as session:
            session.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
        assert not at_head(db.engine)
        with pytest.raises(Exception, match="ffff"):
            upgrade(db.engine)
    finally:
        db.dispose()
