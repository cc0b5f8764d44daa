"""``stridecare admin link|password|logout``: the admin's login to the web pages.

The home page, every dashboard and ``/metrics`` need the admin session (``stridecare_app.web.auth``); these
commands, run on the machine that runs stridecare (with compose: ``docker compose exec web stridecare admin
…``), open and close it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from stridecare_app.cli.app import app, fail, runtime
from stridecare_app.web.auth import LOGIN_LINK_TTL, MAX_PASSWORD_CHARS, end_sessions, login_url, set_password

admin_app = typer.Typer(
    help=(
        "The admin's login to the web pages: a one-time link, an optional password, ending every session. "
        "`stridecare run` and `stridecare web` print a link when they start."
    ),
    no_args_is_help=True,
)
app.add_typer(admin_app, name="admin")

MIN_PASSWORD_CHARS = 10


@admin_app.command("link")
def link() -> None:
    """Print a fresh one-time login link (valid one hour, spent when used).

    Open it in the browser you want to log in with: it sets a session cookie there (7 days) that opens the
    home page, every athlete's dashboard and /metrics. The link is printed alone on stdout, so that
    `stridecare admin link | xclip` or a script can take it.
    """
    rt = runtime()
    try:
        url = login_url(rt.settings, rt.now())
    finally:
        rt.close()
    minutes = int(LOGIN_LINK_TTL.total_seconds() // 60)
    typer.echo(url)
    typer.echo(f"stridecare: one-time login link, valid {minutes} minutes", err=True)


@admin_app.command("password")
def password(
    clear: Annotated[bool, typer.Option("--clear", help="Remove the password (login links still work).")] = False,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from the first line of stdin (for scripts).")
    ] = False,
) -> None:
    """Set the admin password, with which /login opens a session without a link.

    Asked for twice on the terminal (never an argument: it would stay in the shell's history); stored as an
    scrypt hash in the database. Setting or clearing it ends every admin session.
    """
    if clear:
        secret: str | None = None
    elif stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        secret = typer.prompt("New admin password", hide_input=True, confirmation_prompt=True)
    if secret is not None and not MIN_PASSWORD_CHARS <= len(secret) <= MAX_PASSWORD_CHARS:
        fail(f"the password must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    rt = runtime()
    try:
        with rt.db.transaction() as session:
            set_password(session, secret)
    finally:
        rt.close()
    typer.echo(
        "stridecare: admin password " + ("removed" if secret is None else "set") + "; every admin session ended",
        err=True,
    )


@admin_app.command("logout")
def logout() -> None:
    """End every admin session: each browser must log in again (with a new link or the password)."""
    rt = runtime()
    try:
        with rt.db.transaction() as session:
            end_sessions(session)
    finally:
        rt.close()
    typer.echo("stridecare: every admin session ended", err=True)
