"""The floors hold: the import-linter contracts pass on the tree and fail when a lower floor imports a higher one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stridecare_app", "workers", "ingest", "recommender", "delivery", "stridecare")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on a copy of the project, importing the copy's packages, not the installed ones."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.skip(f"import-linter is not installed beside {sys.executable}")
    copy = tmp_path / "tree"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "templates"))
    return copy


def test_the_layers_contract_is_kept(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("delivery/outbox.py", "recommender.messages"),
        ("recommender/planner.py", "ingest.store"),
        ("stridecare/settings.py", "workers.app"),
        ("workers/tasks.py", "stridecare_app.web.app"),
    ],
)
def test_an_upward_import_breaks_the_contract(tree: Path, module: str, upward: str) -> None:
    target = tree / module
    target.write_text(target.read_text() + f"\n\nimport {upward}  # an arrow pointing up\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert upward in result.stdout


def test_the_domain_may_not_import_a_framework(tree: Path) -> None:
    target = tree / "stridecare" / "domain" / "load.py"
    target.write_text(target.read_text() + "\n\nimport sqlalchemy  # I/O in the pure domain\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "The domain is pure" in result.stdout and "sqlalchemy" in result.stdout
