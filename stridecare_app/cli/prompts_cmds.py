"""``stridecare status``, ``prompts`` and ``done``: what the feet took, and what to do about it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from delivery.render import athlete_zone, local_time_text
from recommender.feedback import UnknownPrompt, record_done
from recommender.silence import prompt_outcome
from recommender.status import athlete_status, prompts_for
from stridecare.db.models import Run
from stridecare.settings import Settings
from stridecare_app.cli.app import app, athlete_or_fail, emit_json, fail, runtime

AthleteOpt = Annotated[str | None, typer.Option(help="Athlete handle (default: STRIDECARE_DEFAULT_ATHLETE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]


@app.command()
def status(athlete: AthleteOpt = None, as_json: JsonOpt = False) -> None:
    """Acute and chronic foot load, ACWR (after 28 days, as information), flags, recent runs, pending prompts.

    Flags say "consider", never "you will": none of them predicts an individual injury.
    """
    rt = runtime()
    with rt.db.read() as session:
        who = athlete_or_fail(session, athlete or rt.settings.default_athlete)
        data = athlete_status(session, rt.settings, who, rt.now())
    if as_json:
        emit_json(data)
        return
    typer.echo(f"{data['athlete']} on {data['as_of']}")
    texts = data["figure_texts"]
    for key in ("acute_load", "chronic_load", "load_last_7_days", "load_last_28_days"):
        typer.echo(f"  {texts[key]}")
    if data["acwr"] is not None:
        typer.echo(f"  {texts['acwr']}  (information only)")
    else:
        typer.echo(f"  ACWR                  shown after 28 days of history ({data['history_days']} so far)")
    for flag in data["flag_details"]:
        typer.echo(f"  flag {flag['flag']}: {flag['reason']}")
    typer.echo(f"  recent runs: {len(data['recent_runs'])}, prompts waiting: {len(data['pending_prompts'])}")
    if n := data["runs_with_steps_estimated"]:
        typer.echo(
            f"  steps estimated for {n} run{'s' if n != 1 else ''}: the recorded cadence gave an impossible step "
            "length (the run's page says why)"
        )


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
