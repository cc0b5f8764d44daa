"""``stridecare intervals|garmin connect|disconnect``, ``stridecare sources`` and ``stridecare sync``: accounts
that runs are pulled from, with no hands.

Secrets never travel on the command line: the intervals.icu API key and the Garmin password are read from a
hidden prompt, or from standard input when it is not a terminal (one value a line), and only what a pull needs
is stored, encrypted (the key; Garmin's tokens, never the password).
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

import typer
from sqlalchemy import select

from ingest.connectors.base import ConnectorError
from ingest.connectors.garmin import login_tokens
from ingest.connectors.intervals import IntervalsConnector, credentials_json
from ingest.connectors.ledger import account_states, connect, disconnect
from ingest.connectors.poller import ItemResult, PullResult, sync_account
from recommender.planner import replan
from stridecare.db.models import Athlete, ConnectorAccount, Run
from stridecare.db.run_json import run_json
from stridecare.runtime import Runtime
from stridecare_app.cli.app import app, emit_json, fail, runtime

intervals_app = typer.Typer(
    help="Pull runs from intervals.icu (it already receives them from Garmin, Coros, Polar, Suunto, Wahoo, Zwift).",
    no_args_is_help=True,
)
garmin_app = typer.Typer(
    help="Pull runs from Garmin Connect (unofficial; needs pip install 'stridecare[garmin]').", no_args_is_help=True
)
app.add_typer(intervals_app, name="intervals")
app.add_typer(garmin_app, name="garmin")

AthleteOpt = Annotated[
    str | None, typer.Option("--athlete", "-a", help="Athlete handle (default STRIDECARE_DEFAULT_ATHLETE).")
]


def _secret(prompt: str, *, hide: bool = True) -> str:
    """A value from a prompt (hidden for secrets) on a terminal, else the next line of standard input."""
    value = str(typer.prompt(prompt, hide_input=hide)) if sys.stdin.isatty() else sys.stdin.readline()
    value = value.strip()
    if not value:
        fail(f"no {prompt.lower()} given (on a terminal it is asked for; else one line on standard input)")
    return value


@intervals_app.command("connect")
def intervals_connect(
    athlete: AthleteOpt = None,
    intervals_athlete: Annotated[
        str, typer.Option("--intervals-athlete", help="The intervals.icu athlete id (0: the key's own athlete).")
    ] = "0",
) -> None:
    """Connect an intervals.icu account: the API key (intervals.icu → Settings → Developer Settings) is read
    from a hidden prompt, or from standard input when it is not a terminal, checked with one call, and
    stored encrypted. New runs then arrive within about 15 minutes, or now with `stridecare sync`."""
    rt = runtime()
    name = athlete or rt.settings.default_athlete
    key = _secret("intervals.icu API key")
    probe = IntervalsConnector(rt.settings, credentials_json(key, intervals_athlete))
    try:
        found = probe.check()
    except ConnectorError as exc:
        fail(f"the key was not stored: {exc}")
    account_key = str(found["id"])
    connect(rt.db, rt.settings, name, "intervals", account_key, credentials_json(key, account_key), rt.now())
    who = f" ({found['name']})" if found.get("name") else ""
    typer.echo(
        f"connected intervals.icu athlete {account_key}{who} for {name}; new runs arrive within about "
        f"{rt.settings.connector_poll_interval_s / 60:.0f} minutes, or now with `stridecare sync --athlete {name}`"
    )


@intervals_app.command("disconnect")
def intervals_disconnect(athlete: AthleteOpt = None) -> None:
    """Forget the intervals.icu key (runs already stored are kept)."""
    _disconnect("intervals", athlete)


@garmin_app.command("connect")
def garmin_connect(athlete: AthleteOpt = None) -> None:
    """Connect Garmin Connect: asks for the email and password (used once, never stored) and, when the account
    has two-factor sign-in, the code Garmin sends; stores only the tokens, encrypted. Unofficial: Garmin
    offers individuals no API, so this may stop working or get the account challenged (docs/connectors.md)."""
    rt = runtime()
    name = athlete or rt.settings.default_athlete
    email = _secret("Garmin email", hide=False)
    password = _secret("Garmin password")
    try:
        account_key, tokens = login_tokens(email, password, lambda: _secret("Garmin MFA code", hide=False))
    except ConnectorError as exc:
        fail(f"not connected: {exc}")
    connect(rt.db, rt.settings, name, "garmin", account_key, tokens, rt.now())
    typer.echo(
        f"connected Garmin Connect {account_key} for {name}; at most {rt.settings.garmin_downloads_per_hour} "
        f"activities are downloaded an hour (Garmin blocks faster clients); `stridecare sources` shows progress"
    )


@garmin_app.command("disconnect")
def garmin_disconnect(athlete: AthleteOpt = None) -> None:
    """Forget the Garmin tokens (runs already stored are kept)."""
    _disconnect("garmin", athlete)


def _disconnect(provider: str, athlete: str | None) -> None:
    rt = runtime()
    name = athlete or rt.settings.default_athlete
    if not disconnect(rt.db, name, provider):
        fail(f"{name} has no {provider} account")
    typer.echo(f"{provider}: credentials of {name} forgotten; runs already stored are kept")


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@app.command("sources")
def sources(
    athlete: Annotated[str | None, typer.Option("--athlete", "-a", help="Only this athlete.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per inbox and account.")] = False,
) -> None:
    """Where each athlete's runs come from: watched folders, and accounts with their state (connected, last
    and next pull, cooldown, last error in plain words, activities seen / stored / skipped / waiting)."""
    rt = runtime()
    inboxes = [(who, path) for who, path in rt.settings.inbox_map() if athlete is None or who == athlete]
    accounts = account_states(rt.db, athlete)
    if as_json:
        for who, path in inboxes:
            emit_json({"kind": "inbox", "athlete": who, "path": str(path), "exists": path.is_dir()})
        for state in accounts:
            emit_json(state.as_json())
        return
    for who, path in inboxes:
        typer.echo(f"{who}: inbox {path}" + ("" if path.is_dir() else " (not there yet)"))
    for s in accounts:
        line = f"{s.athlete}: {s.provider} {s.account}: {s.state}"
        line += f", last pull {_when(s.last_pull)}, next {_when(s.next_pull)}"
        if s.cooldown_until is not None and s.cooldown_until > rt.now():
            line += f", cooling down until {_when(s.cooldown_until)}"
        line += f"; {s.seen} seen, {s.stored} stored, {s.skipped} skipped"
        if s.waiting:
            line += f", {s.waiting} waiting"
        if s.failed:
            line += f", {s.failed} failed"
        typer.echo(line)
        if s.last_error:
            typer.echo(f"    {s.last_error}")
    if not inboxes and not accounts:
        typer.echo("no sources" + (f" for {athlete}" if athlete else ""))


def _accounts(rt: Runtime, athlete: str | None) -> list[int]:
    with rt.db.read() as session:
        query = (
            select(ConnectorAccount.id)
            .join(Athlete, Athlete.id == ConnectorAccount.athlete_id)
            .where(ConnectorAccount.credentials_enc.is_not(None))
            .order_by(Athlete.name, ConnectorAccount.provider, ConnectorAccount.id)
        )
        if athlete is not None:
            query = query.where(Athlete.name == athlete)
        return list(session.scalars(query))


def _with_loads(rt: Runtime, item: ItemResult) -> dict[str, Any]:
    """The item's JSON with its runs as stored now (their load is known once the replan ran)."""
    out = item.as_json()
    ids = [int(r["id"]) for r in item.runs if r.get("id") is not None]
    if ids:
        with rt.db.read() as session:
            fresh = {run.id: run_json(run) for run in session.scalars(select(Run).where(Run.id.in_(ids)))}
        out["runs"] = [fresh.get(int(r["id"]), r) if r.get("id") is not None else r for r in item.runs]
    return out


def _item_line(item: ItemResult, out: dict[str, Any]) -> str:
    runs = ", ".join(
        f"{r['sport']} {r['distance_m'] / 1000:.2f} km" + ("" if r.get("load") is None else f", load {r['load']:,.0f}")
        for r in out["runs"]
    )
    detail = runs or (item.reason or "")
    return f"{item.status:9} {item.source} {item.activity_id}" + (f"  {detail}" if detail else "")


@app.command("sync")
def sync(
    athlete: Annotated[str | None, typer.Option("--athlete", "-a", help="Only this athlete's accounts.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="List from this day (YYYY-MM-DD) instead of the cursor.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per activity on stdout.")] = False,
) -> None:
    """Pull now from every connected account (not waiting for the schedule) and store the new runs, with their
    load and prompts. Prints one line per new activity (with --json: the `ingest --json` object plus `source`
    and `activity_id`); exits 2 when an activity failed or an account could not be pulled. Each provider's
    limits still hold: nothing is asked during a cooldown, and Garmin's hourly budget leaves the rest for later."""
    rt = runtime()
    oldest = None
    if since is not None:
        try:
            oldest = datetime.combine(date.fromisoformat(since), time(0), tzinfo=UTC)
        except ValueError:
            fail(f"--since {since!r}: give a day as YYYY-MM-DD")
    ids = _accounts(rt, athlete)
    if not ids:
        fail("no connected accounts" + (f" for {athlete}" if athlete else "") + "; see `stridecare intervals connect`")
    troubled = False
    for account_id in ids:
        result: PullResult = sync_account(rt.db, rt.settings, account_id, rt.now, since=oldest)
        if result.replan_owed or result.items:
            # In this process, not queued: the figures are printed below. Also when no store owed it: a sync
            # killed before its replan left the mark set, and no worker may be running to finish it.
            replan(rt.db, rt.settings, result.athlete_id, rt.now())
        for item in result.items:
            out = _with_loads(rt, item)
            troubled |= item.status in ("failed", "rejected")
            if as_json:
                emit_json(out)
            else:
                typer.echo(_item_line(item, out))
        if result.stopped:
            troubled |= result.trouble
            typer.echo(f"{result.athlete}: {result.provider}: {result.stopped}", err=True)
        elif not as_json and not result.items:
            typer.echo(f"{result.athlete}: {result.provider}: nothing new")
    if troubled:
        raise typer.Exit(2)
