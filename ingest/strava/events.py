"""Strava push events: appended on receipt, drained by the workers from the events table, swept up by the tick.

Strava needs a 200 within 2 seconds and retries otherwise, and its events are not signed. So the web handler
only checks the ``subscription_id`` and appends the event (:func:`append_events`, through the web app's group
commit: the events of a burst share one transaction; unique on their content, so a retry is stored once). The
events table is the queue: the broker carries no event, only a "look" (one ``stridecare.strava_drain`` per
batch at most), and :func:`drain` claims due events in batches, processes each with :func:`process_claimed`
and finishes it. A worker calls the same processing for one id (:func:`process_event`), which treats the event
as a hint, never as the truth:

* a ``create`` (or an ``update`` of an activity we do not hold) makes the athlete's recent-activities list due.
  The list is read at most once per ``strava_list_interval_s`` per athlete, and one list answers every event
  of that athlete waiting for it: a burst of events costs one list request, however many there are. Only
  activities the list shows are fetched (their streams; the list's summaries carry the rest), so a forged
  flood of events for activities that do not exist costs one list request per athlete per interval (and one
  more to confirm the misses), and the budget's last requests stay free for real runs;
* an ``update`` of an activity we hold re-fetches it (keeping ``strava_event_reserve`` requests of each
  window for new runs); a ``delete`` removes a run only once the API confirms the activity is gone;
* a deauthorization deletes data only after a token call has failed.

:func:`sweep` (every periodic tick) hands one athlete's waiting event on when its list is due and asks for a
drain when any event is due (a lost nudge, a drain killed half-way, a retry whose time came), and hands due
backfills on.

Event statuses: ``pending`` (due at ``next_attempt_at``: at once when received, later for a retry),
``processing`` (claimed; ``next_attempt_at`` = when a crashed worker's claim lapses), ``listing`` (waiting for
the athlete's next activity list, due at ``next_attempt_at``), and the final ``done``, ``ignored``, ``failed``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ingest.runs import remove_runs
from ingest.strava.backfill import due_backfills
from ingest.strava.client import strava_exc
from ingest.strava.convert import STREAM_KEYS, convert_activity
from ingest.strava.errors import (
    InvalidEvent,
    StravaAccountMissing,
    StravaAppInactive,
    StravaAuthError,
    StravaDeferred,
    StravaError,
)
from ingest.strava.reader import ApiReader
from ingest.strava.sync import find_run, forget_account, store_parsed
from stridecare.db.engine import is_sqlite
from stridecare.db.models import Athlete, StravaAccount, StravaEvent
from stridecare.domain.run import ParsedRun
from stridecare.runtime import Runtime
from stridecare.settings import Settings

log = logging.getLogger(__name__)

OBJECT_TYPES = frozenset({"activity", "athlete"})
ASPECT_TYPES = frozenset({"create", "update", "delete"})
# A listing event the sweep passed over (another event of its athlete was handed on for the list) is looked at
# again after this long.
ENQUEUE_GRACE = timedelta(seconds=60)
# Events one drain claims at a time (one transaction), and at most per drain task (then it asks for another, so
# a flood does not hold a worker slot that files wait for).
DRAIN_BATCH = 50
DRAIN_MAX = 1000
# A worker that claimed an event and died gives it back after this long.
CLAIM_TTL = timedelta(minutes=10)
# Retry delays after transient failures (network, 5xx); then the event is marked failed.
RETRY_DELAYS = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(hours=6),
)
# Waiting for the athlete's next activity list.
LISTING = "listing"
# Not finished: waiting, or claimed (a drain claims a batch, and one list or fetch answers the batch's other
# events of the same athlete or activity too; the drain then passes over them).
UNFINISHED = ("pending", LISTING, "processing")
# The list shows the newest activities first: one page covers any athlete's last days.
RECENT_PER_PAGE = 50
# An activity the list did not show is looked for once more at the next list when its event came this shortly
# before the list (Strava may send the event a moment before its list shows the activity); otherwise, and after
# a second miss, the event is done. A flood's events older than this cost no second list.
RECHECK_WITHIN = timedelta(seconds=60)
NOT_LISTED = (
    "not in the athlete's recent activities at Strava (deleted, private without activity:read_all, or never there)"
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The stored event's id; ``created`` is False for a retry of an event already stored."""

    id: int
    created: bool


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What processing did: ``status`` is the event's new status (or ``skipped`` when it was not claimed)."""

    status: str
    detail: str = ""
    runs_changed: bool = False
    # The events whose runs changed (one list can answer several): each gets its console line.
    changed_events: tuple[int, ...] = ()
    # The athlete whose replan this processing owes: the caller replans, as after any store.
    replan_athlete: int | None = None


class _Retry(Exception):
    """Try the event again at ``at`` (rate limit, network, Strava 5xx)."""

    def __init__(self, at: datetime | None, reason: str) -> None:
        super().__init__(reason)
        self.at = at
        self.reason = reason


# -- receiving -----------------------------------------------------------------------------------------------


def _int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidEvent(f"{key} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise InvalidEvent(f"{key} must be an integer") from None


def parse_event(body: Any) -> dict[str, Any]:
    """The event's fields, validated and normalised; raises :class:`InvalidEvent`."""
    if not isinstance(body, Mapping):
        raise InvalidEvent("event must be a JSON object")
    object_type = body.get("object_type")
    aspect_type = body.get("aspect_type")
    if object_type not in OBJECT_TYPES:
        raise InvalidEvent("unknown object_type")
    if aspect_type not in ASPECT_TYPES:
        raise InvalidEvent("unknown aspect_type")
    updates = body.get("updates") or {}
    if not isinstance(updates, Mapping):
        raise InvalidEvent("updates must be an object")
    return {
        "object_type": object_type,
        "object_id": _int(body, "object_id"),
        "aspect_type": aspect_type,
        "owner_id": _int(body, "owner_id"),
        "subscription_id": _int(body, "subscription_id"),
        "event_time": _int(body, "event_time"),
        # Strava sends strings ("authorized": "false"); keep values short so a body cannot bloat the table.
        "updates": {str(k)[:64]: str(v)[:300] for k, v in updates.items()},
    }


def dedupe_key(event: Mapping[str, Any]) -> str:
    """A stable key of the event's content: Strava's retries of one event have the same key."""
    fields = {k: event.get(k) for k in ("object_type", "object_id", "aspect_type", "event_time", "owner_id")}
    fields["updates"] = dict(sorted((event.get("updates") or {}).items()))
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def subscription_matches(settings: Settings, event: Mapping[str, Any]) -> bool:
    """True when the event names our push subscription. Events are unsigned: with no subscription id
    configured, none is trusted."""
    expected = settings.strava_subscription_id
    return expected is not None and event.get("subscription_id") == expected


def _insert(conn: Connection) -> Any:
    """An INSERT that skips a row whose dedupe key is already stored (Strava's retry of an event)."""
    table = StravaEvent.__table__
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])


def append_events(conn: Connection, events: Sequence[Mapping[str, Any]], now: datetime) -> list[StoredEvent]:
    """Append parsed events in the caller's transaction (SQLAlchemy Core: no ORM flush), each due at once; one
    result per event, in order. A retry of an event already stored (or twice in ``events``) is not stored
    again and comes back with ``created`` False."""
    keyed = [(dedupe_key(e), e) for e in events]
    rows: dict[str, dict[str, Any]] = {}
    for key, event in keyed:
        rows.setdefault(
            key,
            {
                "dedupe_key": key,
                "payload": dict(event),
                "status": "pending",
                "attempts": 0,
                "list_misses": 0,
                "received_at": now,
                "next_attempt_at": now,
            },
        )
    table = StravaEvent.__table__
    ids: dict[str, StoredEvent] = {}
    for _ in range(3):
        todo = [row for key, row in rows.items() if key not in ids]
        if not todo:
            break
        inserted = conn.execute(_insert(conn).values(todo).returning(table.c.id, table.c.dedupe_key))
        ids.update({key: StoredEvent(id_, True) for id_, key in inserted})
        missing = [key for key in rows if key not in ids]
        if missing:
            found = conn.execute(select(table.c.id, table.c.dedupe_key).where(table.c.dedupe_key.in_(missing)))
            ids.update({key: StoredEvent(id_, False) for id_, key in found})
        # A key neither inserted nor found collided with a row deleted meanwhile (a deauthorization): again.
    if len(ids) < len(rows):  # pragma: no cover - needs three races in a row
        raise RuntimeError("could not store the Strava event")
    out: list[StoredEvent] = []
    for key, _event in keyed:
        out.append(ids[key])
        ids[key] = StoredEvent(ids[key].id, False)  # the same event twice in one batch: stored once
    return out


def store_event(rt: Runtime, event: Mapping[str, Any]) -> StoredEvent:
    """Store one parsed event in a transaction of its own (no API call); its id and whether it is new."""
    with rt.db.transaction() as session:
        (stored,) = append_events(session.connection(), [event], rt.now())
    return stored


# -- processing ----------------------------------------------------------------------------------------------


def _claim(rt: Runtime, event_id: int, now: datetime) -> dict[str, Any] | None:
    """Take the event for this worker; None when it is finished or another worker holds a live claim."""
    with rt.db.transaction() as session:
        result = session.execute(
            update(StravaEvent)
            .where(
                StravaEvent.id == event_id,
                (StravaEvent.status == "pending")
                | ((StravaEvent.status == "processing") & (StravaEvent.next_attempt_at <= now)),
            )
            .values(status="processing", attempts=StravaEvent.attempts + 1, next_attempt_at=now + CLAIM_TTL)
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return None
        payload = session.scalar(select(StravaEvent.payload).where(StravaEvent.id == event_id))
    return dict(payload) if payload is not None else None


def _finish(rt: Runtime, event_id: int, now: datetime, status: str, detail: str) -> None:
    with rt.db.transaction() as session:
        row = session.get(StravaEvent, event_id)
        if row is not None:
            row.status, row.detail, row.processed_at = status, detail[:500], now


def _reschedule(rt: Runtime, event_id: int, now: datetime, retry: _Retry) -> EventOutcome:
    with rt.db.transaction() as session:
        row = session.get(StravaEvent, event_id)
        if row is None:
            return EventOutcome("skipped", "event deleted")
        if retry.at is None and row.attempts > len(RETRY_DELAYS):
            row.status, row.detail, row.processed_at = "failed", retry.reason[:500], now
            log.warning("Strava event %s failed after %d attempts: %s", event_id, row.attempts, retry.reason)
            return EventOutcome("failed", retry.reason)
        delay = RETRY_DELAYS[min(max(row.attempts, 1), len(RETRY_DELAYS)) - 1]
        row.status, row.detail = "pending", retry.reason[:500]
        row.next_attempt_at = retry.at if retry.at is not None else now + delay
        at = row.next_attempt_at
    log.info("Strava event %s will be retried at %s: %s", event_id, at.isoformat(), retry.reason)
    return EventOutcome("pending", retry.reason)


def process_event(rt: Runtime, event_id: int) -> EventOutcome:
    """Process one stored event by id (the ``stridecare.strava_event`` task; :func:`drain` takes them in
    batches). Safe to call twice: only a pending event (or one whose claim lapsed) is processed.

    * activity create (or update of an activity we do not hold) → the athlete's recent-activities list is due:
      read now when ``strava_list_interval_s`` has passed since the last one (the event then answers every
      waiting event of the athlete: their listed activities stored, with streams within
      ``strava_streams_days``, runs, load and prompts in one transaction), else the event waits (``listing``);
    * activity update of a run we hold → re-fetch and update the run (removed when it is no longer a foot sport
      or no longer visible), recompute;
    * activity delete → only when we hold the run: ask the API, and remove the run (and recompute) only when
      Strava answers 404 or the activity is no longer this athlete's; a delete the API contradicts is forged
      or stale and is ignored;
    * athlete update with ``authorized: "false"`` → confirm with a token call that must fail, then delete the
      athlete's Strava data.
    """
    now = rt.now()
    event = _claim(rt, event_id, now)
    if event is None:
        return EventOutcome("skipped", "not pending")
    return process_claimed(rt, event_id, event, now)


def process_claimed(rt: Runtime, event_id: int, event: Mapping[str, Any], now: datetime) -> EventOutcome:
    """Process an event this worker has claimed (``processing``) and finish it, or schedule its retry."""
    try:
        outcome = _handle(rt, event_id, event, now)
    except _Retry as retry:
        return _reschedule(rt, event_id, now, retry)
    except (StravaError, strava_exc.Fault, requests.RequestException) as err:
        return _reschedule(rt, event_id, now, _Retry(None, _describe(err)))
    except Exception as err:
        # An unexpected payload or a bug: retried on the usual schedule and then marked failed, instead of
        # staying claimed and being retried forever.
        log.warning("Strava event %s raised %s", event_id, type(err).__name__, exc_info=True)
        # The exception's own words ("'NoneType' object has no attribute …") say nothing to the athlete.
        reason = f"unexpected error while processing the event ({type(err).__name__}); see the worker log"
        return _reschedule(rt, event_id, now, _Retry(None, reason))
    if outcome.status not in ("deleted", LISTING):
        _finish(rt, event_id, now, outcome.status, outcome.detail)
    log.info("Strava event %s: %s %s", event_id, outcome.status, outcome.detail)
    return outcome


def claim_due(rt: Runtime, now: datetime, limit: int = DRAIN_BATCH) -> list[tuple[int, dict[str, Any]]]:
    """The events :func:`claim_batch` claimed (id and payload)."""
    return claim_batch(rt, now, limit)[0]


def claim_batch(rt: Runtime, now: datetime, limit: int = DRAIN_BATCH) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Claim up to ``limit`` due events, oldest first, in one transaction: pending ones whose time has come and
    claims of crashed workers that lapsed. Each is ``processing`` until ``now + CLAIM_TTL``; concurrent drains
    claim disjoint batches (PostgreSQL: rows another drain is claiming are skipped, not waited for).

    Events no worker could act on are finished in the same transaction instead of claimed, as
    :func:`process_claimed` would finish them one by one: another subscription's, and those of a Strava
    athlete with no connected account (a forged flood costs one statement, not a few per event)."""
    due = (
        select(StravaEvent.id, StravaEvent.payload)
        .where(StravaEvent.status.in_(("pending", "processing")), StravaEvent.next_attempt_at <= now)
        .order_by(StravaEvent.id)
        .limit(limit)
    )
    with rt.db.transaction() as session:
        if not is_sqlite(rt.db.engine):
            due = due.with_for_update(skip_locked=True)
        # SQLite: the transaction holds the one write lock from its start (BEGIN IMMEDIATE), so no other
        # drain reads between this select and the update.
        rows = [(int(id_), dict(payload)) for id_, payload in session.execute(due)]
        if not rows:
            return [], 0
        owners = {int(p["owner_id"]) for _, p in rows if subscription_matches(rt.settings, p)}
        connected = (
            set(
                session.scalars(
                    select(StravaAccount.strava_athlete_id).where(StravaAccount.strava_athlete_id.in_(owners))
                )
            )
            if owners
            else set()
        )
        unknown = [i for i, p in rows if not subscription_matches(rt.settings, p)]
        unconnected = [i for i, p in rows if i not in unknown and int(p["owner_id"]) not in connected]
        for ids, detail in (
            (unknown, "unknown subscription_id"),
            (unconnected, "no connected account for this Strava athlete"),
        ):
            if ids:
                session.execute(
                    update(StravaEvent)
                    .where(StravaEvent.id.in_(ids))
                    .values(status="ignored", detail=detail, processed_at=now, attempts=StravaEvent.attempts + 1)
                    .execution_options(synchronize_session=False)
                )
        finished = set(unknown) | set(unconnected)
        claimed = [(i, p) for i, p in rows if i not in finished]
        if claimed:
            session.execute(
                update(StravaEvent)
                .where(StravaEvent.id.in_([i for i, _ in claimed]))
                .values(status="processing", attempts=StravaEvent.attempts + 1, next_attempt_at=now + CLAIM_TTL)
                .execution_options(synchronize_session=False)
            )
    if finished:
        log.info("Strava events ignored: %d (another subscription, or no connected account)", len(finished))
    return claimed, len(finished)


def _still_claimed(rt: Runtime, event_id: int) -> bool:
    with rt.db.read() as session:
        return session.scalar(select(StravaEvent.status).where(StravaEvent.id == event_id)) == "processing"


def drain(
    rt: Runtime,
    after: Callable[[int, EventOutcome], Any] | None = None,
    *,
    batch: int = DRAIN_BATCH,
    max_events: int = DRAIN_MAX,
) -> tuple[int, bool]:
    """Process due events, a claimed batch at a time, until none is due or ``max_events`` were taken;
    ``after(event_id, outcome)`` follows each (the task's replan and console line). Returns how many were
    taken (those finished at the claim included) and whether more were due when it stopped.

    Killed half-way, a batch's finished events stay finished and the rest (the one in progress included) are
    claimed again once their claim lapses: a run is stored under its unique key and a prompt once, so nothing
    is doubled."""
    done = 0
    while done < max_events:
        now = rt.now()
        size = min(batch, max_events - done)
        claimed, finished = claim_batch(rt, now, size)
        done += finished
        if not claimed and not finished:
            return done, False
        owners: set[Any] = set()
        for event_id, payload in claimed:
            owner = payload.get("owner_id")
            # An earlier event of the same athlete may have answered this one (one list or fetch answers them).
            if owner in owners and not _still_claimed(rt, event_id):
                done += 1
                continue
            owners.add(owner)
            outcome = process_claimed(rt, event_id, payload, now)
            done += 1
            if after is not None:
                after(event_id, outcome)
    return done, True


def _describe(err: BaseException) -> str:
    # Type and HTTP status only: exception texts of HTTP libraries can carry URLs and bodies.
    status = getattr(getattr(err, "response", None), "status_code", None)
    return f"{type(err).__name__} (HTTP {status})" if status else type(err).__name__


def _account_id(rt: Runtime, owner_id: int) -> int | None:
    with rt.db.read() as session:
        return session.scalar(select(StravaAccount.id).where(StravaAccount.strava_athlete_id == owner_id))


def _handle(rt: Runtime, event_id: int, event: Mapping[str, Any], now: datetime) -> EventOutcome:
    if not subscription_matches(rt.settings, event):
        # Checked again here: the subscription may have changed between receipt and processing.
        return EventOutcome("ignored", "unknown subscription_id")
    account_id = _account_id(rt, int(event["owner_id"]))
    if account_id is None:
        return EventOutcome("ignored", "no connected account for this Strava athlete")
    object_type, aspect = event["object_type"], event["aspect_type"]
    if object_type == "athlete":
        if aspect == "update" and str(event.get("updates", {}).get("authorized", "")).lower() == "false":
            return _deauthorized(rt, event_id, account_id, now)
        return EventOutcome("ignored", "athlete event without a deauthorization")
    activity_id, owner_id = int(event["object_id"]), int(event["owner_id"])
    if aspect == "delete":
        return _activity_deleted(rt, event_id, account_id, owner_id, activity_id, now)
    if aspect == "update" and _holds(rt, account_id, activity_id):
        return _activity_changed(rt, event_id, account_id, owner_id, activity_id, now, False)
    # A new activity (or a change to one we do not hold): a hint that the athlete's list has news.
    return _list_due(rt, event_id, account_id, now)


def _holds(rt: Runtime, account_id: int, activity_id: int) -> bool:
    with rt.db.read() as session:
        account = session.get(StravaAccount, account_id)
        return account is not None and find_run(session, account.athlete_id, activity_id) is not None


# -- the API -------------------------------------------------------------------------------------------------


def _reader(rt: Runtime, account_id: int, now: datetime, reserve: int | None = None) -> ApiReader:
    """A reader for event work; checks of activities we hold keep ``strava_event_reserve`` requests of each
    window for new runs (``reserve=0``: the list and its new activities)."""
    return ApiReader(
        rt.db, rt.settings, account_id, now, reserve=rt.settings.strava_event_reserve if reserve is None else reserve
    )


def _get(api: ApiReader, url: str, count: int = 1, **params: Any) -> Any:
    """A budgeted read; "not now" becomes a retry of the event at the time the budget allows."""
    try:
        return api.get(url, count=count, **params)
    except StravaAppInactive as inactive:
        raise _Retry(inactive.resume_at, f"paused: {inactive.reason}") from None
    except StravaDeferred as deferred:
        raise _Retry(deferred.resume_at, f"Strava budget: {deferred.reason}") from None


def _owner_of(activity: Mapping[str, Any]) -> int | None:
    owner = activity.get("athlete")
    value = owner.get("id") if isinstance(owner, Mapping) else None
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def _fetch(
    rt: Runtime, account_id: int, owner_id: int, activity_id: int, now: datetime, with_streams: bool
) -> tuple[ParsedRun, dict[str, Any]] | str:
    """The activity as a run with what Strava said of it (kept with the run), or why there is none
    (``"gone"`` for 404 or an activity that is not the owner's, a skip reason for other sports)."""
    api = _reader(rt, account_id, now)
    try:
        try:
            activity = _get(api, "/activities/{id}", count=2 if with_streams else 1, id=activity_id)
        except strava_exc.ObjectNotFound:
            return "gone"
        if _owner_of(activity) not in (None, owner_id):
            return "gone"  # another athlete's activity: never stored as this one's
        streams = None
        started = datetime.fromisoformat(str(activity.get("start_date", "")).replace("Z", "+00:00"))
        recent = started >= now - timedelta(days=rt.settings.strava_streams_days)
        parsed_summary = convert_activity(activity, rt.settings.load.constants)
        if not isinstance(parsed_summary, ParsedRun):
            return parsed_summary.reason
        if with_streams and recent and not activity.get("manual"):
            try:
                streams = _get(
                    api, "/activities/{id}/streams", id=activity_id, keys=",".join(STREAM_KEYS), key_by_type="true"
                )
            except strava_exc.ObjectNotFound:
                streams = None  # no streams recorded: the summary's average cadence still counts
        record = {"activity": activity, "streams": streams}
        if streams is None:
            return parsed_summary, record
        parsed = convert_activity(activity, rt.settings.load.constants, streams)
        return (parsed, record) if isinstance(parsed, ParsedRun) else parsed.reason
    finally:
        api.save()


def _activity_changed(
    rt: Runtime, event_id: int, account_id: int, owner_id: int, activity_id: int, now: datetime, created: bool
) -> EventOutcome:
    with rt.db.read() as session:
        account = session.get(StravaAccount, account_id)
        if account is None:
            return EventOutcome("ignored", "account disconnected")
        held = find_run(session, account.athlete_id, activity_id) is not None
    # Streams only for a run we do not have yet: an update changes title, type or visibility, not samples.
    fetched = _fetch(rt, account_id, owner_id, activity_id, now, with_streams=created or not held)
    with rt.db.transaction() as session:
        if session.get(StravaEvent, event_id) is None:
            return EventOutcome("deleted", "account forgotten meanwhile")
        account = session.get(StravaAccount, account_id)
        athlete = session.get(Athlete, account.athlete_id) if account is not None else None
        if athlete is None:
            return EventOutcome("ignored", "account disconnected")
        run = find_run(session, athlete.id, activity_id)
        if not isinstance(fetched, str):
            parsed, record = fetched
            stored = store_parsed(session, athlete, [parsed], records={parsed.source_key: record})
            changed = bool(stored.runs)
            row = session.get(StravaEvent, event_id)
            assert row is not None
            # Marked in the same transaction as the run: a crash after it cannot process the event twice.
            row.status, row.detail, row.processed_at = "done", "stored" if changed else "unchanged", now
            _answer_alike(session, event_id, owner_id, activity_id, "update", now, "done", "unchanged")
            owed = athlete.id if stored.replan_owed else None
            return EventOutcome("done", "stored" if changed else "unchanged", changed, replan_athlete=owed)
        # Gone (deleted, or now private without activity:read_all) or no longer a foot sport: remove our copy.
        owes = remove_runs(session, athlete, [run] if run is not None else [])
        detail = f"not stored: {fetched}" + ("; run removed" if run is not None else "")
        row = session.get(StravaEvent, event_id)
        assert row is not None
        row.status, row.detail, row.processed_at = "done", detail[:500], now
        _answer_alike(session, event_id, owner_id, activity_id, "update", now, "done", detail)
        return EventOutcome("done", detail, run is not None, replan_athlete=athlete.id if owes else None)


def _answer_alike(
    session: Session,
    event_id: int,
    owner_id: int,
    activity_id: int,
    aspect: str,
    now: datetime,
    status: str,
    detail: str,
) -> None:
    """One fetch answers every waiting event of the same kind for the same activity received before it: a burst
    of (forged) updates or deletes of a run we hold costs one request, not one each."""
    session.execute(
        update(StravaEvent)
        .where(
            StravaEvent.id != event_id,
            StravaEvent.status.in_(UNFINISHED),
            StravaEvent.received_at <= now,
            StravaEvent.payload["owner_id"].as_integer() == owner_id,
            StravaEvent.payload["object_id"].as_integer() == activity_id,
            StravaEvent.payload["aspect_type"].as_string() == aspect,
        )
        .values(status=status, detail=f"answered with event {event_id}: {detail}"[:500], processed_at=now)
        .execution_options(synchronize_session=False)
    )


def _confirmed_gone(rt: Runtime, account_id: int, owner_id: int, activity_id: int, now: datetime) -> bool:
    """Ask Strava whether the activity is really gone: a 404, or an activity that is no longer the owner's."""
    api = _reader(rt, account_id, now)
    try:
        activity = _get(api, "/activities/{id}", id=activity_id)
    except strava_exc.ObjectNotFound:
        return True
    finally:
        api.save()
    return _owner_of(activity) not in (None, owner_id)


def _activity_deleted(
    rt: Runtime, event_id: int, account_id: int, owner_id: int, activity_id: int, now: datetime
) -> EventOutcome:
    with rt.db.read() as session:
        account = session.get(StravaAccount, account_id)
        if account is None:
            return EventOutcome("ignored", "account disconnected")
        if find_run(session, account.athlete_id, activity_id) is None:
            return EventOutcome("done", "no such run")  # nothing to destroy: no API call spent
    # Events are unsigned: anyone who knows the (public) ids can send a delete. Strava must confirm it.
    if not _confirmed_gone(rt, account_id, owner_id, activity_id, now):
        log.warning("Strava delete event %s not confirmed: activity %s still exists", event_id, activity_id)
        refused = "delete not confirmed: the activity still exists at Strava"
        with rt.db.transaction() as session:
            _answer_alike(session, event_id, owner_id, activity_id, "delete", now, "ignored", refused)
        return EventOutcome("ignored", refused)
    with rt.db.transaction() as session:
        account = session.get(StravaAccount, account_id)
        athlete = session.get(Athlete, account.athlete_id) if account is not None else None
        if athlete is None:
            return EventOutcome("ignored", "account disconnected")
        run = find_run(session, athlete.id, activity_id)
        owes = remove_runs(session, athlete, [run] if run is not None else [])
        removed = run is not None
        detail = "run removed" if removed else "no such run"
        row = session.get(StravaEvent, event_id)
        if row is not None:
            row.status, row.detail, row.processed_at = "done", detail, now
        _answer_alike(session, event_id, owner_id, activity_id, "delete", now, "done", detail)
        return EventOutcome("done", detail, removed, replan_athlete=athlete.id if owes else None)


def _still_authorized(rt: Runtime, account_id: int, now: datetime) -> bool:
    """Ask Strava whether our tokens still work: an athlete read with the stored (or refreshed) token, and
    after a 401 one forced refresh. Raises :class:`_Retry` when Strava cannot be asked now."""
    api = _reader(rt, account_id, now)
    try:
        _get(api, "/athlete")
    except StravaAuthError:
        return False  # the refresh token was refused: access is revoked
    except strava_exc.AccessUnauthorized:
        # A refresh succeeded yet the new token was refused: inconclusive, so ask again later.
        raise _Retry(None, "deauthorization inconclusive") from None
    finally:
        api.save()
    return True


def _deauthorized(rt: Runtime, event_id: int, account_id: int, now: datetime) -> EventOutcome:
    try:
        authorized = _still_authorized(rt, account_id, now)
    except StravaAccountMissing:
        return EventOutcome("ignored", "account already gone")
    if authorized:
        # Events are unsigned: a deauthorization our tokens contradict is forged (or stale); delete nothing.
        log.warning("Strava deauthorization event %s not confirmed: the account's token still works", event_id)
        return EventOutcome("ignored", "deauthorization not confirmed: the token still works")
    with rt.db.transaction() as session:
        account = session.get(StravaAccount, account_id)
        if account is None:
            return EventOutcome("ignored", "account already gone")
        strava_id, athlete_id = account.strava_athlete_id, account.athlete_id
        deleted = forget_account(session, account)
    log.info("Strava athlete %s deauthorized: account and %d runs deleted", strava_id, deleted)
    # The event row went with the account's events.
    owed = athlete_id if deleted else None
    return EventOutcome("deleted", f"deauthorized; {deleted} runs deleted", bool(deleted), replan_athlete=owed)


# -- the activity list: events are hints, the list is the truth ----------------------------------------------


def _list_due(rt: Runtime, event_id: int, account_id: int, now: datetime) -> EventOutcome:
    """Make the athlete's list due; read it now when the interval since the last one has passed (claimed
    under the account's row lock, so concurrent workers read it once), else leave the event waiting for it."""
    interval = timedelta(seconds=rt.settings.strava_list_interval_s)
    with rt.db.transaction() as session:
        account = session.execute(
            select(StravaAccount).where(StravaAccount.id == account_id).with_for_update()
        ).scalar_one_or_none()
        if account is None:
            return EventOutcome("ignored", "account disconnected")
        earliest = max(
            [now]
            + ([account.listed_at + interval] if account.listed_at is not None else [])
            + ([account.list_due_at] if account.list_due_at is not None else [])
        )
        if earliest > now:
            account.list_due_at = earliest
            row = session.get(StravaEvent, event_id)
            if row is not None:
                row.status, row.next_attempt_at = LISTING, earliest
                row.detail = "waiting for the athlete's next activity list"
            return EventOutcome(LISTING, "waiting for the athlete's next activity list")
        account.listed_at, account.list_due_at = now, None
        strava_id, athlete_id = account.strava_athlete_id, account.athlete_id
    return _list_and_resolve(rt, event_id, account_id, strava_id, athlete_id, now)


def _defer_list(rt: Runtime, account_id: int, strava_id: int, at: datetime | None) -> None:
    """The list may not be read now: it and every event waiting for it are due at ``at``."""
    if at is None:
        return
    with rt.db.transaction() as session:
        account = session.get(StravaAccount, account_id)
        if account is not None:
            account.list_due_at = at
        session.execute(
            update(StravaEvent)
            .where(
                StravaEvent.status == LISTING,
                StravaEvent.payload["owner_id"].as_integer() == strava_id,
                StravaEvent.next_attempt_at < at,
            )
            .values(next_attempt_at=at)
            .execution_options(synchronize_session=False)
        )


def _waiting(rt: Runtime, strava_id: int, athlete_id: int, event_id: int, started: datetime) -> dict[int, int]:
    """The events a list started at ``started`` answers: ``event id → activity id`` for this event and every
    create (or update of an activity we do not hold) of the athlete received before it, pending or listing."""
    with rt.db.read() as session:
        rows = session.execute(
            select(StravaEvent.id, StravaEvent.payload).where(
                StravaEvent.payload["owner_id"].as_integer() == strava_id,
                StravaEvent.status.in_(UNFINISHED) | (StravaEvent.id == event_id),
                StravaEvent.received_at <= started,
            )
        ).all()
        waiting: dict[int, int] = {}
        for row_id, payload in rows:
            if payload.get("object_type") != "activity" or not subscription_matches(rt.settings, payload):
                continue
            aspect, activity_id = payload.get("aspect_type"), int(payload.get("object_id", 0))
            if row_id != event_id and (
                aspect not in ("create", "update")
                or (aspect == "update" and find_run(session, athlete_id, activity_id) is not None)
            ):
                continue  # a delete, or an update the activity's own fetch answers
            waiting[row_id] = activity_id
    return waiting


def _started(activity: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(activity.get("start_date", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


def _list_and_resolve(
    rt: Runtime, event_id: int, account_id: int, strava_id: int, athlete_id: int, started: datetime
) -> EventOutcome:
    """Read the athlete's recent activities once, store those that waiting events name, and finish every
    event the list answers (in the transaction that stores the runs)."""
    api = _reader(rt, account_id, started, reserve=0)  # the real-run path: the reserve is kept for it
    try:
        try:
            listed = _get(api, "/athlete/activities", page=1, per_page=RECENT_PER_PAGE)
        except _Retry as retry:
            if retry.at is None:
                raise  # a network or server error: the event's own retry schedule
            # Not now (budget, 429, an inactive app): the list and every event waiting for it are due then, and
            # the sweep hands one of them on, so a long pause costs one request per athlete when it ends.
            _defer_list(rt, account_id, strava_id, retry.at)
            with rt.db.transaction() as session:
                row = session.get(StravaEvent, event_id)
                if row is not None:
                    row.status, row.next_attempt_at, row.detail = LISTING, retry.at, retry.reason[:500]
            return EventOutcome(LISTING, retry.reason)
        waiting = _waiting(rt, strava_id, athlete_id, event_id, started)
        shown: dict[int, Mapping[str, Any]] = {}
        for item in listed if isinstance(listed, list) else []:
            if isinstance(item, Mapping) and str(item.get("id", "")).isdigit() and _owner_of(item) in (None, strava_id):
                shown[int(item["id"])] = item
        results: dict[int, ParsedRun | str] = {}
        records: dict[str, dict[str, Any]] = {}
        deferred: datetime | None = None
        streams_since = started - timedelta(days=rt.settings.strava_streams_days)
        for activity_id in sorted(set(waiting.values()) & shown.keys()):
            activity = shown[activity_id]
            summary = convert_activity(activity, rt.settings.load.constants)
            if not isinstance(summary, ParsedRun):
                results[activity_id] = summary.reason
                continue
            when = _started(activity)
            streams = None
            if when is not None and when >= streams_since and not activity.get("manual"):
                try:
                    streams = _get(
                        api, "/activities/{id}/streams", id=activity_id, keys=",".join(STREAM_KEYS), key_by_type="true"
                    )
                except strava_exc.ObjectNotFound:
                    streams = None  # no streams recorded: the summary's average cadence still counts
                except _Retry as retry:
                    deferred = retry.at or started + RETRY_DELAYS[0]
                    break  # the rest wait for the next list, when the budget allows
            parsed = convert_activity(activity, rt.settings.load.constants, streams) if streams else summary
            results[activity_id] = parsed if isinstance(parsed, ParsedRun) else parsed.reason
            if isinstance(parsed, ParsedRun):
                records[parsed.source_key] = {"activity": dict(activity), "streams": streams}
    finally:
        api.save()
    return _resolve(rt, event_id, account_id, waiting, shown, results, records, started, deferred)


def _resolve(
    rt: Runtime,
    event_id: int,
    account_id: int,
    waiting: Mapping[int, int],
    shown: Mapping[int, Mapping[str, Any]],
    results: Mapping[int, ParsedRun | str],
    records: Mapping[str, Mapping[str, Any]],
    started: datetime,
    deferred: datetime | None,
) -> EventOutcome:
    interval = timedelta(seconds=rt.settings.strava_list_interval_s)
    with rt.db.transaction() as session:
        if session.get(StravaEvent, event_id) is None:
            return EventOutcome("deleted", "account forgotten meanwhile")
        account = session.get(StravaAccount, account_id)
        athlete = session.get(Athlete, account.athlete_id) if account is not None else None
        if account is None or athlete is None:
            return EventOutcome("ignored", "account disconnected")
        runs = [p for p in results.values() if isinstance(p, ParsedRun)]
        stored = store_parsed(session, athlete, runs, records=records)
        changed = {r.source_key for r in stored.runs}
        owed = athlete.id if stored.replan_owed else None
        again: datetime | None = deferred
        outcome = EventOutcome("done", "")
        announced: list[int] = []
        for row in session.scalars(select(StravaEvent).where(StravaEvent.id.in_(list(waiting)))):
            if row.id != event_id and row.status not in UNFINISHED:
                continue  # another worker finished it meanwhile
            activity_id = waiting[row.id]
            result = results.get(activity_id)
            if isinstance(result, ParsedRun):
                is_new = result.source_key in changed
                status, detail = "done", "stored" if is_new else "unchanged"
                if is_new:
                    announced.append(row.id)
            elif isinstance(result, str):
                status, detail = "done", f"not stored: {result}"
            elif activity_id in shown and deferred is not None:
                status, detail = LISTING, "waiting for the athlete's next activity list (Strava budget)"
            elif row.list_misses == 0 and row.received_at >= started - RECHECK_WITHIN:
                row.list_misses += 1
                recheck = started + interval
                again = recheck if again is None else max(again, recheck)
                status, detail = LISTING, "not in the athlete's list yet; looked for again at the next list"
            else:
                row.list_misses += 1
                status, detail = "done", NOT_LISTED
            row.status, row.detail = status, detail[:500]
            if status == LISTING:
                row.next_attempt_at = again if again is not None else started + interval
            else:
                row.processed_at = started
            if row.id == event_id:
                outcome = EventOutcome(status, detail)
        if again is not None:
            account.list_due_at = again if account.list_due_at is None else max(account.list_due_at, again)
    log.info(
        "Strava list for account %s answered %d events: %d activities shown, %d runs changed",
        account_id,
        len(waiting),
        len(shown),
        len(changed),
    )
    return EventOutcome(outcome.status, outcome.detail, bool(changed), tuple(announced), owed)


# -- the periodic sweep --------------------------------------------------------------------------------------


def due_event_ids(rt: Runtime, now: datetime, limit: int = 500) -> list[int]:
    """Events due now: pending ones whose time has come, claims of crashed workers, and one event per athlete
    whose activity list is due (made pending; its list answers the others, which are looked at again after
    :data:`ENQUEUE_GRACE`)."""
    with rt.db.transaction() as session:
        owners: set[Any] = set()
        for row in session.scalars(
            select(StravaEvent)
            .where(StravaEvent.status == LISTING, StravaEvent.next_attempt_at <= now)
            .order_by(StravaEvent.id)
            .limit(limit)
        ):
            owner = row.payload.get("owner_id")
            if owner not in owners:
                owners.add(owner)
                row.status, row.next_attempt_at = "pending", now
            else:
                row.next_attempt_at = now + ENQUEUE_GRACE
        session.flush()
        return list(
            session.scalars(
                select(StravaEvent.id)
                .where(StravaEvent.status.in_(("pending", "processing")), StravaEvent.next_attempt_at <= now)
                .order_by(StravaEvent.id)
                .limit(limit)
            )
        )


def sweep(
    rt: Runtime,
    enqueue_event: Callable[[int], Any] | None = None,
    enqueue_backfill: Callable[[int], Any] = lambda _id: None,
    *,
    enqueue_drain: Callable[[], Any] | None = None,
) -> tuple[int, int]:
    """Hand due Strava work on; returns how many events were due and how many backfills were handed on.
    Called on every tick. With ``enqueue_drain`` one drain is asked for when any event is due (the workers'
    way); else each due event's id goes to ``enqueue_event``."""
    now = rt.now()
    event_ids = due_event_ids(rt, now)
    if event_ids and enqueue_drain is not None:
        enqueue_drain()
    elif enqueue_event is not None:
        for event_id in event_ids:
            enqueue_event(event_id)
    account_ids = due_backfills(rt.db, now)
    for account_id in account_ids:
        enqueue_backfill(account_id)
    if event_ids or account_ids:
        log.debug("Strava sweep: %d events due, %d backfills enqueued", len(event_ids), len(account_ids))
    return len(event_ids), len(account_ids)
