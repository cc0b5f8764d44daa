"""``stridecare status``, ``prompts`` and ``done``: what the feet took, and what to do about it."""

from __future__ import annotations

from typing import Annotated

import typer

from recommender.feedback import UnknownPrompt, record_done
from recommender.status import athlete_status, prompts_for
from stridecare.db.athletes import UnknownAthlete, get_athlete
from stridecare_app.cli.main import app, emit_json, fail, runtime

AthleteOpt = Annotated[str | None, typer.Option(help="Athlete handle (default: STRIDECARE_DEFAULT_ATHLETE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]


@app.command()
def status(athlete: AthleteOpt = None, as_json: JsonOpt = False) -> None:
    """Acute and chronic foot load, ACWR (after 28 days, as information), flags, recent runs, pending prompts.

    Flags say "consider", never "you will": none of them predicts an individual injury.
    """
    rt = runtime()
    with rt.db.transaction() as session:
        try:
            who = get_athlete(session, athlete or rt.settings.default_athlete)
        except UnknownAthlete as exc:
            fail(str(exc))
        data = athlete_status(session, rt.settings, who, rt.now())
    if as_json:
        emit_json(data)
        return
    typer.echo(f"{data['athlete']} on {data['as_of']}")
    typer.echo(f"  acute load (7-day)    {data['acute_load']:10.0f}")
    typer.echo(f"  chronic load (28-day) {data['chronic_load']:10.0f}")
    if data["acwr"] is not None:
        typer.echo(f"  ACWR                  {data['acwr']:10.2f}  (information only)")
    else:
        typer.echo(f"  ACWR                  shown after 28 days of history ({data['history_days']} so far)")
    for flag in data["flag_details"]:
        typer.echo(f"  flag {flag['flag']}: {flag['reason']}")
    typer.echo(f"  recent runs: {len(data['recent_runs'])}, prompts waiting: {len(data['pending_prompts'])}")


@app.command()
def prompts(
    athlete: AthleteOpt = None,
    limit: Annotated[int, typer.Option(help="How many of the newest prompts.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List prompts with their reasons, the rule that produced them and each delivery's state."""
    rt = runtime()
    with rt.db.transaction() as session:
        try:
            who = get_athlete(session, athlete or rt.settings.default_athlete)
        except UnknownAthlete as exc:
            fail(str(exc))
        data = prompts_for(session, who, limit)
    if as_json:
        emit_json(data)
        return
    if not data:
        typer.echo("no prompts yet")
    for p in data:
        state = ", ".join(f"{c} {s}" for c, s in p["deliveries"].items()) or "not delivered"
        done = "  done" if p["done_at"] else ""
        typer.echo(f"{p['id']}  {p['local_day']}  {p['kind']:15} {', '.join(p['routines'])}  [{state}]{done}")
        for reason in p["reasons"]:
            typer.echo(f"    {reason}")


@app.command()
def done(prompt: Annotated[str, typer.Argument(help="The prompt id (from `stridecare prompts`).")]) -> None:
    """Record a prompt's routines as done (the same as its "done" link); balance progresses with these."""
    rt = runtime()
    try:
        with rt.db.transaction() as session:
            p = record_done(session, prompt, rt.now())
            routines = ", ".join(p.routines)
    except UnknownPrompt as exc:
        fail(str(exc))
    typer.echo(f"recorded {routines} as done")
