"""``stridecare export`` and ``stridecare forget``: an athlete's copy of their data, and its deletion."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recommender.data_rights import export_athlete, forget_athlete
from stridecare.handles import check_handle
from stridecare_app.cli.app import app, athlete_or_fail, emit_json, fail, runtime

AthleteArg = Annotated[str, typer.Argument(help="Athlete handle.")]


@app.command("export")
def export(
    athlete: AthleteArg,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the files (default: ./export-ATHLETE).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The written files as JSON on stdout.")] = False,
) -> None:
    """Write the athlete's runs, loads, daily loads, prompts, completions and shoes as JSON and CSV files."""
    rt = runtime()
    # A handle holds no path separator or "..": the default folder stays where the command runs.
    folder = out or Path(f"export-{check_handle(athlete)}")
    with rt.db.transaction() as session:
        who = athlete_or_fail(session, athlete)
        try:
            files = export_athlete(session, who, folder)
        except OSError as exc:
            fail(f"cannot write to {folder}: {exc}")
    if as_json:
        emit_json([str(f) for f in files])
        return
    typer.echo(f"wrote {len(files)} files to {folder}")


@app.command("forget")
def forget(
    athlete: AthleteArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete everything stored about the athlete: runs, loads, prompts, deliveries, shoes, Strava link. Final."""
    rt = runtime()
    if not yes:
        typer.confirm(f"Delete every record of {athlete!r}? This cannot be undone", abort=True)
    with rt.db.transaction() as session:
        who = athlete_or_fail(session, athlete)
        result = forget_athlete(session, who)
    for relative in result.originals:  # the kept copies of their files, now that no row names them
        (rt.settings.data_home / relative).unlink(missing_ok=True)
    detail = ", ".join(f"{n} {table}" for table, n in sorted(result.counts.items()))
    typer.echo(f"forgot {athlete}: {detail}")
    folders = [str(path) for name, path in rt.settings.inbox_map() if name == athlete]
    if folders:
        # The watcher would import the files again (and so re-create the athlete).
        typer.echo(f"remove the athlete's inbox folder(s) and its STRIDECARE_INBOXES entry: {', '.join(folders)}")
    if rt.settings.strava_client_id and "strava_accounts" in result.counts:
        typer.echo("the Strava link is deleted here; the athlete can also revoke access in their Strava settings")
