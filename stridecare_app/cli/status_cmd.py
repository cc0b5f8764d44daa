"""``stridecare status``: what the feet took. A module of its own, so that the command imports only what its
figures need (not the prompts' rendering, nor the planner with NumPy)."""

from __future__ import annotations

from typing import Annotated

import typer

from recommender.status import athlete_status
from stridecare_app.cli.app import app, athlete_or_fail, emit_json, runtime

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
