"""Strava runs in SQL: store parsed activities idempotently, update and remove them, forget an athlete.

Every function here that changes runs also brings load, the daily series, flags and prompts up to date in the
caller's transaction (``recommender.planner``), so a run and its prompt are written together or not at all.
A Strava activity is stored once per athlete: ``(athlete_id, "strava", activity id)`` is unique.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.dedupe import elect_heir, link_duplicate
from ingest.store import add_run
from ingest.strava.backfill import BackfillProgress, backfill_step, start_backfill
from ingest.strava.convert import SOURCE
from recommender.planner import mark_changed, replan, runs_changed
from stridecare.db import leases
from stridecare.db.athletes import lock_athlete
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, Run, RunSamples, StravaAccount, StravaEvent
from stridecare.db.samples import ENCODING, pack_samples
from stridecare.domain.plausibility import implausibility
from stridecare.domain.run import CadenceSource, ParsedRun
from stridecare.runtime import Runtime
from stridecare.settings import Settings

log = logging.getLogger(__name__)

# Requests one backfill task may spend before handing the rest to the next periodic tick: a worker slot is
# never held for long, and webhook events interleave with a long history import.
BACKFILL_STEP_REQUESTS = 150
# Requests of each rate-limit window a backfill leaves for webhook events.
BACKFILL_RESERVE = 10
# Longer than one backfill step can take; a crashed worker's lease lapses after this.
BACKFILL_LEASE_S = 15 * 60.0


def find_run(session: Session, athlete_id: int, activity_id: int | str) -> Run | None:
    """The stored run of Strava activity ``activity_id`` for the athlete, if any."""
    return session.scalar(
        select(Run).where(Run.athlete_id == athlete_id, Run.source == SOURCE, Run.source_key == str(activity_id))
    )


def _apply(run: Run, parsed: ParsedRun) -> bool:
    """Copy ``parsed`` onto ``run``; returns True when anything changed.

    A summary (no samples) never replaces per-sample cadence already stored: an update event re-fetches only
    the summary, and the streams' step count is the better one.
    """
    keep_streams = not len(parsed.samples) and run.samples is not None
    values: dict[str, object] = {
        "name": parsed.name,
        "sport": parsed.sport,
        "sub_sport": parsed.sub_sport,
        "start_time": parsed.start_time,
        "utc_offset_s": parsed.utc_offset_s,
        "elapsed_s": parsed.elapsed_s,
        "timer_s": parsed.timer_s,
        "distance_m": parsed.distance_m,
        "ascent_m": parsed.ascent_m,
        "device": parsed.device if parsed.device is not None else run.device,
    }
    if not keep_streams:
        values |= {
            "descent_m": parsed.descent_m,
            "steps": parsed.steps,
            "avg_cadence_spm": parsed.avg_cadence_spm,
            "cadence_source": str(parsed.cadence_source),
        }
    changed = False
    for key, value in values.items():
        if getattr(run, key) != value:
            setattr(run, key, value)
            changed = True
    if len(parsed.samples):
        data = pack_samples(parsed.samples)
        if run.samples is None:
            run.samples = RunSamples(count=len(parsed.samples), encoding=ENCODING, data=data)
            changed = True
        elif run.samples.data != data:
            run.samples.count, run.samples.encoding, run.samples.data = len(parsed.samples), ENCODING, data
            changed = True
    return changed


def store_parsed(
    session: Session,
    settings: Settings,
    athlete: Athlete,
    parsed_runs: Sequence[ParsedRun],
    now: datetime,
    *,
    defer: bool = False,
) -> list[Run]:
    """Insert new Strava runs (linking a FIT copy of the same session) or update stored ones, then update load
    and prompts for what changed, in the caller's transaction. Storing the same activity again changes
    nothing. Returns the runs inserted or changed. ``defer`` only marks them changed: the caller finishes
    the batch with ``recommender.planner.replan``."""
    lock_athlete(session, athlete.id)
    changed: list[Run] = []
    moved: list[datetime] = []
    for parsed in parsed_runs:
        implausible = implausibility(parsed)
        if implausible is not None:
            log.warning("Strava activity %s not stored: %s", parsed.source_key, implausible)
            continue
        run = find_run(session, athlete.id, parsed.source_key)
        if run is None:
            run = add_run(session, athlete.id, parsed, None)
            session.flush()
            link_duplicate(session, athlete.id, run)
            changed.append(run)
        else:
            was = run.start_time
            if _apply(run, parsed):
                changed.append(run)
                moved.append(was)  # an edited start time: the old day changes too
    if changed:
        session.flush()
        since = min(moved) if moved else None
        # Only primaries count: a Strava copy of a richer FIT run gets neither load nor a prompt.
        if defer:
            mark_changed(session, athlete, changed, since=since)
        else:
            runs_changed(session, settings, athlete, changed, now, since=since)
    return changed


def store_runs(
    db: Database,
    settings: Settings,
    athlete_id: int,
    parsed_runs: Sequence[ParsedRun],
    now: datetime,
    *,
    defer: bool = False,
) -> int:
    """Store ``parsed_runs`` for the athlete in one transaction (the backfill's ``store``); returns how many
    runs were inserted or changed. Idempotent, and safe against an event storing the same activity at once.
    ``defer``: see :func:`store_parsed`."""
    for attempt in range(2):
        try:
            with db.transaction() as session:
                athlete = session.get(Athlete, athlete_id)
                if athlete is None:
                    return 0
                return len(store_parsed(session, settings, athlete, parsed_runs, now, defer=defer))
        except IntegrityError:
            # A concurrent event stored one of these activities first: the second pass updates it instead.
            if attempt:
                raise
    return 0  # pragma: no cover - the loop returns or raises


def remove_runs(session: Session, settings: Settings, athlete: Athlete, runs: Sequence[Run], now: datetime) -> int:
    """Delete ``runs`` and recompute the athlete's load from the earliest affected day.

    When a deleted run was primary for copies from other sources, the richest copy becomes primary and
    inherits the prompt already sent for the session, so no second prompt goes out. Returns how many runs were
    deleted.
    """
    if not runs:
        return 0
    lock_athlete(session, athlete.id)
    doomed = {r.id for r in runs}
    promoted: list[Run] = []
    affected: list[datetime] = []
    for run in runs:
        if run.duplicate_of_id is None:
            affected.append(run.start_time)
            heir = elect_heir(session, run, doomed)
            if heir is not None:
                promoted.append(heir)
    for run in runs:
        session.delete(run)
    session.flush()
    # One planner path: loads, daily series and the flags of later runs, from the earliest deleted day.
    runs_changed(session, settings, athlete, promoted, now, since=min(affected) if affected else None)
    return len(runs)


def forget_account(session: Session, settings: Settings, account: StravaAccount, now: datetime) -> int:
    """Delete everything we hold from Strava for this account: its runs (with samples and load), its push
    events and the account with its tokens, as Strava's API agreement requires after a deauthorization.
    Load is recomputed without those runs. Returns the number of runs deleted."""
    athlete = session.get(Athlete, account.athlete_id)
    deleted = 0
    if athlete is not None:
        runs = list(session.scalars(select(Run).where(Run.athlete_id == athlete.id, Run.source == SOURCE)))
        deleted = remove_runs(session, settings, athlete, runs, now)
    session.execute(
        delete(StravaEvent)
        .where(StravaEvent.payload["owner_id"].as_integer() == account.strava_athlete_id)
        .execution_options(synchronize_session=False)
    )
    session.delete(account)
    session.flush()
    return deleted


def is_stream_run(run: Run) -> bool:
    """True when the stored run's steps come from per-sample cadence."""
    return run.cadence_source == CadenceSource.STREAM and run.samples is not None


# -- backfill ------------------------------------------------------------------------------------------------


def backfill_lease(account_id: int) -> str:
    """The lease name that keeps two processes from backfilling one account at once."""
    return f"strava-backfill:{account_id}"


def lease_owner() -> str:
    """A lease owner name unique to this process and call."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


OnStep = Callable[[BackfillProgress], None]


def _mark_done(rt: Runtime, account_id: int, detail: str) -> None:
    with rt.db.transaction() as session:
        account = session.get(StravaAccount, account_id)
        if account is not None:
            account.backfill_state = "done"
            account.backfill_resume_at = None
            account.backfill_detail = detail


def backfill_account(
    rt: Runtime,
    account_id: int,
    *,
    since: datetime | None = None,
    restart: bool = False,
    max_requests: int | None = BACKFILL_STEP_REQUESTS,
    max_steps: int | None = 1,
    on_step: OnStep | None = None,
) -> BackfillProgress | None:
    """Import the account's Strava history under its backfill lease: the one backfill loop.

    Works in steps of at most ``max_requests`` requests, committing after each and calling ``on_step`` with
    the totals so far; stops after ``max_steps`` steps (the periodic task does one; ``None`` goes on until
    the history is done, access is refused, or the rate limit defers it to a later time). ``since`` keeps
    only activities started at or after it (and asks no streams for older ones) and ends the import once the
    cursor has passed it; ``restart`` (or ``since`` on a finished import) starts again from the newest
    activity. Returns the totals, or ``None`` when another process holds the lease or the account is gone.
    A step that stops at its request cap leaves the backfill due at once, so the next periodic tick
    continues it.
    """
    owner = lease_owner()
    name = backfill_lease(account_id)
    # Wall time: the lease guards real processes, whatever the simulation clock says.
    if not leases.acquire(rt.db, name, owner, datetime.now(UTC), BACKFILL_LEASE_S):
        return None
    try:
        with rt.db.sessions() as session:
            account = session.get(StravaAccount, account_id)
            if account is None:
                return None
            athlete_id, state = account.athlete_id, account.backfill_state
        if restart or (since is not None and state in ("done", "error", "idle")):
            start_backfill(rt.db, account_id, rt.now())
        settings = rt.settings
        if since is not None:
            # No stream requests for activities that the cut-off discards anyway.
            days = max(0, (rt.now() - since).days + 1)
            settings = settings.model_copy(update={"strava_streams_days": min(settings.strava_streams_days, days)})
        totals = {"requests": 0, "stored": 0, "skipped": 0, "streams": 0}

        def store(parsed: Sequence[ParsedRun]) -> None:
            kept = [p for p in parsed if since is None or p.start_time >= since]
            totals["stored"] += len(kept)
            store_runs(rt.db, rt.settings, athlete_id, kept, rt.now(), defer=True)

        steps = 0
        while True:
            step = backfill_step(
                rt.db, settings, account_id, rt.now(), store, reserve=BACKFILL_RESERVE, max_requests=max_requests
            )
            steps += 1
            # The step's pages were stored with their runs only marked: one recompute, in short transactions.
            replan(rt.db, rt.settings, athlete_id, rt.now())
            leases.acquire(rt.db, name, owner, datetime.now(UTC), BACKFILL_LEASE_S)  # renew
            totals["requests"] += step.requests
            totals["skipped"] += step.skipped
            totals["streams"] += step.streams
            state = step.state
            if since is not None and step.cursor is not None and step.cursor <= since and state != "error":
                _mark_done(rt, account_id, f"imported back to {since.date().isoformat()}")
                state = "done"
            progress = BackfillProgress(
                state,
                totals["requests"],
                totals["stored"],
                totals["skipped"],
                totals["streams"],
                step.resume_at if state == "deferred" else None,
                step.reason,
                step.cursor,
            )
            if on_step is not None:
                on_step(progress)
            paused = state == "deferred" and step.resume_at is not None and step.resume_at > rt.now()
            if state in ("done", "error") or paused or (max_steps is not None and steps >= max_steps):
                break
    finally:
        leases.release(rt.db, name, owner)
    log.info(
        "Strava backfill of account %s: %s (%d requests, %d runs)",
        account_id,
        progress.state,
        progress.requests,
        progress.stored,
    )
    return progress


# -- keys ----------------------------------------------------------------------------------------------------


def rotate_keys(rt: Runtime) -> tuple[int, int]:
    """Re-encrypt every Strava token and athlete webhook secret under the newest key of the ring; returns
    ``(accounts, webhook secrets)`` rotated. Rows are locked so a concurrent token refresh is not undone."""
    vault = rt.vault
    accounts = secrets_ = 0
    with rt.db.transaction() as session:
        for account in session.scalars(select(StravaAccount).with_for_update()):
            account.access_token_enc = vault.rotate(account.access_token_enc)
            account.refresh_token_enc = vault.rotate(account.refresh_token_enc)
            accounts += 1
        for athlete in session.scalars(
            select(Athlete).where(Athlete.webhook_secret_enc.is_not(None)).with_for_update()
        ):
            assert athlete.webhook_secret_enc is not None
            athlete.webhook_secret_enc = vault.rotate(athlete.webhook_secret_enc)
            secrets_ += 1
        from stridecare.plugins import rotate_channel_secrets

        for athlete in session.scalars(select(Athlete).with_for_update()):
            secrets_ += rotate_channel_secrets(athlete, vault)  # push URLs and plugin channels' secrets
    return accounts, secrets_
