"""Resumable import of an athlete's Strava history, scheduled against the rate-limit budget.

One call of :func:`backfill_step` works until the history is done, the budget is spent, Strava answers 429 or
``max_requests`` is reached; it never sleeps. Its cursor lives on :class:`StravaAccount`:

* ``backfill_before`` — list activities that started strictly before this time (newest first). After each
  activity handed over it becomes that activity's start + 1 s, with the ids already handed over at that second
  in ``backfill_seen_ids``. Re-listing the boundary second costs one overlapping item per page but loses
  nothing when activities share a start second across a page boundary, and, unlike page numbers, it is not
  shifted when the athlete deletes activities during a backfill that can span days.
* ``backfill_page`` — list pages fetched so far (progress only).
* ``backfill_state`` — ``pending`` | ``running`` | ``deferred`` | ``done`` | ``error``; ``backfill_resume_at``
  says when a deferred backfill may continue, so a periodic job can enqueue what is due.

Pages hold 200 summaries, which carry ``average_cadence`` and ``moving_time``: older runs need no other
request. Streams are fetched only for foot activities that started within ``strava_streams_days``.
Runs go to the caller's ``store(parsed_runs)`` before the cursor moves past them, so ``store`` must be
idempotent (``(source, source_key)`` is unique); a crash in between only repeats a store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from sqlalchemy import select

from ingest.strava import ratelimit
from ingest.strava.client import strava_exc
from ingest.strava.convert import STREAM_KEYS, convert_activity, is_foot_activity
from ingest.strava.errors import StravaAuthError, StravaDeferred, StravaError
from ingest.strava.reader import ApiReader
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, StravaAccount
from stridecare.domain.run import ParsedRun
from stridecare.logging import event
from stridecare.settings import Settings

log = logging.getLogger(__name__)
console = logging.getLogger("stridecare.console")

PER_PAGE = 200
# After an unexpected failure (network, 5xx) try again after this long.
ERROR_RETRY = timedelta(minutes=5)

# The runs of a batch, and what Strava said of each (activity id → {"activity": …, "streams": …}).
Store = Callable[[Sequence[ParsedRun], Mapping[str, Mapping[str, Any]]], None]


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    """What one step did and where the backfill stands."""

    state: str
    requests: int = 0
    stored: int = 0
    skipped: int = 0
    streams: int = 0
    resume_at: datetime | None = None
    reason: str = ""
    cursor: datetime | None = None


def _epoch(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


def start_backfill(db: Database, account_id: int, now: datetime) -> None:
    """(Re)start an account's backfill from ``now`` backwards; the next step begins at the newest activity."""
    with db.transaction() as s:
        account = s.get(StravaAccount, account_id)
        if account is None:
            raise StravaError(f"no Strava account {account_id}")
        account.backfill_state = "pending"
        account.backfill_before = None
        account.backfill_page = 0
        account.backfill_seen_ids = []
        account.backfill_resume_at = now
        account.backfill_detail = None


def due_backfills(db: Database, now: datetime) -> list[int]:
    """Account ids whose backfill is pending or deferred and due at ``now`` (for the periodic job)."""
    with db.read() as s:
        rows = s.execute(
            select(StravaAccount.id, StravaAccount.backfill_resume_at).where(
                StravaAccount.backfill_state.in_(("pending", "running", "deferred"))
            )
        ).all()
    return [r.id for r in rows if r.backfill_resume_at is None or r.backfill_resume_at <= now]


def backfill_step(
    db: Database,
    settings: Settings,
    account_id: int,
    now: datetime,
    store: Store,
    *,
    reserve: int = 0,
    max_requests: int | None = None,
) -> BackfillProgress:
    """Import as much of the account's history as the budget allows now, handing runs to ``store``.

    ``now`` (timezone-aware) decides the rate-limit windows and the streams window. ``reserve`` keeps that
    many requests of each window for other work (webhook events). Returns ``done``, ``deferred`` (with
    ``resume_at``, also stored on the account), or ``error`` (access revoked). A 429 or an exhausted budget
    loses nothing: the cursor only moves past runs that ``store`` has accepted.
    """
    now = now.astimezone(UTC)
    api = ApiReader(db, settings, account_id, now, reserve=reserve, max_requests=max_requests)
    counts = {"stored": 0, "skipped": 0, "streams": 0}
    with db.transaction() as s:
        account = s.get(StravaAccount, account_id)
        if account is None:
            raise StravaError(f"no Strava account {account_id}")
        if account.backfill_state == "done":
            return BackfillProgress("done", cursor=account.backfill_before)
        before = account.backfill_before or now
        owner = s.get(Athlete, account.athlete_id)
        athlete_name = owner.name if owner is not None else str(account.athlete_id)
        seen: set[int] = set(account.backfill_seen_ids or [])
        pages = account.backfill_page
        account.backfill_state = "running"

    streams_since = now - timedelta(days=settings.strava_streams_days)
    cursor, cursor_seen = before, set(seen)

    def checkpoint(batch: list[ParsedRun], state: str, resume_at: datetime | None, detail: str | None) -> None:
        if batch:
            store(batch, records)
            counts["stored"] += len(batch)
            batch.clear()
            records.clear()
        with db.transaction() as s:
            account = s.get(StravaAccount, account_id)
            assert account is not None
            account.backfill_before = cursor
            account.backfill_seen_ids = sorted(cursor_seen)
            account.backfill_page = pages
            account.backfill_state = state
            account.backfill_resume_at = resume_at
            account.backfill_detail = detail
            ratelimit.save_budget(s, api.budget)

    def progress(state: str, resume_at: datetime | None = None, reason: str = "") -> BackfillProgress:
        return BackfillProgress(
            state, api.requests, counts["stored"], counts["skipped"], counts["streams"], resume_at, reason, cursor
        )

    batch: list[ParsedRun] = []
    records: dict[str, Mapping[str, Any]] = {}
    try:
        while True:
            before_epoch = int(cursor.timestamp()) if cursor.microsecond == 0 else int(cursor.timestamp()) + 1
            page: list[dict[str, Any]] = api.get("/athlete/activities", before=before_epoch, page=1, per_page=PER_PAGE)
            pages += 1
            fresh = [a for a in page if int(a["id"]) not in cursor_seen]
            for activity in fresh:
                started = datetime.fromtimestamp(_epoch(activity["start_date"]), UTC)
                streams = None
                if is_foot_activity(activity) and started >= streams_since and not activity.get("manual"):
                    try:
                        streams = api.get(
                            "/activities/{id}/streams",
                            id=activity["id"],
                            keys=",".join(STREAM_KEYS),
                            key_by_type="true",
                        )
                        counts["streams"] += 1
                    except strava_exc.ObjectNotFound:
                        streams = None  # no streams (or deleted meanwhile): the summary still counts
                result = convert_activity(activity, settings.load.constants, streams)
                if isinstance(result, ParsedRun):
                    batch.append(result)
                    records[result.source_key] = {"activity": activity, "streams": streams}
                else:
                    counts["skipped"] += 1
                    # Said on the console, as an ignored file is: the stored ones get their line once planned.
                    event(
                        console,
                        "activity",
                        f"{athlete_name}: Strava activity {activity['id']} ignored: {result.reason}",
                        athlete=athlete_name,
                        source="strava",
                        activity_id=str(activity["id"]),
                        status="ignored",
                        reason=result.reason,
                    )
                next_cursor = started + timedelta(seconds=1)
                if next_cursor != cursor:
                    cursor, cursor_seen = next_cursor, set()
                cursor_seen.add(int(activity["id"]))
            if len(page) < PER_PAGE:
                checkpoint(batch, "done", None, None)
                log.info("Strava backfill of account %s done (%d pages)", account_id, pages)
                return progress("done")
            if not fresh:
                # A full page of one start second already seen (pathological): step past that second.
                cursor, cursor_seen = cursor - timedelta(seconds=1), set()
            checkpoint(batch, "running", now, None)
    except StravaDeferred as deferred:
        checkpoint(batch, "deferred", deferred.resume_at, deferred.reason)
        return progress("deferred", deferred.resume_at, deferred.reason)
    except (strava_exc.AccessUnauthorized, StravaAuthError) as err:
        # Refused even after one forced refresh, or the refresh token itself was refused.
        detail = "Strava access was revoked or refused; the athlete must reconnect"
        checkpoint(batch, "error", None, detail)
        log.warning("Strava backfill of account %s stopped: %s", account_id, type(err).__name__)
        return progress("error", None, detail)
    except (strava_exc.Fault, requests.RequestException, StravaError) as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        detail = f"{type(err).__name__} (HTTP {status})" if status else type(err).__name__
        checkpoint(batch, "deferred", now + ERROR_RETRY, detail)
        log.warning("Strava backfill of account %s deferred after %s", account_id, detail)
        return progress("deferred", now + ERROR_RETRY, detail)
