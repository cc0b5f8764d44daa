"""``stridecare shoe add|list|set|retire|use``: which pairs an athlete runs in, how far and how much foot load
each has carried, and when each is due.

A new run is counted on the pair whose Strava gear id the activity names (whatever its date, until the pair was
retired), else on the default pair set with ``shoe use PAIR``, from the pair's in-use-from day on (``--from``;
the day it was added unless said otherwise), so a new default pair never takes the imported history.
``shoe use RUN PAIR`` moves one run (and its copies from other sources) to a pair. A pair's distance includes
its starting distance (``--start-km``: bought used or worn before), in the list and in the reminder. A pair's
foot load is its runs' load in reference steps (the dashboard's unit). A pair is due at ``--retire-at-km`` or
``--retire-at-load``, whichever comes first: one alert through the athlete's channels (``shoe set`` changes
the thresholds later, which arms a new alert).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.runs import assign_shoe, shoe_window
from recommender.shoes import shoe_reminders, shoe_usage
from stridecare.db.models import Athlete, Run, Shoe
from stridecare.domain.history import local_day, utc_bounds_of_local_day
from stridecare.runtime import Runtime
from stridecare_app.cli.app import app, athlete_or_fail, emit_json, fail, runtime

shoe_app = typer.Typer(
    help="Track shoes: distance, steps and foot load per pair, and one alert when a pair reaches its retirement "
    "distance or foot load."
)
app.add_typer(shoe_app, name="shoe", no_args_is_help=True)

ShoeArg = Annotated[str, typer.Argument(help="Name of the pair, e.g. 'pegasus-41'.")]
AthleteOpt = Annotated[str | None, typer.Option(help="Athlete handle (default: STRIDECARE_DEFAULT_ATHLETE).")]
RetireKmOpt = Annotated[
    float | None,
    typer.Option(
        "--retire-at-km",
        "--remind-at-km",
        help="Alert once when the pair reaches this distance (starting distance included), e.g. 700.",
        show_default=False,
    ),
]
RetireLoadOpt = Annotated[
    float | None,
    typer.Option(
        "--retire-at-load",
        help="Alert once when the pair's runs reach this cumulative foot load in reference steps (the "
        "dashboard's unit; `shoe list` shows each pair's), e.g. 600000.",
        show_default=False,
    ),
]
MAX_LOAD = 1e9  # reference steps: far beyond any pair's life (a marathon carries some 40,000)


def _check_thresholds(retire_at_km: float | None, retire_at_load: float | None) -> None:
    if retire_at_km is not None and not 1 <= retire_at_km <= 10000:
        fail("--retire-at-km must be between 1 and 10000")
    if retire_at_load is not None and not 1 <= retire_at_load <= MAX_LOAD:
        fail(f"--retire-at-load must be between 1 and {MAX_LOAD:,.0f} reference steps")


def _athlete(session: Session, name: str | None, default: str) -> Athlete:
    return athlete_or_fail(session, name or default)


def _shoe(session: Session, athlete: Athlete, name: str) -> Shoe:
    shoe = session.scalar(select(Shoe).where(Shoe.athlete_id == athlete.id, Shoe.name == name))
    if shoe is None:
        known = ", ".join(session.scalars(select(Shoe.name).where(Shoe.athlete_id == athlete.id))) or "none yet"
        fail(f"{athlete.name} has no shoes named {name!r} (known: {known}); add them with `stridecare shoe add`")
    return shoe


@contextmanager
def _named_pair(rt: Runtime, name: str, athlete: str | None) -> Iterator[tuple[Session, Athlete, Shoe]]:
    """The athlete (the default one when not named) and their pair called ``name``, in one transaction."""
    with rt.db.transaction() as session:
        who = _athlete(session, athlete, rt.settings.default_athlete)
        yield session, who, _shoe(session, who, name)


def _parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"--from takes a date as YYYY-MM-DD (got {value!r})")


def _count_unassigned_on(session: Session, who: Athlete, shoe: Shoe) -> int:
    """Count the athlete's runs on no pair from ``shoe``'s in-use-from day on on it (it became the default):
    a pair added with ``--from`` a month ago takes that month's runs. Pairs without the day take none."""
    if shoe.in_use_from is None:
        return 0
    since = utc_bounds_of_local_day(shoe.in_use_from, who.timezone)[0]
    runs = session.scalars(
        select(Run).where(
            Run.athlete_id == who.id, Run.duplicate_of_id.is_(None), Run.shoe_id.is_(None), Run.start_time >= since
        )
    ).all()
    window = shoe_window(shoe)
    moved = 0
    for run in runs:
        if window.takes(run.start_time, local_day(run.start_time, who.timezone)):
            moved += bool(assign_shoe(session, run, shoe.id))
    return moved


@shoe_app.command("add")
def add(
    name: ShoeArg,
    athlete: AthleteOpt = None,
    remind_at_km: RetireKmOpt = None,
    retire_at_load: RetireLoadOpt = None,
    strava_gear_id: Annotated[
        str | None,
        typer.Option("--strava-gear-id", help="Strava's id of this pair (e.g. g123): its runs count here, any date."),
    ] = None,
    start_km: Annotated[
        float,
        typer.Option("--start-km", help="Distance the pair had already done (bought used, worn before): counted."),
    ] = 0.0,
    in_use_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="YYYY-MM-DD",
            help="First day the pair was worn (your local day); as the default pair it counts no earlier run. "
            "Default: today.",
            show_default=False,
        ),
    ] = None,
    use: Annotated[
        bool,
        typer.Option(
            "--use", help="Also make it the default pair for new runs (and for runs on no pair since --from)."
        ),
    ] = False,
) -> None:
    """Add a pair of shoes.

    Example: `stridecare shoe add "Pegasus 41" --start-km 120 --from 2026-11-01 --retire-at-km 700 --use`.
    """
    clean = " ".join(name.split())
    if not clean or len(clean) > 100:
        fail("a shoe name is 1 to 100 characters")
    _check_thresholds(remind_at_km, retire_at_load)
    if not 0 <= start_km <= 10000:
        fail("--start-km must be between 0 and 10000")
    first_day = _parse_day(in_use_from) if in_use_from is not None else None
    rt = runtime()
    moved = 0
    try:
        with rt.db.transaction() as session:
            who = _athlete(session, athlete, rt.settings.default_athlete)
            shoe = Shoe(
                athlete_id=who.id,
                name=clean,
                strava_gear_id=strava_gear_id or None,
                remind_at_km=remind_at_km,
                retire_at_load=retire_at_load,
                start_km=start_km,
                in_use_from=first_day or local_day(rt.now(), who.timezone),
            )
            session.add(shoe)
            session.flush()
            if use:
                who.default_shoe_id = shoe.id
                moved = _count_unassigned_on(session, who, shoe)
            shoe_reminders(session, rt.settings, who, rt.now())  # bought at 700 km with a reminder at 600
            since = shoe.in_use_from
    except IntegrityError:
        fail(f"a pair named {clean!r} exists already")
    extra = f", {start_km:g} km already done" if start_km else ""
    typer.echo(f"added {clean} (in use from {since}{extra})" + (" — default for new runs" if use else ""))
    if moved:
        typer.echo(f"{moved} run{'s' if moved != 1 else ''} on no pair since {since} now count on {clean}")


@shoe_app.command("list")
def list_(
    athlete: AthleteOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout.")] = False,
) -> None:
    """List the pairs with the runs, distance (starting distance included), steps and foot load (reference steps)
    each has carried, their retirement thresholds and whether they are due."""
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
        notes = []
        if r["start_km"]:
            notes.append(f"{r['start_km']:.0f} km before")
        if r["in_use_from"]:
            notes.append(f"from {r['in_use_from']}")
        if r["remind_at_km"]:
            notes.append(f"retire at {r['remind_at_km']:.0f} km")
        if r["retire_at_load"]:
            notes.append(f"retire at {r['retire_at_load']:,.0f} load")
        if r["due"]:
            notes.append(f"DUE: {r['due']}")
        typer.echo(
            f"{r['name']:<24} {r['distance_km']:8.1f} km {r['steps']:>10,} steps {r['load']:>10,} load "
            f"{r['runs']:>4} runs"
            + (f", {', '.join(notes)}" if notes else "")
            + (f"  ({', '.join(marks)})" if marks else "")
        )


@shoe_app.command("set")
def set_(
    name: ShoeArg,
    athlete: AthleteOpt = None,
    retire_at_km: RetireKmOpt = None,
    retire_at_load: RetireLoadOpt = None,
    clear_km: Annotated[bool, typer.Option("--no-retire-at-km", help="Remove the distance threshold.")] = False,
    clear_load: Annotated[bool, typer.Option("--no-retire-at-load", help="Remove the foot-load threshold.")] = False,
) -> None:
    """Change a pair's retirement thresholds; a pair already past a new threshold is alerted at once.

    Example: `stridecare shoe set "Pegasus 41" --retire-at-load 600000 --no-retire-at-km`.
    """
    if retire_at_km is None and retire_at_load is None and not clear_km and not clear_load:
        fail("nothing to set: give --retire-at-km, --retire-at-load, --no-retire-at-km or --no-retire-at-load")
    if (retire_at_km is not None and clear_km) or (retire_at_load is not None and clear_load):
        fail("a threshold cannot be set and removed at once")
    _check_thresholds(retire_at_km, retire_at_load)
    rt = runtime()
    with _named_pair(rt, name, athlete) as (session, who, shoe):
        if retire_at_km is not None or clear_km:
            shoe.remind_at_km = retire_at_km
        if retire_at_load is not None or clear_load:
            shoe.retire_at_load = retire_at_load
        session.flush()
        shoe_id = shoe.id
        alerted = [p for p in shoe_reminders(session, rt.settings, who, rt.now()) if p.facts["shoe"]["id"] == shoe_id]
        km, load = shoe.remind_at_km, shoe.retire_at_load
    said = [f"{km:g} km" if km is not None else None, f"{load:,.0f} load" if load is not None else None]
    typer.echo(f"{name}: retire at " + (" or ".join(x for x in said if x) or "no threshold"))
    if alerted:
        typer.echo(f"{name} is past it already: an alert is on its way")


@shoe_app.command("retire")
def retire(name: ShoeArg, athlete: AthleteOpt = None) -> None:
    """Retire a pair: it keeps its history, counts no new runs and sends no more reminders."""
    rt = runtime()
    with _named_pair(rt, name, athlete) as (_, who, shoe):
        if not shoe.retired:
            shoe.retired, shoe.retired_at = True, rt.now()
        if who.default_shoe_id == shoe.id:
            who.default_shoe_id = None
    typer.echo(f"retired {name}")


@shoe_app.command("use")
def use(
    first: Annotated[
        str,
        typer.Argument(metavar="PAIR_OR_RUN", help="A pair's name alone; or a run id (see `stridecare runs`)..."),
    ],
    pair: Annotated[
        str | None,
        typer.Argument(metavar="PAIR", help="...followed by the pair that run counts on.", show_default=False),
    ] = None,
    athlete: AthleteOpt = None,
) -> None:
    """Make PAIR the default for new runs, or count one run on PAIR.

    `stridecare shoe use PAIR`: new runs that do not name their shoes count on PAIR from its in-use-from day on;
    runs on no pair since that day are counted on it too.

    `stridecare shoe use RUN PAIR` (RUN: the id `stridecare runs` shows): that run, with its copies from other
    sources, counts on PAIR instead of the pair it had. The run must fall in PAIR's time of use.
    """
    if pair is None:
        _use_default(first, athlete)
    else:
        _use_for_run(first, pair, athlete)


def _use_default(name: str, athlete: str | None) -> None:
    rt = runtime()
    with _named_pair(rt, name, athlete) as (session, who, shoe):
        if shoe.retired:
            fail(f"{name!r} is retired")
        who.default_shoe_id = shoe.id
        moved = _count_unassigned_on(session, who, shoe)
        shoe_reminders(session, rt.settings, who, rt.now())
        since = shoe.in_use_from
    typer.echo(f"new runs of {who.name} count on {name}" + (f" (runs from {since} on)" if since else ""))
    if moved:
        typer.echo(f"{moved} run{'s' if moved != 1 else ''} on no pair since {since} now count on {name}")


def _use_for_run(run_ref: str, name: str, athlete: str | None) -> None:
    try:
        run_id = int(run_ref)
    except ValueError:
        fail(f"RUN is a run id as `stridecare runs` shows it (got {run_ref!r}); to set the default pair: shoe use PAIR")
    rt = runtime()
    with rt.db.transaction() as session:
        run = session.get(Run, run_id)
        who = session.get(Athlete, run.athlete_id) if run is not None else None
        if run is None or who is None or (athlete is not None and who.name != athlete):
            fail(f"no run {run_id}" + (f" of {athlete}" if athlete else "") + "; `stridecare runs` lists the ids")
        shoe = _shoe(session, who, name)
        refusal = shoe_window(shoe).refusal(run.start_time, local_day(run.start_time, who.timezone))
        if refusal is not None:
            fail(f"run {run_id} cannot count on {name}: {refusal}")
        changed = assign_shoe(session, run, shoe.id)
        shoe_reminders(session, rt.settings, who, rt.now())
        primary = run.duplicate_of_id
    note = f" (a copy of run {primary}: the session counts once)" if primary is not None else ""
    if changed:
        typer.echo(f"run {run_id} now counts on {name}{note}")
    else:
        typer.echo(f"run {run_id} already counts on {name}{note}")
