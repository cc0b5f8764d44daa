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
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.dedupe import link_duplicate, richness
from ingest.store import add_run
from ingest.strava.backfill import BackfillProgress, backfill_step
from ingest.strava.convert import SOURCE
from recommender.planner import refresh_daily, runs_changed
from stridecare.db import leases
from stridecare.db.athletes import lock_athlete
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, Prompt, Run, RunSamples, StravaAccount, StravaEvent
from stridecare.db.samples import ENCODING, pack_samples
from stridecare.domain.history import local_day
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
    session: Session, settings: Settings, athlete: Athlete, parsed_runs: Sequence[ParsedRun], now: datetime
) -> list[Run]:
    """Insert new Strava runs (linking a FIT copy of the same session) or update stored ones, then update load
    and prompts for what changed, in the caller's transaction. Storing the same activity again changes
    nothing. Returns the runs inserted or changed."""
    lock_athlete(session, athlete.id)
    changed: list[Run] = []
    for parsed in parsed_runs:
        run = find_run(session, athlete.id, parsed.source_key)
        if run is None:
            run = add_run(session, athlete.id, parsed, None)
            session.flush()
            link_duplicate(session, athlete.id, run)
            changed.append(run)
        elif _apply(run, parsed):
            changed.append(run)
    if changed:
        session.flush()
        # Only primaries count: a Strava copy of a richer FIT run gets neither load nor a prompt.
        runs_changed(session, settings, athlete, changed, now)
    return changed


def store_runs(
    db: Database, settings: Settings, athlete_id: int, parsed_runs: Sequence[ParsedRun], now: datetime
) -> int:
    """Store ``parsed_runs`` for the athlete in one transaction (the backfill's ``store``); returns how many
    runs were inserted or changed. Idempotent, and safe against an event storing the same activity at once."""
    for attempt in range(2):
        try:
            with db.transaction() as session:
                athlete = session.get(Athlete, athlete_id)
                if athlete is None:
                    return 0
                return len(store_parsed(session, settings, athlete, parsed_runs, now))
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
            copies = [
                c for c in session.scalars(select(Run).where(Run.duplicate_of_id == run.id)) if c.id not in doomed
            ]
            if copies:
                heir = max(copies, key=richness)
                heir.duplicate_of_id = None
                for other in copies:
                    if other is not heir:
                        other.duplicate_of_id = heir.id
                session.execute(
                    update(Prompt)
                    .where(Prompt.run_id == run.id)
                    .values(run_id=heir.id)
                    .execution_options(synchronize_session="fetch")
                )
                promoted.append(heir)
    for run in runs:
        session.delete(run)
    session.flush()
    if affected:
        refresh_daily(session, settings, athlete, min(local_day(t, athlete.timezone) for t in affected))
    if promoted:
        runs_changed(session, settings, athlete, promoted, now)
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


def backfill_account(
    rt: Runtime, account_id: int, *, max_requests: int | None = BACKFILL_STEP_REQUESTS
) -> BackfillProgress | None:
    """One backfill step for the account (the periodic task's work), under the account's backfill lease.

    Returns ``None`` when another process holds the lease or the account is gone. A step that stops at its
    request cap leaves the backfill due at once, so the next periodic tick continues it.
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
            athlete_id = account.athlete_id

        def store(parsed: Sequence[ParsedRun]) -> None:
            store_runs(rt.db, rt.settings, athlete_id, parsed, rt.now())

        progress = backfill_step(
            rt.db,
            rt.settings,
            account_id,
            rt.now(),
            store,
            reserve=BACKFILL_RESERVE,
            max_requests=max_requests,
        )
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
    return accounts, secrets_
