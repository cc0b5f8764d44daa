"""``stridecare prompts`` and ``done``: what to do about what the feet took (``status`` is in status_cmd.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from delivery.render import athlete_zone, local_time_text
from recommender.feedback import UnknownPrompt, record_done
from recommender.silence import prompt_outcome
from recommender.status import prompts_for
from stridecare.db.models import Run
from stridecare.settings import Settings
from stridecare_app.cli.app import app, athlete_or_fail, emit_json, fail, runtime

AthleteOpt = Annotated[str | None, typer.Option(help="Athlete handle (default: STRIDECARE_DEFAULT_ATHLETE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]


@app.command()
def prompts(
    athlete: AthleteOpt = None,
    limit: Annotated[int, typer.Option(help="How many of the newest prompts.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List prompts with their reasons, the rule that produced them and each delivery's state, then the recent
    runs that got no prompt and why (outside the freshness window, not the day's first run, …)."""
    rt = runtime()
    with rt.db.read() as session:
        who = athlete_or_fail(session, athlete or rt.settings.default_athlete)
        zone = athlete_zone(who.timezone)
        data = prompts_for(session, who, limit)
        silent = _runs_without_prompt(session, rt.settings, who.id, limit)
    if as_json:
        emit_json(data)
        return
    if not data:
        typer.echo("no prompts yet")
    for p in data:
        state = ", ".join(f"{c} {s}" for c, s in p["deliveries"].items()) or "not delivered"
        done = "  done" if p["done_at"] else ""
        typer.echo(f"{p['id']}  {p['local_day']}  {p['kind']:15} {', '.join(p['routines'])}  [{state}]{done}")
        if p.get("due_at") and p.get("created_at") and str(p["due_at"]) > str(p["created_at"]):
            due = datetime.fromisoformat(str(p["due_at"]))
            typer.echo(f"    held for quiet hours until {local_time_text(due, zone)}")
        for reason in p["reasons"]:
            typer.echo(f"    {reason}")
    if silent:
        typer.echo("runs without a prompt:")
    for line in silent:
        typer.echo(f"  {line}")


def _runs_without_prompt(session: Session, settings: Settings, athlete_id: int, limit: int) -> list[str]:
    """One line per recent run that got no post-run prompt, saying why."""
    runs = session.scalars(
        select(Run).where(Run.athlete_id == athlete_id).order_by(Run.start_time.desc()).limit(limit)
    ).all()
    lines: list[str] = []
    for run in runs:
        outcome = prompt_outcome(session, settings, run)
        if outcome.prompt_id is None:
            lines.append(
                f"run {run.id}  {run.start_time:%Y-%m-%d}  {run.sport} {run.distance_m / 1000:.1f} km: {outcome.reason}"
            )
    return lines


@app.command()
def done(
    prompt: Annotated[
        str, typer.Argument(help="The prompt id (from `stridecare prompts`), or its first 6 or more characters.")
    ],
) -> None:
    """Record a prompt's routines as done (the same as its "done" link); balance progresses with these."""
    rt = runtime()
    try:
        with rt.db.transaction() as session:
            p = record_done(session, prompt, rt.now())
            routines = ", ".join(p.routines)
    except UnknownPrompt as exc:
        fail(str(exc))
    typer.echo(f"recorded {routines} as done")
