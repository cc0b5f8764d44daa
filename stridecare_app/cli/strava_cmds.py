"""``stridecare strava connect|subscribe|backfill|rotate-keys|status``: Strava from the command line.

``connect`` works on a headless server: it prints the authorize URL, the athlete approves in any browser, and
the address the browser ends on (or just its ``code``) is pasted back with ``--code``. No command prints a
token, the client secret or the verify token.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from ingest.strava.errors import APP_INACTIVE_MESSAGE
from ingest.strava.ratelimit import app_status, record_inactive
from stridecare.crypto import SecretsError
from stridecare.db.athletes import UnknownAthlete, ensure_athlete, get_athlete
from stridecare.db.models import Athlete, StravaAccount, StravaEvent
from stridecare.runtime import Runtime
from stridecare_app.cli.app import app, emit_json, fail, runtime

strava_app = typer.Typer(help="Connect Strava, receive its push events and import your history.", no_args_is_help=True)
app.add_typer(strava_app, name="strava")

err = Console(stderr=True)

# Strava always accepts localhost as a redirect target; on a headless server the page need not load: the
# address bar holds the code.
HEADLESS_REDIRECT = "http://localhost/exchange_token"
# Requests per in-process backfill step: progress is shown and committed at least this often.
CLI_STEP_REQUESTS = 50

AthleteOpt = Annotated[
    str | None, typer.Option("--athlete", "-a", help="Athlete handle (default STRIDECARE_DEFAULT_ATHLETE).")
]


def _athlete_id(rt: Runtime, name: str | None) -> tuple[int, str]:
    handle = name or rt.settings.default_athlete
    with rt.db.transaction() as session:
        try:
            athlete = get_athlete(session, handle)
        except UnknownAthlete as exc:
            if handle != rt.settings.default_athlete:
                fail(str(exc))
            # The default athlete exists implicitly, as it does for the inbox folder.
            athlete = ensure_athlete(session, handle, rt.settings)
        return athlete.id, athlete.name


def _account_of(rt: Runtime, athlete_id: int) -> StravaAccount | None:
    with rt.db.read() as session:
        return session.scalar(select(StravaAccount).where(StravaAccount.athlete_id == athlete_id))


def _parse_pasted(value: str) -> tuple[str, str | None, str | None]:
    """``(code, state, scope)`` from a pasted redirect address, or ``(value, None, None)`` for a bare code."""
    text = value.strip()
    if "code=" not in text and "error=" not in text:
        return text, None, None
    query = dict(parse_qsl(urlsplit(text).query if "?" in text else text))
    if query.get("error"):
        fail("Strava access was not granted (the athlete declined); run connect again")
    code = query.get("code")
    if not code:
        fail("no code= in the pasted address")
    return code, query.get("state"), query.get("scope")


def _probe_activity_scope(rt: Runtime, account_id: int) -> bool:
    """With a bare code Strava's accepted scope is unknown: one activity-list read tells."""
    # deferred: start-up time of the command line (stravalib, which only the Strava commands need)
    from stravalib import exc as strava_exc

    from ingest.strava.oauth import athlete_client

    client = athlete_client(rt.db, rt.settings, account_id, now=rt.now())
    try:
        client.protocol.get("/athlete/activities", per_page=1)
    except strava_exc.AccessUnauthorized:
        return False
    except strava_exc.ApplicationInactive:
        record_inactive(rt.db, rt.now())  # the scope cannot be told now; the first import will
    return True


def _print_connect_link(name: str) -> None:
    # deferred: start-up time of the command line (stravalib, which only the Strava commands need)
    from ingest.strava.oauth import CONNECT_LINK_TTL
    from stridecare_app.web.strava import connect_link

    rt = runtime()
    athlete_id, handle = _athlete_id(rt, name)
    url = connect_link(rt, athlete_id)
    hours = int(CONNECT_LINK_TTL.total_seconds() // 3600)
    err.print(f"Send this link to {handle!r}; it connects their Strava account, works once and for {hours} h:")
    typer.echo(url)


@strava_app.command()
def connect(
    athlete: AthleteOpt = None,
    code: Annotated[
        str | None,
        typer.Option(help="The code Strava returned, or the whole address the browser ended on after approving."),
    ] = None,
    scope: Annotated[
        str | None, typer.Option(help="The scope Strava returned (read from a pasted address when given).")
    ] = None,
    redirect_uri: Annotated[
        str | None,
        typer.Option(help="Where Strava sends the browser back (default: localhost, fine on a headless server)."),
    ] = None,
    link: Annotated[
        str | None,
        typer.Option(
            "--link",
            metavar="ATHLETE",
            help="Print a signed, single-use web link (valid 24 h) with which ATHLETE connects Strava themselves.",
        ),
    ] = None,
) -> None:
    """Connect a Strava account: prints the authorize URL; run again with --code to finish.

    Open the printed URL in any browser, approve (keep "View data about your activities" ticked), then copy
    the address the browser ends on - it need not load - and run `stridecare strava connect --code 'ADDRESS'`.
    With --link ATHLETE it prints a link to this server's /strava/connect page instead, for the athlete to
    open in their own browser.
    """
    if link is not None:
        _print_connect_link(link)
        return
    # deferred: start-up time of the command line (stravalib, which only the Strava commands need)
    from ingest.strava.oauth import (
        REQUESTED_SCOPE,
        StravaError,
        authorization_url,
        exchange_code,
        make_state,
        verify_state,
    )

    rt = runtime()
    athlete_id, handle = _athlete_id(rt, athlete)
    if code is None:
        state = make_state(rt.settings, athlete_id, rt.now())
        try:
            url = authorization_url(rt.settings, redirect_uri or HEADLESS_REDIRECT, state)
        except StravaError as exc:
            fail(str(exc))
        err.print(f"Open this address in a browser and approve access for athlete {handle!r}:")
        typer.echo(url)
        err.print(
            "Then copy the address the browser ends on (it may fail to load - that is fine) and run:\n"
            f"  stridecare strava connect --athlete {handle} --code 'PASTED_ADDRESS'"
        )
        if not sys.stdin.isatty():
            return
        pasted = typer.prompt("Pasted address or code (empty to stop)", default="", show_default=False)
        if not pasted.strip():
            return
        code = pasted
    bare, state_in, scope_in = _parse_pasted(code)
    accepted = scope_in or scope
    # On the command line the operator carries the code across; a state only guards a browser against login
    # CSRF. A pasted address's state is still verified (it names the athlete the URL was made for).
    state = state_in or make_state(rt.settings, athlete_id, rt.now())
    try:
        # Before the code is spent: the state must name the athlete being connected.
        if verify_state(rt.settings, state, rt.now()) != athlete_id:
            fail("the pasted address was made for another athlete; connect again for this one")
        connected = exchange_code(
            rt.db,
            rt.settings,
            code=bare,
            state=state,
            accepted_scope=accepted or ",".join(REQUESTED_SCOPE),
            now=rt.now(),
        )
    except StravaError as exc:
        fail(str(exc))
    if accepted is None and not _probe_activity_scope(rt, connected.account_id):
        if connected.created:
            with rt.db.transaction() as session:
                account = session.get(StravaAccount, connected.account_id)
                if account is not None:
                    session.delete(account)
        fail(
            "Strava was connected without access to your activities. Connect again and keep "
            "'View data about your activities' ticked."
        )
    err.print(
        f"Connected Strava athlete {connected.strava_athlete_id} to {handle!r} (scope {connected.scope}). "
        "Import the history with `stridecare strava backfill` (a running worker also does it by itself)."
    )


@strava_app.command()
def subscribe(
    callback_url: Annotated[str, typer.Option("--callback-url", help="Public URL of this server's /strava/webhook.")],
) -> None:
    """Create the app's push subscription; Strava validates it by calling the callback URL at once.

    Prints the subscription id to put in STRIDECARE_STRAVA_SUBSCRIPTION_ID (events naming any other
    subscription are ignored). The web app must be running with the same STRIDECARE_STRAVA_VERIFY_TOKEN.
    """
    # deferred: start-up time of the command line (stravalib, which only the Strava commands need)
    from stravalib import exc as strava_exc

    from ingest.strava.client import app_client

    rt = runtime()
    s = rt.settings
    if not s.strava_client_id or s.strava_client_secret is None:
        fail("set STRIDECARE_STRAVA_CLIENT_ID and STRIDECARE_STRAVA_CLIENT_SECRET first")
    if s.strava_verify_token is None:
        fail("set STRIDECARE_STRAVA_VERIFY_TOKEN (any random string) for the web app and this command")
    if not callback_url.startswith(("https://", "http://")):
        fail("--callback-url must be an http(s) URL ending in /strava/webhook")
    try:
        client_id = int(s.strava_client_id)
    except ValueError:
        fail("STRIDECARE_STRAVA_CLIENT_ID must be Strava's numeric client id")
    try:
        subscription = app_client(s).create_subscription(
            client_id=client_id,
            client_secret=s.strava_client_secret.get_secret_value(),
            callback_url=callback_url,
            verify_token=s.strava_verify_token.get_secret_value(),
        )
    except strava_exc.Fault as exc:
        response = exc.response
        status = response.status_code if response is not None else None
        detail = ""
        if response is not None:
            try:
                detail = str(response.json().get("errors", ""))[:300]
            except ValueError:
                detail = ""
        fail(f"Strava refused the subscription (HTTP {status}) {detail}".rstrip())
    if subscription.id is None:
        fail("Strava did not return a subscription id")
    err.print(f"Subscribed; Strava validated {callback_url}. Set this for the web app and the workers:")
    typer.echo(f"STRIDECARE_STRAVA_SUBSCRIPTION_ID={subscription.id}")


@strava_app.command()
def backfill(
    athlete: AthleteOpt = None,
    since: Annotated[
        str | None, typer.Option(help="Only import activities started on or after this date (YYYY-MM-DD).")
    ] = None,
    restart: Annotated[bool, typer.Option(help="Start again from the newest activity.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import the Strava history, newest first, within the rate limits; safe to interrupt and run again.

    When the rate limit is reached the import pauses; the command says when it resumes, and a running worker
    continues it by itself then (or run this command again).
    """
    # deferred: start-up time of the command line (stravalib, which only the Strava commands need)
    from ingest.strava.backfill import BackfillProgress
    from ingest.strava.sync import backfill_account
    from recommender.planner import replan

    rt = runtime()
    athlete_id, handle = _athlete_id(rt, athlete)
    account = _account_of(rt, athlete_id)
    if account is None:
        fail(f"{handle!r} has no Strava account connected; run `stridecare strava connect` first")
    since_at: datetime | None = None
    if since is not None:
        try:
            since_at = datetime.combine(date.fromisoformat(since), time(), UTC)
        except ValueError:
            fail(f"--since {since!r} is not a date (YYYY-MM-DD)")
    if account.backfill_state == "done" and not restart and since_at is None:
        err.print(f"The Strava history of {handle!r} is already imported; --restart imports it again.")
        return

    start = rt.now()
    span = (start - since_at).total_seconds() if since_at is not None else None
    columns = [
        SpinnerColumn(),
        TextColumn("[bold]Strava[/bold] {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[runs]} runs, {task.fields[requests]} requests"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("starting", total=span, runs=0, requests=0)

        def draw(step: BackfillProgress) -> None:
            cursor = step.cursor
            done_part = (start - cursor).total_seconds() if span is not None and cursor is not None else None
            finished = span is not None and step.state in ("done", "error")
            bar.update(
                task,
                description=f"back to {cursor.date().isoformat() if cursor is not None else '-'}",
                completed=span if finished else (min(span, done_part) if span and done_part is not None else None),
                runs=step.stored,
                requests=step.requests,
            )

        result = backfill_account(
            rt,
            account.id,
            since=since_at,
            restart=restart,
            max_requests=CLI_STEP_REQUESTS,
            max_steps=None,
            on_step=draw,
            replan=lambda athlete_id: replan(rt.db, rt.settings, athlete_id, rt.now()),
        )
    if result is None:
        fail("a worker is importing this account's history right now; try again later")
    summary = {
        "athlete": handle,
        "state": result.state,
        "runs_stored": result.stored,
        "other_sports_skipped": result.skipped,
        "requests": result.requests,
        "streams": result.streams,
        "resume_at": result.resume_at.isoformat() if result.resume_at else None,
        "reason": result.reason or None,
    }
    if json_out:
        emit_json(summary)
    if result.state == "done":
        err.print(f"Done: {result.stored} runs stored, {result.requests} Strava requests.")
    elif result.state == "deferred" and result.resume_at is not None and result.reason == APP_INACTIVE_MESSAGE:
        err.print(
            f"Paused: {result.reason}. {result.stored} runs stored so far; nothing is deleted and no athlete needs to "
            "reconnect. Once the app's owner subscribes and reactivates it at https://www.strava.com/settings/api, "
            f"the import goes on by itself (Strava is asked again at most hourly, next "
            f"{result.resume_at.isoformat(timespec='minutes')})."
        )
    elif result.state == "deferred" and result.resume_at is not None:
        err.print(
            f"Paused ({result.reason}): {result.stored} runs stored so far. It resumes at "
            f"{result.resume_at.isoformat(timespec='minutes')} - a running worker continues it then, or run this "
            "command again after that time."
        )
    else:
        fail(f"stopped: {result.reason or result.state}; reconnect Strava with `stridecare strava connect`", 1)


@strava_app.command("rotate-keys")
def rotate_keys_cmd() -> None:
    """Re-encrypt every secret held at rest — Strava tokens, connector credentials (intervals.icu keys, Garmin
    tokens), webhook secrets, push URLs — with the newest key of STRIDECARE_ENCRYPTION_KEYS.

    Put the new key first in the list, keep the old ones after it, run this, then drop the old keys.
    """
    from ingest.connectors.ledger import rotate_credentials  # deferred: start-up time of the command line
    from ingest.strava.sync import rotate_keys  # deferred: start-up time of the command line (stravalib)

    rt = runtime()
    try:
        accounts, secrets = rotate_keys(rt)
        connectors = rotate_credentials(rt.db, rt.settings)
    except SecretsError as exc:
        fail(f"{exc}; keep the old key in STRIDECARE_ENCRYPTION_KEYS until this has run")
    err.print(
        f"Re-encrypted the tokens of {accounts} Strava accounts, the credentials of {connectors} connector "
        f"accounts and {secrets} channel secrets."
    )


@strava_app.command()
def status(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Connected accounts, their history import, and push events by status."""

    rt = runtime()
    with rt.db.read() as session:
        rows = session.execute(
            select(StravaAccount, Athlete.name).join(Athlete, Athlete.id == StravaAccount.athlete_id)
        ).all()
        accounts = [
            {
                "athlete": name,
                "strava_athlete_id": account.strava_athlete_id,
                "scope": account.scope,
                "connected_at": account.connected_at.isoformat(),
                "backfill": account.backfill_state,
                "backfill_back_to": account.backfill_before.isoformat() if account.backfill_before else None,
                "backfill_resume_at": (account.backfill_resume_at.isoformat() if account.backfill_resume_at else None),
                "backfill_detail": account.backfill_detail,
            }
            for account, name in rows
        ]
        events = {
            str(row[0]): int(row[1])
            for row in session.execute(select(StravaEvent.status, func.count()).group_by(StravaEvent.status))
        }
        app_state = app_status(session)
    data = {
        "configured": bool(rt.settings.strava_client_id),
        "subscription_id": rt.settings.strava_subscription_id,
        "app": app_state or {"state": "active"},
        "accounts": accounts,
        "events": events,
    }
    if json_out:
        emit_json(data)
        return
    typer.echo(f"Strava client configured: {'yes' if data['configured'] else 'no'}")
    if app_state is not None:
        # First: it explains every "deferred" below, and nothing else tells the operator what to do.
        typer.echo(
            f"Strava app: INACTIVE since {app_state['since']} - {app_state['message']}. Nothing is deleted and no "
            "athlete needs to reconnect: once the app's owner subscribes and reactivates it at "
            f"https://www.strava.com/settings/api, imports resume by themselves (next check {app_state['next_check']})."
        )
    typer.echo(f"Push subscription: {data['subscription_id'] or 'not set (events are ignored)'}")
    for a in accounts:
        back_to = str(a["backfill_back_to"] or "")[:10]
        typer.echo(
            f"  {a['athlete']}: Strava athlete {a['strava_athlete_id']}, scope {a['scope']}, history import "
            f"{a['backfill']}"
            + (f" (back to {back_to})" if back_to else "")
            + (f", resumes {a['backfill_resume_at']}" if a["backfill"] == "deferred" else "")
            + (" (paused while the app is inactive)" if app_state is not None and a["backfill"] != "done" else "")
        )
    if not accounts:
        typer.echo("  no accounts connected")
    typer.echo("Events: " + (", ".join(f"{k} {v}" for k, v in sorted(events.items())) or "none"))
