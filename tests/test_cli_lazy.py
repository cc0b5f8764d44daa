"""The command line starts at once: ``--help`` imports no command module, and the list that stands in for them
(``stridecare_app/cli/commands.py``) is exactly the commands the modules define, help text included."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import ROOT
from typer.testing import CliRunner

import stridecare_app.cli
from stridecare_app.cli.app import app
from stridecare_app.cli.commands import COMMANDS

# What a command module brings with it; none of it is needed to print the command list.
_HEAVY = ("sqlalchemy", "sqlalchemy.orm", "celery", "pydantic", "stridecare.db.models", "recommender", "ingest")

_PROBE = """
import json, sys
sys.path.insert(0, {root!r})
sys.argv = ["stridecare", *{argv!r}]
from stridecare_app.cli.main import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m in {heavy!r} or m.split(".")[0] in {heavy!r})))
"""


def _imported_by(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    probe = _PROBE.format(root=str(ROOT), argv=argv, heavy=_HEAVY)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _all_command_modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(stridecare_app.cli.__path__) if m.name not in {"app", "main"}]


def test_help_imports_neither_the_orm_nor_celery_nor_any_command_module() -> None:
    assert _imported_by(["--help"]) == []
    assert _imported_by([]) == []  # no arguments prints the same help


def test_runs_imports_neither_celery_nor_the_recommender(tmp_path: Path) -> None:
    env = {"STRIDECARE_DATA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    loaded = _imported_by(["runs"], env)
    assert "sqlalchemy.orm" in loaded  # it did read the database
    assert not [m for m in loaded if m.startswith(("celery", "recommender", "ingest"))]


def test_the_list_holds_every_command_the_modules_define_with_their_own_help() -> None:
    for name in _all_command_modules():
        importlib.import_module(f"stridecare_app.cli.{name}")
    built = typer.main.get_group(app)
    defined = {name: cmd.get_short_help_str(10_000) for name, cmd in built.commands.items()}
    listed = {name: entry.help for name, entry in COMMANDS.items()}
    assert listed == defined
    for name, entry in COMMANDS.items():
        module = importlib.import_module(f"stridecare_app.cli.{entry.module}")
        assert module.__name__.endswith(entry.module), name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_listed_command_answers_its_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"stridecare {name}" in result.output


def test_help_lists_every_command_in_its_section_and_an_unknown_one_is_refused() -> None:
    shown = CliRunner().invoke(app, ["--help"]).output
    for name, entry in COMMANDS.items():
        assert f"\n  {name} " in shown, name
        assert shown.index(entry.section + ":") < shown.index(f"\n  {name} ")
    wrong = CliRunner().invoke(app, ["rnus"])
    assert wrong.exit_code == 2
    assert "No such command 'rnus'" in wrong.output


def test_the_worker_and_the_web_app_start_without_stravalib_which_loads_on_the_first_strava_call() -> None:
    """stravalib builds pint's unit registry on import (about 0.7 s of CPU): a worker, the web app and the
    file watcher load it only when something talks to Strava."""
    probe = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
import workers.app, stridecare_app.web.app, ingest.watch, ingest.strava.events, ingest.strava.oauth
before = "stravalib" in sys.modules
from ingest.strava.client import strava_exc
try:
    raise strava_exc.ObjectNotFound("gone")
except strava_exc.Fault as err:
    caught = type(err).__module__
print(json.dumps([before, "stravalib" in sys.modules, caught]))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, True, "stravalib.exc"]


def test_stridecare_run_starts_its_worker_without_celerys_command_line(tmp_path: Path) -> None:
    """``stridecare run`` builds its Celery worker itself: Celery's command line (click-repl, prompt_toolkit)
    costs about 0.4 s of CPU at every start and sets nothing this process does not set. The worker's start is
    replaced by a probe that records the options it got and what was imported, so the runner stops at once."""
    probe = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
import celery.apps.worker
def start(self):
    print(json.dumps([sorted(m for m in sys.modules if m.startswith("celery.bin")), self.pool_cls.__name__,
                      self.concurrency, self.hostname.split("@")[0]]))
celery.apps.worker.Worker.start = start
sys.argv = ["stridecare", "run", "--no-web", "--concurrency", "3"]
from stridecare_app.cli.main import main
main()
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STRIDECARE_DATA_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded, pool, concurrency, name = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == []
    assert (pool, concurrency, name) == ("TaskPool", 3, "stridecare")
