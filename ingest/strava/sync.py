"""Strava runs in SQL: store parsed activities idempotently through the one writer (``ingest.runs``), keep
what Strava said of each (``SourceRecord``), update and remove them, forget an athlete, and the backfill loop.

A Strava activity is stored once per athlete: ``(athlete_id, "strava", activity id)`` is unique.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest import runs
from ingest.strava.backfill import BackfillProgress, backfill_step, start_backfill
from ingest.strava.convert import SOURCE
from stridecare.db import leases
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, Run, SourceRecord, StravaAccount, StravaEvent
from stridecare.domain.run import ParsedRun
from stridecare.plugins import rotate_channel_secrets
from stridecare.runtime import Runtime

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
    return runs.find_run(session, athlete_id, SOURCE, str(activity_id))


def keep_record(session: Session, athlete_id: int, activity_id: str, record: Mapping[str, Any]) -> None:
    """Keep what Strava said of the activity (its JSON, and its streams when fetched) as it came, so that
    ``stridecare recompute`` rebuilds the run without fetching it again. A summary never replaces a record
    that holds streams: an update event re-fetches only the summary."""
    row = session.scalar(
        select(SourceRecord).where(
            SourceRecord.athlete_id == athlete_id,
            SourceRecord.source == SOURCE,
            SourceRecord.source_key == activity_id,
        )
    )
    if row is not None and record.get("streams") is None:
        kept = json.loads(zlib.decompress(row.payload))
        if kept.get("streams") is not None:
            record = {**record, "streams": kept["streams"]}
    payload = zlib.compress(json.dumps(record, separators=(",", ":"), default=str).encode())
    if row is None:
        session.add(SourceRecord(athlete_id=athlete_id, source=SOURCE, source_key=activity_id, payload=payload))
    elif row.payload != payload:
        row.payload = payload


def kept_record(row: SourceRecord) -> dict[str, Any]:
    """A kept Strava record: ``{"activity": …, "streams": … or None}``."""
    record: dict[str, Any] = json.loads(zlib.decompress(row.payload))
    return record


def store_parsed(
    session: Session,
    athlete: Athlete,
    parsed_runs: Sequence[ParsedRun],
    *,
    records: Mapping[str, Mapping[str, Any]] | None = None,
) -> runs.Stored:
    """Insert new Strava runs (linking a file copy of the same session) or update stored ones through the one
    writer (``ingest.runs``), keeping each activity's record (``records``: activity id → what Strava said), in
    the caller's transaction. Storing the same activity again changes nothing. The caller ends as every
    entry point does: if the result owes the athlete's replan, replan."""
    for key, record in (records or {}).items():
        keep_record(session, athlete.id, key, record)
    return runs.store_parsed(session, athlete, parsed_runs)


def store_runs(
    db: Database,
    athlete_id: int,
    parsed_runs: Sequence[ParsedRun],
    *,
    records: Mapping[str, Mapping[str, Any]] | None = None,
) -> runs.Stored:
    """Store ``parsed_runs`` for the athlete in one transaction (the backfill's ``store``). Idempotent, and safe
    against an event storing the same activity at once."""
    for attempt in range(2):
        try:
            with db.transaction() as session:
                athlete = session.get(Athlete, athlete_id)
                if athlete is None:
                    return runs.Stored()
                return store_parsed(session, athlete, parsed_runs, records=records)
        except IntegrityError:
            # A concurrent event stored one of these activities first: the second pass updates it instead.
            if attempt:
                raise
    return runs.Stored()  # pragma: no cover - the loop returns or raises


def forget_account(session: Session, account: StravaAccount) -> int:
    """Delete everything we hold from Strava for this account: its runs (with samples and load), its records,
    its push events and the account with its tokens, as Strava's API agreement requires after a
    deauthorization. The athlete is marked for the replan that recomputes load without those runs. Returns
    the number of runs deleted."""
    athlete = session.get(Athlete, account.athlete_id)
    deleted = 0
    if athlete is not None:
        doomed = list(session.scalars(select(Run).where(Run.athlete_id == athlete.id, Run.source == SOURCE)))
        runs.remove_runs(session, athlete, doomed)
        deleted = len(doomed)
        session.execute(
            delete(SourceRecord).where(SourceRecord.athlete_id == athlete.id, SourceRecord.source == SOURCE)
        )
    session.execute(
        delete(StravaEvent)
        .where(StravaEvent.payload["owner_id"].as_integer() == account.strava_athlete_id)
        .execution_options(synchronize_session=False)
    )
    session.delete(account)
    session.flush()
    return deleted


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
    replan: Callable[[int], object],
) -> BackfillProgress | None:
    """Import the account's Strava history under its backfill lease: the one backfill loop.

    Works in steps of at most ``max_requests`` requests, committing after each and calling ``on_step`` with
    the totals so far; stops after ``max_steps`` steps (the periodic task does one; ``None`` goes on until
    the history is done, access is refused, or the rate limit defers it to a later time). ``since`` keeps
    only activities started at or after it (and asks no streams for older ones) and ends the import once the
    cursor has passed it; ``restart`` (or ``since`` on a finished import) starts again from the newest
    activity. Returns the totals, or ``None`` when another process holds the lease or the account is gone.
    A step that stops at its request cap leaves the backfill due at once, so the next periodic tick
    continues it. After each step that stored runs the athlete is replanned by ``replan(athlete_id)`` (the
    planner, which this loop does not import: storing stands apart from planning).
    """
    owner = lease_owner()
    name = backfill_lease(account_id)
    # Wall time: the lease guards real processes, whatever the simulation clock says.
    if not leases.acquire(rt.db, name, owner, datetime.now(UTC), BACKFILL_LEASE_S):
        return None
    try:
        with rt.db.read() as session:
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

        owed = False

        def store(parsed: Sequence[ParsedRun], records: Mapping[str, Mapping[str, Any]]) -> None:
            nonlocal owed
            kept = [p for p in parsed if since is None or p.start_time >= since]
            totals["stored"] += len(kept)
            kept_records = {p.source_key: records[p.source_key] for p in kept if p.source_key in records}
            owed = store_runs(rt.db, athlete_id, kept, records=kept_records).replan_owed or owed

        steps = 0
        while True:
            step = backfill_step(
                rt.db, settings, account_id, rt.now(), store, reserve=BACKFILL_RESERVE, max_requests=max_requests
            )
            steps += 1
            # The step's pages were stored with their runs only marked: one recompute, in short transactions.
            if owed:
                replan(athlete_id)
                owed = False
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
        for athlete in session.scalars(select(Athlete).with_for_update()):
            secrets_ += rotate_channel_secrets(athlete, vault)  # webhook secrets, push URLs, plugin channels' secrets
    return accounts, secrets_
