"""``stridecare runs``: the newest stored runs, read through SQLAlchemy Core (no ORM, no models: about 0.2 s less
CPU at every start; stridecare/db/run_list.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from stridecare.handles import UnknownAthlete
from stridecare_app.cli.app import app, emit_json, fail, runtime


@app.command()
def runs(
    athlete: Annotated[str | None, typer.Option(help="Athlete handle (default: STRIDECARE_DEFAULT_ATHLETE).")] = None,
    limit: Annotated[int, typer.Option(help="How many of the newest runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout.")] = False,
) -> None:
    """List stored runs, newest first, with distance, steps, cadence source and load."""
    from stridecare.db.run_list import newest_runs  # deferred: start-up time (`runs --help` needs no SQLAlchemy)

    rt = runtime()
    try:
        data = newest_runs(rt.db, athlete or rt.settings.default_athlete, limit)
    except UnknownAthlete as exc:
        if as_json:
            emit_json([])
            return
        fail(str(exc))
    if as_json:
        emit_json(data)
        return
    if not data:
        typer.echo("no runs yet: drop FIT files into the inbox, or `stridecare ingest FILE`")
        return
    typer.echo(
        f"{'id':>5} {'start (UTC)':20} {'sport':10} {'km':>7} {'min':>6} {'steps':>7} {'spm':>5} "
        f"{'cadence':9} {'load (ref. steps)':>17}"
    )
    for r in data:
        cad = "" if r["avg_cadence_spm"] is None else f"{r['avg_cadence_spm']:.0f}"
        # A copy of a session counts nothing of its own: it points at the run that counts.
        load = f"= run {r['duplicate_of']}" if r["duplicate_of"] else "" if r["load"] is None else f"{r['load']:,.0f}"
        typer.echo(
            f"{r['id']:>5} {r['start_time'][:19]:20} {r['sport']:10} {r['distance_m'] / 1000:7.2f} "
            f"{r['timer_s'] / 60:6.1f} {r['steps']:7d} {cad:>5} {r['cadence_source']:9} {load:>17}"
            + ("  long" if r["long_run"] else "")
        )
