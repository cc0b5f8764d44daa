"""``stridecare config``: the data home's settings file, read by `stridecare run`, every other command and the
compose services.

The file is TOML (``DATA_HOME/stridecare.toml``, one ``name = value`` per setting, the model's constants under
``[load]``), written here with tomlkit so that a person's comments and order survive. Values are checked as the
settings would read them before the file changes, and the file is replaced whole (written aside, mode 0600:
it may hold secrets). ``STRIDECARE_*`` variables still win over it; every command here says when one does.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import tomlkit
import typer
from pydantic import SecretStr, ValidationError
from tomlkit.items import Table
from tomlkit.toml_document import TOMLDocument

from stridecare.settings import LoadModelSettings, Settings, set_above_the_file, settings_file_location
from stridecare_app.cli.app import app, emit_json, fail, state

config_app = typer.Typer(
    help=(
        "The settings file in the data home (DATA_HOME/stridecare.toml): `stridecare run`, every other command "
        "and the compose services read it, so a setting made here holds in every terminal. STRIDECARE_* "
        "environment variables still win over it. Names as in `stridecare settings`, with or without the "
        "STRIDECARE_ prefix, in any case: `stridecare config set smtp_host smtp.example.org`."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(config_app, name="config")

NameArg = Annotated[str, typer.Argument(help="A setting: smtp_host, STRIDECARE_SMTP_HOST or load.default_mass_kg.")]
ValueArg = Annotated[str, typer.Argument(help="The value, as its variable would take it.")]

_HEADER = (
    "stridecare settings (`stridecare config set NAME VALUE` writes this file; STRIDECARE_* variables win over it)"
)


def _all_names() -> list[str]:
    top = [name for name in Settings.model_fields if name != "load"]
    return top + [f"load.{name}" for name in LoadModelSettings.model_fields]


def setting_name(raw: str) -> str:
    """``smtp_host`` for ``STRIDECARE_SMTP_HOST``, ``smtp-host`` or ``SMTP_HOST``; ``load.NAME`` for a model
    constant (``STRIDECARE_LOAD_NAME``). Ends the command with the closest names for one that is no setting."""
    key = raw.strip()
    if key.upper().startswith("STRIDECARE_"):
        key = key[len("STRIDECARE_") :]
    key = key.lower().replace("-", "_")
    if key.startswith("load__"):
        key = "load." + key[len("load__") :]
    elif key.startswith("load_") and key[len("load_") :] in LoadModelSettings.model_fields:
        key = "load." + key[len("load_") :]
    if key == "data_home":
        fail("the data home holds this file, so it cannot be set in it: set STRIDECARE_DATA_HOME in the environment")
    if key not in _all_names():
        close = difflib.get_close_matches(key, _all_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `stridecare settings` lists them"
        fail(f"no setting named {raw!r}{hint}")
    return key


def _is_secret(name: str) -> bool:
    if name.startswith("load."):
        return False
    return "SecretStr" in str(Settings.model_fields[name].annotation)


def checked_value(name: str, text: str) -> Any:
    """``text`` as the settings read it (validated, with the setting's own checks), in its TOML form."""
    try:
        if name.startswith("load."):
            field = name.removeprefix("load.")
            value: Any = getattr(LoadModelSettings.model_validate({field: text}), field)
        else:
            value = getattr(Settings.model_validate({name: text}), name)
    except ValidationError as exc:
        message = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        fail(f"{name}: {message} (got {text!r}); the settings file is unchanged")
    return _toml(value)


def _toml(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_toml(v) for v in value]
    return value


def _read(path: Path) -> TOMLDocument:
    if not path.is_file():
        doc = tomlkit.document()
        doc.add(tomlkit.comment(_HEADER))
        return doc
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except tomlkit.exceptions.TOMLKitError as exc:
        fail(f"cannot read {path}: {exc}; fix or remove it")


def _write(path: Path, doc: TOMLDocument) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stridecare-", suffix=".toml", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(tomlkit.dumps(doc))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _values(doc: TOMLDocument) -> dict[str, Any]:
    """Every setting in the file as ``name`` or ``load.name`` → plain value."""
    out: dict[str, Any] = {}
    for key, value in doc.unwrap().items():
        if key == "load" and isinstance(value, dict):
            out |= {f"load.{k}": v for k, v in value.items()}
        else:
            out[key] = value
    return out


def _shown(name: str, value: Any) -> str:
    if _is_secret(name):
        return "*** (set)"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _override_note(name: str) -> str | None:
    variable = set_above_the_file(state.config).get(name)
    return f"{variable} in the environment wins over it" if variable else None


@config_app.command("set")
def set_(name: NameArg, value: ValueArg) -> None:
    """Set one setting in the settings file (checked first; the file keeps its comments).

    Lists are comma-separated (`config set inboxes "me=~/watch,anna=/srv/anna"`). A running `stridecare run`
    reads the file when it starts: restart it for a change to take effect.
    """
    key = setting_name(name)
    stored = checked_value(key, value)
    path = settings_file_location(state.config)
    doc = _read(path)
    if key.startswith("load."):
        table = doc.get("load")
        if not isinstance(table, Table):
            table = tomlkit.table()
            doc["load"] = table
        table[key.removeprefix("load.")] = stored
    else:
        doc[key] = stored
    _write(path, doc)
    typer.echo(f"{key} = {_shown(key, stored)} in {path}")
    note = _override_note(key)
    if note:
        typer.echo(f"stridecare: note: {note}", err=True)


@config_app.command("unset")
def unset(name: NameArg) -> None:
    """Remove one setting from the settings file: its default (or its variable) applies again."""
    key = setting_name(name)
    path = settings_file_location(state.config)
    doc = _read(path)
    table: Any = doc
    field = key
    if key.startswith("load."):
        table, field = doc.get("load"), key.removeprefix("load.")
    if not isinstance(table, dict) or field not in table:
        typer.echo(f"{key} is not in {path}; nothing to do")
        return
    del table[field]
    if key.startswith("load.") and not table:
        del doc["load"]
    _write(path, doc)
    typer.echo(f"{key} removed from {path}")


@config_app.command("show")
def show(as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False) -> None:
    """The settings file's path and every setting in it, secrets hidden, and which ones the environment
    overrides. `stridecare settings` shows the values in effect."""
    path = settings_file_location(state.config)
    values = _values(_read(path)) if path.is_file() else {}
    above = set_above_the_file(state.config)
    if as_json:
        emit_json(
            {
                "file": str(path),
                "exists": path.is_file(),
                "settings": {k: _shown(k, v) if _is_secret(k) else v for k, v in values.items()},
                "overridden_by": {k: above[k] for k in values if k in above},
            }
        )
        return
    if not values:
        typer.echo(f"{path}: no settings yet; `stridecare config set NAME VALUE` adds one")
        return
    typer.echo(f"{path}:")
    width = max(len(k) for k in values)
    for key, value in values.items():
        note = f"   ({above[key]} in the environment wins)" if key in above else ""
        typer.echo(f"  {key:<{width}} = {_shown(key, value)}{note}")
