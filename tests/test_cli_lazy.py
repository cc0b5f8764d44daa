"""The command line starts at once: ``--help`` imports no command module, and the list that stands in for them
(``stridecare_app/cli/commands.py``) is exactly the commands the modules define, help text included; ``runs``
reads through SQLAlchemy Core, without the ORM or the models, and prints what the ORM's runs would show."""

from __future__ import annotations

import gc
import importlib
import json
import pkgutil
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from conftest import ROOT, seed_data_home
from sqlalchemy import select
from test_session_identity import START, fit, ingest, store_strava, strava_run
from typer.testing import CliRunner

import stridecare_app.cli
from stridecare.db.athletes import get_athlete
from stridecare.db.models import Base, Run
from stridecare.db.run_json import run_json
from stridecare.db.run_list import ATHLETES, RUN_LOADS, RUNS, newest_runs
from stridecare.handles import UnknownAthlete
from stridecare.runtime import Runtime
from stridecare_app.cli.app import app
from stridecare_app.cli.commands import COMMANDS

# What a command module brings with it; none of it is needed to print the command list.
_HEAVY = (
    "sqlalchemy",
    "sqlalchemy.orm",
    "celery",
    "pydantic",
    "stridecare.db.models",
    "recommender",
    "ingest",
    "delivery",
    "numpy",
    "jinja2",
)

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


def _printed_and_imported(argv: list[str], env: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """The lines ``stridecare ARGV`` printed, and the heavy modules it imported."""
    probe = _PROBE.format(root=str(ROOT), argv=argv, heavy=_HEAVY)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    *printed, loaded = out.stdout.strip().splitlines()
    return printed, list(json.loads(loaded))


def _imported_by(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    return _printed_and_imported(argv, env)[1]


def _all_command_modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(stridecare_app.cli.__path__) if m.name not in {"app", "main"}]


def test_help_imports_neither_the_orm_nor_celery_nor_any_command_module() -> None:
    assert _imported_by(["--help"]) == []
    assert _imported_by([]) == []  # no arguments prints the same help


def test_a_commands_help_opens_no_database() -> None:
    # typer coerces the group's --config through pydantic (a TypeAdapter per option), so pydantic is loaded.
    assert [m for m in _imported_by(["runs", "--help"]) if not m.startswith("pydantic")] == []


def test_runs_imports_neither_celery_nor_the_recommender(tmp_path: Path) -> None:
    env = {"STRIDECARE_DATA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    loaded = _imported_by(["runs"], env)
    assert "sqlalchemy" in loaded  # it did read the database
    assert not [m for m in loaded if m.startswith(("celery", "recommender", "ingest"))]


def _the_orm_runs(rt: Runtime, handle: str = "me", limit: int = 20) -> list[dict[str, object]]:
    """The runs as ``stridecare runs --json`` printed them when it read them through the ORM."""
    with rt.db.read() as session:
        who = get_athlete(session, handle)
        query = select(Run).where(Run.athlete_id == who.id).order_by(Run.start_time.desc()).limit(limit)
        return [run_json(run) for run in session.scalars(query)]


def _a_run_its_copy_and_a_later_run(rt: Runtime, tmp_path: Path) -> None:
    ingest(rt, fit(tmp_path / "watch.fit"), now=START + timedelta(hours=1))
    store_strava(rt, strava_run(START, moving_time=1700, elapsed_time=1800), now=START + timedelta(hours=1))
    later = START + timedelta(days=2)
    ingest(rt, fit(tmp_path / "later.fit", start=later, duration_s=5400), now=later + timedelta(hours=2))


def test_runs_on_a_migrated_database_imports_neither_the_orm_nor_the_models(rt: Runtime, tmp_path: Path) -> None:
    """``stridecare runs`` reads through Core: the ORM and the models (about 0.3 s of CPU) stay unimported, and
    the JSON and the table show what the ORM's runs showed, a copy pointing at the run that counts."""
    _a_run_its_copy_and_a_later_run(rt, tmp_path)
    expected = json.loads(json.dumps(_the_orm_runs(rt), default=str))
    assert len(expected) == 3 and [r["load"] is None for r in expected].count(True) == 1
    env = {"STRIDECARE_DATA_HOME": str(rt.settings.data_home), "PATH": "/usr/bin:/bin"}

    printed, loaded = _printed_and_imported(["runs", "--json"], env)
    assert json.loads(printed[-1]) == expected
    assert "sqlalchemy" in loaded and not {"sqlalchemy.orm", "stridecare.db.models"} & set(loaded)

    printed, loaded = _printed_and_imported(["runs", "--limit", "2"], env)
    header, *lines = printed
    assert "load (ref. steps)" in header and len(lines) == 2
    assert [int(line.split()[0]) for line in lines] == [r["id"] for r in expected[:2]]
    copy = next(r for r in expected if r["duplicate_of"])
    assert any(line.split()[0] == str(copy["id"]) and line.endswith(f"= run {copy['duplicate_of']}") for line in lines)
    assert not {"sqlalchemy.orm", "stridecare.db.models"} & set(loaded)


def test_runs_of_an_athlete_not_yet_added_on_a_migrated_database(tmp_path: Path) -> None:
    seed_data_home(tmp_path / "home")
    env = {"STRIDECARE_DATA_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    printed, loaded = _printed_and_imported(["runs", "--json"], env)
    assert printed == ["[]"] and "stridecare.db.models" not in loaded


def test_the_core_run_list_shows_what_the_orm_showed_on_sqlite_and_postgresql(any_rt: Runtime, tmp_path: Path) -> None:
    _a_run_its_copy_and_a_later_run(any_rt, tmp_path)
    for limit in (20, 2, 0):
        assert newest_runs(any_rt.db, "me", limit) == _the_orm_runs(any_rt, limit=limit)
    got = newest_runs(any_rt.db, "me", 20)
    assert got[0]["start_time"].endswith("Z") and {r["long_run"] for r in got} <= {True, False, None}
    with pytest.raises(UnknownAthlete) as core:
        newest_runs(any_rt.db, "nobody", 20)
    with pytest.raises(UnknownAthlete) as orm, any_rt.db.read() as session:
        get_athlete(session, "nobody")
    assert str(core.value) == str(orm.value) and "(known: me)" in str(core.value)
    env = {"STRIDECARE_DATA_HOME": str(any_rt.settings.data_home)}
    if any_rt.settings.database_url:
        env["STRIDECARE_DATABASE_URL"] = any_rt.settings.database_url
    listed = CliRunner().invoke(app, ["runs", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == json.loads(json.dumps(_the_orm_runs(any_rt), default=str))


def test_status_imports_neither_the_planner_with_numpy_nor_the_prompts_rendering(tmp_path: Path) -> None:
    """``stridecare status`` shows figures: the planner (NumPy, about 0.17 s of CPU) and the prompts' rendering
    (Jinja) stay unimported."""
    seed_data_home(tmp_path / "home")
    env = {"STRIDECARE_DATA_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    assert CliRunner().invoke(app, ["athlete", "add", "me"], env=env).exit_code == 0
    printed, loaded = _printed_and_imported(["status", "--athlete", "me"], env)
    assert printed[0].startswith("me on ") and "recommender.status" in loaded
    assert not {"numpy", "jinja2", "recommender.planner", "delivery.render"} & set(loaded)


def test_the_core_tables_name_columns_of_the_models() -> None:
    """The lightweight tables of stridecare/db/run_list.py name real columns, with the models' types."""
    for light in (ATHLETES, RUNS, RUN_LOADS):
        model = Base.metadata.tables[light.name]
        for col in light.columns:
            assert col.name in model.columns, (light.name, col.name)
            assert type(col.type) is type(model.columns[col.name].type), (light.name, col.name)


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


_WEB = ("stridecare_app.web.app", "stridecare_app.web.server", "uvicorn", "starlette")


@pytest.mark.parametrize("web", [False, True], ids=["no-web", "web"])
def test_stridecare_run_starts_its_worker_without_celerys_command_line(tmp_path: Path, web: bool) -> None:
    """``stridecare run`` builds its Celery worker itself: Celery's command line (click-repl, prompt_toolkit)
    costs about 0.4 s of CPU at every start and sets nothing this process does not set; with ``--no-web`` it
    loads neither the web app nor its server (about a fifth of a start). The worker's start is replaced by a
    probe that records the options it got and what was imported, so the runner stops at once."""
    probe = f"""
import gc, json, sys
sys.path.insert(0, {str(ROOT)!r})
import celery.apps.worker
def start(self):
    print(json.dumps([sorted(m for m in sys.modules if m.startswith("celery.bin")), self.pool_cls.__name__,
                      self.concurrency, self.hostname.split("@")[0], sorted(m for m in {_WEB!r} if m in sys.modules),
                      gc.isenabled(), gc.get_freeze_count()]))
celery.apps.worker.Worker.start = start
sys.argv = ["stridecare", "run", {"--web" if web else "--no-web"!r}, "--concurrency", "3"]
from stridecare_app.cli.main import main
main()
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STRIDECARE_DATA_HOME": str(tmp_path / "home"),
        "STRIDECARE_WEB_PORT": str(_free_port()),
    }
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded, pool, concurrency, name, web_modules, collecting, frozen = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == []
    # The entry point held the collector off while the command started; the worker serves with it running, and
    # what the start built (hundreds of thousands of objects) is out of its collections.
    assert collecting
    assert frozen > 100_000
    assert (pool, concurrency, name) == ("TaskPool", 3, "stridecare")
    # The probe proves itself: with the web app, every one of these is loaded.
    assert web_modules == (sorted(_WEB) if web else [])


def test_the_command_line_called_in_process_leaves_the_collector_as_it_found_it(tmp_path: Path) -> None:
    """Only the console script holds the collector while a command starts: a program (or a test) that calls the
    application in-process keeps collecting, and nothing of its own is frozen out of its collections."""
    frozen = gc.get_freeze_count()
    result = CliRunner().invoke(app, ["settings"], env={"STRIDECARE_DATA_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    # The command read its settings: the point where a held start is released.
    assert "STRIDECARE_DATA_HOME" in result.output
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
