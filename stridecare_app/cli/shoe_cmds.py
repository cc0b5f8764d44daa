"""``stridecare shoe add|list|retire|use``: which pairs an athlete runs in and how far each has gone.

New runs are counted on the pair whose Strava gear id the activity names, else on the default pair set with
``shoe use``. Runs stored before a pair was added or made the default are not re-assigned.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from recommender.shoes import shoe_usage
from stridecare.db.models import Athlete, Shoe
from stridecare_app.cli.app import app, athlete_or_fail, emit_json, fail, runtime

shoe_app = typer.Typer(help="Track shoes: distance and steps per pair, and a reminder when a pair is worn.")
app.add_typer(shoe_app, name="shoe", no_args_is_help=True)

ShoeArg = Annotated[str, typer.Argument(help="Name of the pair, e.g. 'pegasus-41'.")]
AthleteOpt = Annotated[str | None, typer.Option(help="Athlete handle (default: STRIDECARE_DEFAULT_ATHLETE).")]


def _athlete(session: Session, name: str | None, default: str) -> Athlete:
    return athlete_or_fail(session, name or default)


def _shoe(session: Session, athlete: Athlete, name: str) -> Shoe:
    shoe = session.scalar(select(Shoe).where(Shoe.athlete_id == athlete.id, Shoe.name == name))
    if shoe is None:
        known = ", ".join(session.scalars(select(Shoe.name).where(Shoe.athlete_id == athlete.id))) or "none yet"
        fail(f"{athlete.name} has no shoes named {name!r} (known: {known}); add them with `stridecare shoe add`")
    return shoe


@contextmanager
def _named_pair(name: str, athlete: str | None) -> Iterator[tuple[Athlete, Shoe]]:
    """The athlete (the default one when not named) and their pair called ``name``, in one transaction."""
    rt = runtime()
    with rt.db.transaction() as session:
        who = _athlete(session, athlete, rt.settings.default_athlete)
        yield who, _shoe(session, who, name)


@shoe_app.command("add")
def add(
    name: ShoeArg,
    athlete: AthleteOpt = None,
    remind_at_km: Annotated[
        float | None, typer.Option("--remind-at-km", help="Send a reminder when the pair reaches this distance.")
    ] = None,
    strava_gear_id: Annotated[
        str | None, typer.Option("--strava-gear-id", help="Strava's id of this pair (e.g. g123): its runs count here.")
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Also make it the default pair for new runs.")] = False,
) -> None:
    """Add a pair of shoes."""
    clean = " ".join(name.split())
    if not clean or len(clean) > 100:
        fail("a shoe name is 1 to 100 characters")
    if remind_at_km is not None and not 1 <= remind_at_km <= 10000:
        fail("--remind-at-km must be between 1 and 10000")
    rt = runtime()
    try:
        with rt.db.transaction() as session:
            who = _athlete(session, athlete, rt.settings.default_athlete)
            shoe = Shoe(athlete_id=who.id, name=clean, strava_gear_id=strava_gear_id or None, remind_at_km=remind_at_km)
            session.add(shoe)
            session.flush()
            if use:
                who.default_shoe_id = shoe.id
    except IntegrityError:
        fail(f"a pair named {clean!r} exists already")
    typer.echo(f"added {clean}" + (" (default for new runs)" if use else ""))


@shoe_app.command("list")
def list_(
    athlete: AthleteOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout.")] = False,
) -> None:
    """List the pairs with the runs, distance and steps each has carried."""
    rt = runtime()
    with rt.db.transaction() as session:
        who = _athlete(session, athlete, rt.settings.default_athlete)
        rows = [u.as_json() for u in shoe_usage(session, who)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no shoes yet; add a pair with `stridecare shoe add NAME`")
        return
    for r in rows:
        marks = [m for m, on in (("default", r["default"]), ("retired", r["retired"])) if on]
        remind = f", reminder at {r['remind_at_km']:.0f} km" if r["remind_at_km"] else ""
        typer.echo(
            f"{r['name']:<24} {r['distance_km']:8.1f} km {r['steps']:>10,} steps {r['runs']:>4} runs{remind}"
            + (f"  ({', '.join(marks)})" if marks else "")
        )


@shoe_app.command("retire")
def retire(name: ShoeArg, athlete: AthleteOpt = None) -> None:
    """Retire a pair: it keeps its history, counts no new runs and sends no more reminders."""
    with _named_pair(name, athlete) as (who, shoe):
        shoe.retired = True
        if who.default_shoe_id == shoe.id:
            who.default_shoe_id = None
    typer.echo(f"retired {name}")


@shoe_app.command("use")
def use(name: ShoeArg, athlete: AthleteOpt = None) -> None:
    """Make a pair the default for new runs that do not name their shoes."""
    with _named_pair(name, athlete) as (who, shoe):
        if shoe.retired:
            fail(f"{name!r} is retired")
        who.default_shoe_id = shoe.id
    typer.echo(f"new runs of {who.name} count on {name}")
