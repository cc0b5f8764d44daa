"""The ``stridecare`` command line's application object and what every command shares: settings and runtime for
the invocation, the one-line failure, JSON output, the athlete by handle.

Command modules (``athletes``, ``ingest_cmds``, …) attach their commands to ``app``. They are imported only when
one of their commands runs (the list in ``commands.py`` says which module holds which), so ``stridecare --help``
starts without SQLAlchemy, pydantic or Celery; what this module needs of those is imported where it is used.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from stridecare.handles import InvalidHandle
from stridecare_app.cli import collector
from stridecare_app.cli.commands import COMMANDS

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from stridecare.db.models import Athlete
    from stridecare.runtime import Runtime
    from stridecare.settings import Settings

_PACKAGE = "stridecare_app.cli"


class _Commands(TyperGroup):
    """The top-level group: commands are imported when named, and errors a user can cause become one plain line
    instead of a traceback (a name that is no athlete handle, the database refusing a change or unreachable)."""

    def list_commands(self, ctx: Any) -> list[str]:  # typer's own click types: Any keeps overrides compatible
        """Every command, in the order ``--help`` teaches them."""
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command ``cmd_name``, importing the module that defines it the first time it is asked for."""
        found = self.commands.get(cmd_name)
        if found is not None or cmd_name not in COMMANDS:
            return found
        importlib.import_module(f"{_PACKAGE}.{COMMANDS[cmd_name].module}")
        # The module attached its commands to ``app``; typer turns them into click commands.
        found = typer.main.get_group(app).commands.get(cmd_name)
        if found is not None:
            self.add_command(found, cmd_name)
        return found

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The command list by section, from ``commands.py``: no command module is imported to show it."""
        width = max(len(name) for name in COMMANDS)
        limit = formatter.width - 6 - width
        sections: dict[str, list[tuple[str, str]]] = {}
        for name, entry in COMMANDS.items():
            short = textwrap.shorten(entry.help, limit, placeholder="...")
            # Names padded to one width, so the sections line up as one list.
            sections.setdefault(entry.section, []).append((name.ljust(width), short))
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context; Any keeps the override compatible
        """Run the command; known failures become ``stridecare: <sentence>`` and exit code 2 (1 for the
        database)."""
        try:
            return super().invoke(ctx)
        except InvalidHandle as exc:
            fail(str(exc))
        except Exception as exc:
            # A command that never touched the database cannot raise its errors: no need to import them.
            errors = sys.modules.get("sqlalchemy.exc")
            if errors is None or not isinstance(exc, errors.SQLAlchemyError) or state.verbose:
                raise  # not the database's, or the operator asked for the details
            fail(_database_message(exc), 1)


def _database_message(exc: Exception) -> str:
    from sqlalchemy.exc import IntegrityError, OperationalError  # deferred: start-up time (already loaded here)

    if isinstance(exc, IntegrityError):
        return (
            "the database refused the change: it conflicts with data already stored (perhaps written by another "
            "command at the same moment); run the command again"
        )
    if isinstance(exc, OperationalError):
        return "the database is unreachable or busy; check it is running and try again"
    return f"the database refused the command ({type(exc).__name__}); --verbose shows the details"


app = typer.Typer(
    name="stridecare",
    cls=_Commands,
    help=(
        "Foot care for runners: runs in from FIT folders and Strava, foot load out, and the routine that fits "
        "after every run.\n\n"
        "Start with `stridecare run` (everything in one process, SQLite, no server), drop FIT files into the "
        "inbox it prints, and watch prompts arrive. Settings come from STRIDECARE_* environment variables, "
        "--config FILE, or the data home's settings file that `stridecare config set` writes; `stridecare "
        "settings` lists them."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class _State:
    config: Path | None = None
    verbose: bool = False


state = _State()


@app.callback()
def _global(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Env-style settings file (STRIDECARE_*=… lines).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG.")] = False,
) -> None:
    state.config = config
    state.verbose = verbose


def settings() -> Settings:
    """The settings for this invocation; a clear message and exit 2 when they cannot be read."""
    from pydantic import ValidationError  # deferred: start-up time (--help reads no settings)

    from stridecare.logging import setup_logging  # deferred: start-up time
    from stridecare.settings import load_settings  # deferred: start-up time

    try:
        s = load_settings(state.config)
    except ValidationError as exc:
        fail("invalid settings: " + "; ".join(_setting_error(e) for e in exc.errors()))
    except (FileNotFoundError, ValueError) as exc:
        fail(f"cannot read settings: {exc}")
    if state.verbose:
        s = s.model_copy(update={"log_level": "DEBUG"})
    setup_logging(s)
    collector.release()  # the command's work begins here
    return s


def runtime() -> Runtime:
    """Open the database for this invocation (migrating it on first use)."""
    from stridecare.runtime import Runtime  # deferred: start-up time (--help opens no database)

    s = settings()
    try:
        return Runtime.open(s)
    except Exception as exc:  # a wrong URL or a server that is down: say so in one line
        fail(
            f"cannot open the database at {_redact(s.effective_database_url)}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        )


def _setting_error(error: Any) -> str:
    """One setting's problem as ``STRIDECARE_NAME: message (got 'value')``."""
    name = "STRIDECARE_" + "_".join(str(part).upper() for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    return f"{name}: {message}" + (f" (got {given!r})" if isinstance(given, str | int | float) else "")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url  # deferred: start-up time (only on a failure to open)

    return make_url(url).render_as_string(hide_password=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    typer.echo(f"stridecare: {message}", err=True)
    raise typer.Exit(code)


def athlete_or_fail(session: Session, handle: str) -> Athlete:
    """The athlete named ``handle``; an unknown one ends the command with its message, like :func:`fail`."""
    from stridecare.db.athletes import UnknownAthlete, get_athlete  # deferred: start-up time

    try:
        return get_athlete(session, handle)
    except UnknownAthlete as exc:
        fail(str(exc))


def emit_json(value: object) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")
