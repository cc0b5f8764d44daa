"""Commands that run or inspect the service: ``run``, ``migrate``, ``web``, ``settings``."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import SecretStr
from rich.console import Console

from stridecare.logging import setup_console
from stridecare.settings import Settings
from stridecare_app.cli.app import app, emit_json, runtime, settings, state

err = Console(stderr=True, soft_wrap=True)


@app.command()
def run(
    concurrency: Annotated[int, typer.Option(help="Worker threads.")] = 2,
    web: Annotated[bool, typer.Option(help="Serve the web app (done links, Strava connect) too.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only warnings and errors.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per event on stdout.")] = False,
) -> None:
    """Run everything in one process: watcher, worker, scheduler and web app.

    On the embedded default (no STRIDECARE_BROKER_URL) this needs no server: the database and the queue are
    SQLite files in the data home, so a restart loses no run and no prompt. Drop FIT files into the inbox
    printed below; prompts go to the channels each athlete has (the console log by default). The console
    prints a line per file, per prompt (or why a run got none) and every warning and error.
    """
    # deferred: start-up time of the command line (the runner brings Celery and the watcher)
    from stridecare_app.runner import run_all
    from stridecare_app.web.listen import PortTaken, listen

    rt = runtime()
    setup_console(rt.settings, "json" if as_json else "quiet" if quiet else "lines", verbose=state.verbose)
    s = rt.settings
    try:
        sock = listen(s.web_host, s.web_port) if web else None
    except PortTaken as taken:
        err.print(f"stridecare: {taken}")
        raise typer.Exit(1) from None
    err.print(f"stridecare: data in {s.data_home}")
    for athlete, root in s.inbox_map():
        err.print(f"stridecare: inbox for {athlete}: {root}")
    err.print(f"stridecare: prompts without email or webhook are written to {s.data_home / 'prompts.log'}")
    if web:
        err.print(f"stridecare: web app on http://{s.web_host}:{s.web_port}/")
    run_all(rt, concurrency=concurrency, web=sock, verbose=state.verbose)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (the distributed deployment runs this once before the rest)."""
    rt = runtime()
    err.print(f"database at {rt.db.engine.url.render_as_string(hide_password=True)} is up to date")


@app.command()
def web(
    host: Annotated[str | None, typer.Option(help="Bind address (default STRIDECARE_WEB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default STRIDECARE_WEB_PORT).")] = None,
) -> None:
    """Serve the web app: done links, unsubscribe, Strava connect and webhooks, health and metrics."""
    # deferred: start-up time of the command line (uvicorn)
    from stridecare_app.web.listen import PortTaken
    from stridecare_app.web.server import serve

    rt = runtime()
    try:
        serve(rt, host=host, port=port)
    except PortTaken as taken:
        err.print(f"stridecare: {taken}")
        raise typer.Exit(1) from None


@app.command("settings")
def show_settings(
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Show every setting with its environment variable and current value (secrets hidden)."""
    s = settings()
    rows: list[tuple[str, str]] = []
    for name in Settings.model_fields:
        if name == "load":
            continue
        rows.append((f"STRIDECARE_{name.upper()}", _show(getattr(s, name))))
    for name in type(s.load).model_fields:
        rows.append((f"STRIDECARE_LOAD_{name.upper()}", _show(getattr(s.load, name))))
    if as_json:
        emit_json(dict(rows))
        return
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def _show(value: object) -> str:
    if isinstance(value, SecretStr):
        return "*** (set)"
    if isinstance(value, list):
        return ",".join("***" if isinstance(v, SecretStr) else str(v) for v in value)
    return "" if value is None else str(value)
