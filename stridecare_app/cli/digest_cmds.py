"""``stridecare digest --preview ATHLETE``: write the weekly digest the athlete would get, as one HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recommender.digest import preview_digest
from stridecare.links import athlete_key, dashboard_url, unsubscribe_url
from stridecare_app.cli.app import app, athlete_or_fail, fail, runtime


@app.command("digest")
def digest(
    preview: Annotated[
        str, typer.Option("--preview", metavar="ATHLETE", help="Athlete whose digest to render (nothing is sent).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write the HTML (default: digest-ATHLETE.html).")
    ] = None,
) -> None:
    """Render the weekly digest ATHLETE would get now (the last scheduled week) into one HTML file to open in a
    browser: the chart is inlined, the links are the real ones. Nothing is sent or recorded."""
    rt = runtime()
    target = out or Path(f"digest-{preview}.html")
    with rt.db.read() as session:  # a preview writes nothing
        athlete = athlete_or_fail(session, preview)
        base = rt.settings.effective_public_url
        html, note = preview_digest(
            session,
            rt.settings,
            athlete,
            rt.now(),
            unsubscribe_url=unsubscribe_url(base, athlete_key(rt.link_key, athlete.link_secret), athlete.id),
            dashboard_url=dashboard_url(base, athlete.name, athlete.dashboard_token),
        )
    try:
        target.write_text(html, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}")
    typer.echo(f"wrote {target} ({len(html.encode('utf-8')) // 1024} kB)")
    if note:
        typer.echo(note)
