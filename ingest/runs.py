"""The one writer of runs: the only code that inserts, updates or removes runs and their samples.

Every way in — an inbox file, ``stridecare ingest`` and ``import``, a Strava export, Strava events and backfill,
a connector's download, ``stridecare recompute`` — hands a decoded :class:`~stridecare.domain.run.ParsedRun` to
this module and ends the same way: if the change owes the athlete's replan, replan
(``recommender.planner.replan``). In the caller's transaction this module

* inserts the run or copies every field of the parsed run onto the stored one (:func:`apply`);
* records its session identity: the same session from two sources is one primary run (``ingest.dedupe``);
* writes the replan mark (``stridecare.db.marks``) and says whether a replan is owed.

Planning is not done here: storing never waits for the planner and never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ingest.dedupe import find_matches, primary_of, same_session
from stridecare.db.athletes import lock_athlete
from stridecare.db.marks import mark_stale
from stridecare.db.models import Athlete, Prompt, Run, RunSamples, Shoe
from stridecare.db.samples import ENCODING, pack_columns, pack_samples
from stridecare.domain.history import local_day
from stridecare.domain.load_arrays import SampleColumns
from stridecare.domain.plausibility import implausibility
from stridecare.domain.run import ParsedRun
from stridecare.domain.shoes import PairWindow

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Stored:
    """What one store did: the runs it inserted or changed, the ones it left out as implausible (with the
    reason), and whether the athlete's replan is owed by this store (else a replan already queued or running
    plans these runs too)."""

    runs: list[Run] = field(default_factory=list)
    refused: list[tuple[ParsedRun, str]] = field(default_factory=list)
    replan_owed: bool = False
    # The earliest start a changed run moved away from (its old day changes too): for a caller that writes the
    # mark itself (``store_parsed(mark=False)``).
    since: datetime | None = None


def shoe_window(shoe: Shoe) -> PairWindow:
    """The pair's window of use (``stridecare.domain.shoes``)."""
    return PairWindow(in_use_from=shoe.in_use_from, retired=shoe.retired, retired_at=shoe.retired_at)


def _shoe_for(session: Session, athlete_id: int, gear_id: str | None, start: datetime) -> int | None:
    """The pair a newly stored run that started at ``start`` is counted on: the one mapped to the source's gear
    id (whatever the date, until it was retired), else the default pair from its in-use-from day on."""
    row = session.get(Athlete, athlete_id)  # the caller's, already loaded in this transaction: no statement
    assert row is not None
    day = local_day(start, row.timezone)
    if gear_id:
        named = list(session.scalars(select(Shoe).where(Shoe.athlete_id == athlete_id, Shoe.strava_gear_id == gear_id)))
        for shoe in named:
            if shoe_window(shoe).takes(start, day, named_by_source=True):
                return shoe.id
        if named:
            return None  # the source named a pair that was retired by then: not another pair's run
    if row.default_shoe_id is None:
        return None
    # A default pair that was retired or deleted meanwhile counts nothing; nor a run before its first day.
    default = session.get(Shoe, row.default_shoe_id)
    return default.id if default is not None and shoe_window(default).takes(start, day) else None


def assign_shoe(session: Session, run: Run, shoe_id: int | None) -> list[Run]:
    """Count ``run``'s session on pair ``shoe_id`` (None: on no pair), set by hand; returns the runs changed.

    The primary and every copy of the session take the pair, so the choice holds whichever copy is the primary
    later. The caller checks the pair is the athlete's and its window takes the run (:func:`shoe_window`)."""
    primary = (session.get(Run, run.duplicate_of_id) if run.duplicate_of_id is not None else None) or run
    session_runs = [primary, *session.scalars(select(Run).where(Run.duplicate_of_id == primary.id))]
    changed = [r for r in session_runs if r.shoe_id != shoe_id]
    for r in changed:
        r.shoe_id = shoe_id
    return changed


def _fields(parsed: ParsedRun) -> dict[str, object]:
    """Every column a parsed run decides, by name: the one mapping of a parsed run onto a stored one."""
    return {
        "source": parsed.source,
        "source_key": parsed.source_key,
        "name": parsed.name,
        "sport": parsed.sport,
        "sub_sport": parsed.sub_sport,
        "start_time": parsed.start_time,
        "utc_offset_s": parsed.utc_offset_s,
        "elapsed_s": parsed.elapsed_s,
        "timer_s": parsed.timer_s,
        "distance_m": parsed.distance_m,
        "ascent_m": parsed.ascent_m,
        "descent_m": parsed.descent_m,
        "steps": parsed.steps,
        "avg_cadence_spm": parsed.avg_cadence_spm,
        "cadence_source": str(parsed.cadence_source),
        "device": parsed.device,
        "device_total_strides": parsed.device_total_strides,
        "avg_heart_rate_bpm": parsed.avg_heart_rate_bpm,
        "max_heart_rate_bpm": parsed.max_heart_rate_bpm,
        "step_note": parsed.step_note,
    }


# Columns a summary (a record without samples) must not take from the stored run when it has per-sample data:
# an update event re-fetches only the summary, and the samples' figures are the better ones.
_FROM_SAMPLES = (
    "descent_m",
    "steps",
    "avg_cadence_spm",
    "cadence_source",
    "avg_heart_rate_bpm",
    "max_heart_rate_bpm",
    "step_note",
)


def apply(
    session: Session,
    athlete_id: int,
    run: Run | None,
    parsed: ParsedRun,
    *,
    file_id: int | None,
    columns: SampleColumns | None = None,
) -> Run | None:
    """Insert ``parsed`` as a new run (``run`` None) or copy every field of it onto ``run``; returns the run when
    it was inserted or anything changed, else None. A new run is counted on the pair the source names (gear),
    else the athlete's default pair from its in-use-from day on (``stridecare.domain.shoes``). ``columns``:
    ``parsed.samples`` already converted (``SampleColumns.of``), packed without converting them again.

    A summary (no samples) never replaces per-sample figures already stored."""
    values = _fields(parsed)
    if run is None:
        shoe_id = _shoe_for(session, athlete_id, parsed.gear_id, parsed.start_time)
        run = Run(athlete_id=athlete_id, file_id=file_id, shoe_id=shoe_id)
        # A new run has no load yet (the planner adds it): known without the query a first read of it would make.
        set_committed_value(run, "load", None)
        for key, value in values.items():
            setattr(run, key, value)
        if len(parsed.samples):
            data = pack_columns(columns) if columns is not None else pack_samples(parsed.samples)
            run.samples = RunSamples(count=len(parsed.samples), encoding=ENCODING, data=data)
        session.add(run)
        return run
    keep_samples = not len(parsed.samples) and run.samples is not None
    if keep_samples:
        values = {k: v for k, v in values.items() if k not in _FROM_SAMPLES}
    if values["device"] is None:
        values["device"] = run.device
    changed = False
    for key, value in values.items():
        if getattr(run, key) != value:
            setattr(run, key, value)
            changed = True
    if len(parsed.samples):
        data = pack_columns(columns) if columns is not None else pack_samples(parsed.samples)
        if run.samples is None:
            run.samples = RunSamples(count=len(parsed.samples), encoding=ENCODING, data=data)
            changed = True
        elif run.samples.data != data:
            run.samples.count, run.samples.encoding, run.samples.data = len(parsed.samples), ENCODING, data
            changed = True
    return run if changed else None


# Built once: it runs for every run stored, and building it (and its cache key) costs more than running it.
_FIND_RUN = select(Run).where(
    Run.athlete_id == bindparam("athlete_id"), Run.source == bindparam("source"), Run.source_key == bindparam("key")
)


def find_run(session: Session, athlete_id: int, source: str, source_key: str) -> Run | None:
    """The athlete's stored run of ``source``'s session ``source_key``, if any."""
    return session.scalar(_FIND_RUN, {"athlete_id": athlete_id, "source": source, "key": source_key})


# -- session identity ----------------------------------------------------------------------------------------


def _demote(session: Session, run: Run, primary: Run) -> None:
    """Make ``run`` (and its copies) point at ``primary``; a copy keeps no load of its own, so nothing that
    reads loads can count the session twice."""
    session.execute(
        update(Run)
        .where(Run.duplicate_of_id == run.id)
        .values(duplicate_of_id=primary.id)
        .execution_options(synchronize_session="fetch")
    )
    run.duplicate_of_id = primary.id
    if run.load is not None:
        run.load = None  # delete-orphan: the row goes with the flush


def link_duplicate(session: Session, athlete_id: int, run: Run) -> Run:
    """Link a newly inserted (and flushed) ``run`` with the stored runs of the same session; returns the primary.

    When the new run is the richest, the old primary and every run that pointed at it now point at the new
    one, and the planner finds the prompt already made for the old copy and sends none again. A run
    overlapping two primaries joins them into one session."""
    # The caller took the athlete's row lock before inserting (stridecare.db.athletes.lock_athlete), so on
    # PostgreSQL two transactions inserting two copies at once cannot each miss the other (read committed)
    # and both stay primary.
    return _link(session, athlete_id, run)[0]


def _link(session: Session, athlete_id: int, run: Run) -> tuple[Run, bool]:
    """:func:`link_duplicate`, and whether the run met another record of its session (if not, it is a session of
    its own: no other run points at it)."""
    if run.duplicate_of_id is not None:
        return run, True
    matches = find_matches(session, athlete_id, run)
    if not matches:
        return run, False
    primary = primary_of([run, *matches])
    for other in [run, *matches]:
        if other is not primary:
            _demote(session, other, primary)
    session.flush()
    return primary, True


def _elect_heir(session: Session, primary: Run, leaving: Collection[int] = ()) -> Run | None:
    """Before ``primary`` is deleted: promote the richest of its copies (ignoring ids in ``leaving``, which go
    too), point the other copies and the session's prompts at it, and return it (None: no copy left)."""
    copies = [c for c in session.scalars(select(Run).where(Run.duplicate_of_id == primary.id)) if c.id not in leaving]
    if not copies:
        return None
    heir = primary_of(copies)
    heir.duplicate_of_id = None
    for other in copies:
        if other is not heir:
            other.duplicate_of_id = heir.id
    # The session was prompted once, under the old primary; the heir inherits that prompt, so none goes again.
    session.execute(
        update(Prompt)
        .where(Prompt.run_id == primary.id)
        .values(run_id=heir.id)
        .execution_options(synchronize_session="fetch")
    )
    session.flush()
    return heir


def _relink(session: Session, athlete_id: int, run: Run) -> list[Run]:
    """After ``run``'s times changed (a Strava edit): unlink what is no longer the same session and link what now
    is. Returns the other runs whose link changed."""
    changed: list[Run] = []
    if run.duplicate_of_id is not None:
        primary = session.get(Run, run.duplicate_of_id)
        if primary is None or not same_session(run, primary):
            run.duplicate_of_id = None  # moved away: a session of its own again
            session.flush()
    else:
        for copy in session.scalars(select(Run).where(Run.duplicate_of_id == run.id)):
            if not same_session(copy, run):
                copy.duplicate_of_id = None
                changed.append(copy)
        session.flush()
        for copy in changed:
            link_duplicate(session, athlete_id, copy)
    link_duplicate(session, athlete_id, run)  # moved onto another record of its session
    return changed


def _one_pair_per_session(session: Session, run: Run, gear_id: str | None) -> None:
    """After a new ``run`` joined a session: the session counts on one pair, whichever copy is the primary. The
    pair the new copy's source names (gear) wins; else the session keeps the pair it had (a FIT file of a Strava
    activity that named its shoes does not move the session to the default pair)."""
    primary = (session.get(Run, run.duplicate_of_id) if run.duplicate_of_id is not None else None) or run
    runs = [primary, *session.scalars(select(Run).where(Run.duplicate_of_id == primary.id))]
    if len(runs) < 2:
        return
    named = session.get(Shoe, run.shoe_id) if gear_id and run.shoe_id is not None else None
    if named is not None and named.strava_gear_id == gear_id:
        pair: int | None = named.id
    else:
        pair = next((r.shoe_id for r in runs if r is not run and r.shoe_id is not None), run.shoe_id)
    for r in runs:
        if r.shoe_id != pair:
            r.shoe_id = pair


# -- the writes ------------------------------------------------------------------------------------------------


def store_parsed(
    session: Session,
    athlete: Athlete,
    parsed_runs: Sequence[ParsedRun],
    *,
    file_id: int | None = None,
    existing: dict[str, Run] | None = None,
    checked: bool = False,
    locked: bool = False,
    mark: bool = True,
    columns: Sequence[SampleColumns] | None = None,
) -> Stored:
    """Store ``parsed_runs`` for the athlete in the caller's transaction: each is inserted, or copied onto the
    stored run of the same source and key (``existing`` maps keys to runs a caller already holds, such as a
    file's runs on recompute); new runs are linked to other records of their session; the replan mark is
    written. Physically impossible runs are left out with their reason (``checked``: the caller has checked them
    already, as a file's store does for the whole file). Storing the same runs again changes
    nothing and owes nothing. ``locked``: the caller took the athlete's lock in this transaction already
    (``stridecare.db.athletes.lock_athlete``). Without ``mark`` the replan mark is left to the caller, who writes
    it in the same transaction with ``stridecare.db.marks.mark_stale`` over the stored runs and ``since`` (one
    mark for several stores). ``columns``: each parsed run's samples already converted
    (``SampleColumns.of``), in the order of ``parsed_runs``; they are not converted again."""
    if not locked:
        lock_athlete(session, athlete.id)
    out = Stored()
    moved: list[datetime] = []
    moved_runs: list[Run] = []
    inserted: list[Run] = []
    gear_of: dict[int, str | None] = {}  # by id(run): the gear the new run's source named
    for i, parsed in enumerate(parsed_runs):
        converted = columns[i] if columns is not None else None
        implausible = None if checked else implausibility(parsed, columns=converted)
        if implausible is not None:
            log.warning("%s %s not stored: %s", parsed.source, parsed.source_key, implausible)
            out.refused.append((parsed, implausible))
            continue
        run = (existing or {}).get(parsed.source_key) or find_run(session, athlete.id, parsed.source, parsed.source_key)
        was = run.start_time if run is not None else None
        changed = apply(session, athlete.id, run, parsed, file_id=file_id, columns=converted)
        if changed is None:
            continue
        out.runs.append(changed)
        if was is None:
            inserted.append(changed)
            gear_of[id(changed)] = parsed.gear_id
        elif was != changed.start_time:
            moved.append(was)  # an edited start time: the old day changes too
            moved_runs.append(changed)
    if not out.runs:
        return out
    session.flush()
    for run in inserted:
        # The same session from another source: one primary, one prompt; and one pair for the session.
        if _link(session, athlete.id, run)[1]:
            _one_pair_per_session(session, run, gear_of.get(id(run)))
    for run in moved_runs:
        out.runs.extend(_relink(session, athlete.id, run))
    out.since = min(moved) if moved else None
    if mark:
        out.replan_owed = mark_stale(session, athlete, out.runs, since=out.since)
    return out


def remove_runs(session: Session, athlete: Athlete, runs: Sequence[Run]) -> bool:
    """Delete ``runs`` in the caller's transaction and mark the athlete stale from the earliest affected day;
    returns whether the athlete's replan is owed.

    When a deleted run was primary for copies from other sources, the richest copy becomes primary and
    inherits the prompt already sent for the session, so no second prompt goes out."""
    if not runs:
        return False
    lock_athlete(session, athlete.id)
    doomed = {r.id for r in runs}
    promoted: list[Run] = []
    affected: list[datetime] = []
    for run in runs:
        if run.duplicate_of_id is None:
            affected.append(run.start_time)
            heir = _elect_heir(session, run, doomed)
            if heir is not None:
                promoted.append(heir)
    for run in runs:
        session.delete(run)
    session.flush()
    return mark_stale(session, athlete, promoted, since=min(affected) if affected else None)


__all__ = ["Stored", "apply", "find_run", "link_duplicate", "remove_runs", "store_parsed"]
