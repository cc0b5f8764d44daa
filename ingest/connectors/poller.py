"""One pull of one account: list since the cursor, record every activity in the ledger, download the new ones
(throttled, with backoff), and hand each file to ``ingest.service.ingest_path`` exactly as a dropped file.

Crash safety, step by step: the listed activities are committed to the ledger before any download; a download
is written aside and renamed, so a file at its final name is whole; the ledger says ``downloaded`` once it is
there, and the outcome once the file is stored. A pull killed anywhere is rerun from the ledger: a whole file
already on disk is never downloaded again (even if its ``downloaded`` mark was lost with the kill), and a file
whose outcome was lost is read again and found a duplicate, with its replan still owed.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from ingest.connectors.base import ConnectorError, ItemFailed, RemoteActivity, connector_class
from ingest.connectors.files import (
    OriginalRefused,
    account_folder,
    existing_original,
    original_path,
    suffix_for,
    unpack,
    write_original,
)
from ingest.connectors.ledger import (
    ITEM_MAX_ATTEMPTS,
    account_trouble,
    item_backoff_s,
    jittered,
    save_credentials,
)
from ingest.origin import Origin
from ingest.service import ingest_path
from ingest.store import FileReport
from stridecare.crypto import SecretsError, Vault
from stridecare.db import leases
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, ConnectorAccount, ConnectorItem, Lease
from stridecare.settings import Settings

log = logging.getLogger(__name__)

# The first pull of an account reads its whole history; later pulls re-list this far behind the cursor, so an
# activity uploaded late (a watch synced days after the run) is still found. The ledger makes the overlap free.
HISTORY_START = datetime(2000, 1, 1, tzinfo=UTC)
RELIST_OVERLAP = timedelta(days=7)
PROVIDER_LEASE_S = 900.0
_TOKEN = uuid.uuid4().hex[:8]

ConnectorFactory = Callable[[Settings, str, Callable[[str], None]], Any]


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one activity in this pull: the ``ingest --json`` shape plus ``source`` and
    ``activity_id`` (:meth:`as_json`)."""

    source: str
    activity_id: str
    status: str  # ingested | duplicate | skipped | rejected | failed | pending
    path: str | None
    reason: str | None
    runs: list[dict[str, Any]]
    report: FileReport | None = None  # the store's own report, for the activities that reached it

    def as_json(self) -> dict[str, Any]:
        """One line of ``stridecare sync --json``."""
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "runs": self.runs,
            "source": self.source,
            "activity_id": self.activity_id,
        }


@dataclass(slots=True)
class PullResult:
    """One account's pull: what happened to each new activity, whether the athlete's replan is owed, and why
    the pull stopped early (a cooldown, a refused key, the hourly throttle) if it did."""

    account_id: int
    athlete: str
    athlete_id: int
    provider: str
    items: list[ItemResult] = field(default_factory=list)
    replan_owed: bool = False
    stopped: str | None = None
    # The stop was trouble (a refused key, a cooldown, the provider down), not just the hourly budget.
    trouble: bool = False
    waiting: int = 0
    requests: int = 0


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


def _holder_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _take_provider(db: Database, provider: str, now: datetime) -> bool:
    """One pull at a time per provider (its limits are per client as much as per account); a lease left by a
    killed pull on this host is taken over at once rather than after its expiry."""
    name = f"connector:{provider}"
    if leases.acquire(db, name, _owner(), now, PROVIDER_LEASE_S):
        return True
    with db.transaction() as session:
        row = session.get(Lease, name)
        if row is None or not _holder_dead(row.owner):
            return False
        session.execute(delete(Lease).where(Lease.name == name, Lease.owner == row.owner))
    return leases.acquire(db, name, _owner(), now, PROVIDER_LEASE_S)


def _give_provider(db: Database, provider: str) -> None:
    leases.release(db, f"connector:{provider}", _owner())


def build_connector(
    db: Database, settings: Settings, account: ConnectorAccount, factory: ConnectorFactory | None = None
) -> Any:
    """The account's connector, with its decrypted credentials and a way to save refreshed ones."""
    if account.credentials_enc is None:
        raise ConnectorError("not connected")
    try:
        credentials = Vault.from_settings(settings).decrypt(account.credentials_enc)
    except SecretsError as exc:
        raise ConnectorError(f"the stored credentials cannot be decrypted ({exc}); connect again") from exc
    account_id = account.id

    def save(new: str) -> None:
        save_credentials(db, settings, account_id, new)

    make = factory or connector_class(account.provider)
    return make(settings, credentials, save)


def sync_account(
    db: Database,
    settings: Settings,
    account_id: int,
    now: Callable[[], datetime],
    *,
    since: datetime | None = None,
    factory: ConnectorFactory | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_item: Callable[[ItemResult], None] | None = None,
    rng: random.Random | None = None,
) -> PullResult:
    """Pull ``account_id`` now: new activities listed, downloaded and stored (deferred: the caller queues the
    athlete's replan when ``replan_owed``). Never raises for the provider's trouble: it is recorded on the
    account and said in ``stopped``."""
    with db.read() as session:
        row = session.execute(
            select(ConnectorAccount, Athlete.name)
            .join(Athlete, Athlete.id == ConnectorAccount.athlete_id)
            .where(ConnectorAccount.id == account_id)
        ).first()
    if row is None:
        raise LookupError(f"no connector account {account_id}")
    account, athlete_name = row
    result = PullResult(account.id, athlete_name, account.athlete_id, account.provider)
    start = now()
    if account.credentials_enc is None or account.state in ("refused", "disconnected"):
        result.stopped = account.last_error or f"{account.provider} is {account.state}"
        result.trouble = True
        return result
    if account.cooldown_until is not None and account.cooldown_until > start:
        result.stopped = f"cooling down until {account.cooldown_until:%Y-%m-%d %H:%M} UTC ({account.last_error})"
        result.trouble = True
        return result
    if not _take_provider(db, account.provider, start):
        result.stopped = f"another pull from {account.provider} is running; this account is pulled after it"
        with db.transaction() as session:
            acc = session.get(ConnectorAccount, account_id)
            if acc is not None:
                acc.next_poll_at = start + timedelta(seconds=jittered(60.0, rng))
        return result
    try:
        _pull(db, settings, account, athlete_name, result, now, since, factory, sleep, on_item, rng)
    finally:
        _give_provider(db, account.provider)
    return result


def _record_trouble(db: Database, account_id: int, exc: ConnectorError, at: datetime, limits: Any) -> str:
    with db.transaction() as session:
        acc = session.get(ConnectorAccount, account_id)
        assert acc is not None
        return account_trouble(acc, exc, at, limits)


def _pull(
    db: Database,
    settings: Settings,
    account: ConnectorAccount,
    athlete_name: str,
    result: PullResult,
    now: Callable[[], datetime],
    since: datetime | None,
    factory: ConnectorFactory | None,
    sleep: Callable[[float], None],
    on_item: Callable[[ItemResult], None] | None,
    rng: random.Random | None,
) -> None:
    started = now()
    try:
        connector = build_connector(db, settings, account, factory)
    except ConnectorError as exc:
        result.stopped, result.trouble = str(exc), True
        with db.transaction() as session:
            acc = session.get(ConnectorAccount, account.id)
            if acc is not None:
                acc.last_error, acc.last_poll_at = str(exc), started
        return
    oldest = since or (account.cursor - RELIST_OVERLAP if account.cursor else HISTORY_START)
    try:
        listed = connector.list_activities(oldest, started + timedelta(days=1))
        result.requests += 1
    except ConnectorError as exc:
        result.requests += 1
        result.stopped, result.trouble = _record_trouble(db, account.id, exc, started, connector), True
        return
    for item in _record_listing(db, account.id, listed, started):
        _emit(result, on_item, ItemResult(account.provider, item[0], "skipped", None, item[1], []))

    folder = account_folder(settings, account.provider, account.account_key)
    origin_kind = account.provider
    limit = getattr(connector, "downloads_per_hour", None)
    pause = float(getattr(connector, "pause_s", 0.0) or 0.0)
    with db.read() as session:
        due = session.execute(
            select(ConnectorItem.id, ConnectorItem.activity_id, ConnectorItem.started_at, ConnectorItem.attempts)
            .where(
                ConnectorItem.account_id == account.id,
                ConnectorItem.status.in_(("pending", "downloaded")),
                (ConnectorItem.next_attempt_at.is_(None)) | (ConnectorItem.next_attempt_at <= started),
            )
            # Newest first: today's run gets its prompt before the history behind it is read.
            .order_by(ConnectorItem.started_at.desc(), ConnectorItem.id.desc())
        ).all()
        window_start = started - timedelta(hours=1)
        recent: list[datetime] = sorted(
            at
            for at in session.scalars(
                select(ConnectorItem.downloaded_at).where(
                    ConnectorItem.account_id == account.id, ConnectorItem.downloaded_at >= window_start
                )
            )
            if at is not None
        )
    allowance = None if not limit else max(int(limit) - len(recent), 0)
    next_poll: datetime | None = None
    downloaded = 0
    for index, (item_id, activity_id, item_start, attempts) in enumerate(due):
        if index and index % 20 == 0:
            # A first sync of years of history outlasts the lease: keep it while the pull goes on.
            leases.acquire(db, f"connector:{account.provider}", _owner(), now(), PROVIDER_LEASE_S)
        path = existing_original(folder, activity_id)
        if path is None:
            if allowance is not None and allowance <= 0:
                result.waiting = len(due) - index
                # Due again once the oldest download of the last hour leaves the window.
                first = recent[0] if recent else now()
                next_poll = max(first + timedelta(hours=1), now()) + timedelta(seconds=jittered(120.0, rng, 0.5))
                result.stopped = (
                    f"{result.waiting} activities wait: at most {limit} downloads an hour from {account.provider}"
                )
                break
            if pause and downloaded:
                sleep(jittered(pause, rng, 0.5))
            try:
                data = connector.download(activity_id)
                result.requests += 1
            except ItemFailed as exc:
                result.requests += 1
                _emit(result, on_item, _item_failed(db, account.provider, item_id, activity_id, attempts, exc, now()))
                continue
            except ConnectorError as exc:
                result.requests += 1
                result.stopped, result.trouble = _record_trouble(db, account.id, exc, now(), connector), True
                result.waiting = len(due) - index
                return
            downloaded += 1
            if allowance is not None:
                allowance -= 1
                recent.append(now())
            try:
                data = unpack(data, settings.max_file_bytes)
            except OriginalRefused as exc:
                _finish(db, item_id, "rejected", str(exc))
                _emit(result, on_item, ItemResult(account.provider, activity_id, "rejected", None, str(exc), []))
                continue
            path = original_path(folder, activity_id, suffix_for(data))
            at = now()
            mtime = (at - timedelta(seconds=settings.hold_still_seconds + 60)).timestamp()
            if item_start is not None:
                mtime = min(mtime, item_start.timestamp())
            write_original(path, data, mtime)
            with db.transaction() as session:
                row = session.get(ConnectorItem, item_id)
                if row is not None:
                    row.status, row.downloaded_at = "downloaded", at
        report = ingest_path(
            db,
            settings,
            athlete_name,
            path,
            now(),
            root=folder,
            quarantine_damaged=True,
            origin=Origin(kind=origin_kind, account=account.account_key, item_id=activity_id),
        )
        # As for a dropped file (workers.tasks): a duplicate whose runs still have no load is a rerun after a
        # crash between the store and the enqueue, and its replan is still owed.
        result.replan_owed |= report.replan_owed or (
            report.status == "duplicate" and any(r["load"] is None and r["duplicate_of"] is None for r in report.runs)
        )
        if report.status != "pending":
            _finish(db, item_id, report.status, report.reason)
        _emit(
            result,
            on_item,
            ItemResult(account.provider, activity_id, report.status, report.path, report.reason, report.runs, report),
        )
    with db.transaction() as session:
        acc = session.get(ConnectorAccount, account.id)
        if acc is not None:
            acc.last_poll_at = started
            acc.last_error = None
            acc.cooldown_s = 0
            acc.cooldown_until = None
            if acc.state == "blocked":
                acc.state = "connected"
            acc.next_poll_at = next_poll or now() + timedelta(seconds=jittered(settings.connector_poll_interval_s, rng))
            if result.stopped and next_poll is not None:
                acc.last_error = None  # throttled is not an error: `sources` shows the waiting count


def _emit(result: PullResult, on_item: Callable[[ItemResult], None] | None, item: ItemResult) -> None:
    result.items.append(item)
    if on_item is not None:
        on_item(item)


def _finish(db: Database, item_id: int, status: str, reason: str | None) -> None:
    with db.transaction() as session:
        row = session.get(ConnectorItem, item_id)
        if row is not None:
            row.status, row.reason, row.next_attempt_at = status, reason, None


def _item_failed(
    db: Database, provider: str, item_id: int, activity_id: str, attempts: int, exc: ItemFailed, at: datetime
) -> ItemResult:
    tries = attempts + 1
    final = tries >= ITEM_MAX_ATTEMPTS
    with db.transaction() as session:
        row = session.get(ConnectorItem, item_id)
        if row is not None:
            row.attempts = tries
            row.reason = str(exc)
            if final:
                row.status, row.next_attempt_at = "failed", None
            else:
                row.next_attempt_at = at + timedelta(seconds=item_backoff_s(tries))
    detail = f"{exc} (attempt {tries} of {ITEM_MAX_ATTEMPTS}" + (", given up)" if final else ", retried later)")
    return ItemResult(provider, activity_id, "failed", None, detail, [])


def _record_listing(db: Database, account_id: int, listed: list[RemoteActivity], at: datetime) -> list[tuple[str, str]]:
    """Add the activities not yet in the ledger (skipped ones with their reason) and move the cursor forward.
    Returns the newly skipped ``(activity id, reason)`` pairs."""
    skipped: list[tuple[str, str]] = []
    with db.transaction() as session:
        known = set(session.scalars(select(ConnectorItem.activity_id).where(ConnectorItem.account_id == account_id)))
        newest: datetime | None = None
        for activity in listed:
            if activity.started_at is not None and (newest is None or activity.started_at > newest):
                newest = activity.started_at
            if activity.activity_id in known:
                continue
            known.add(activity.activity_id)
            status = "skipped" if activity.skip else "pending"
            session.add(
                ConnectorItem(
                    account_id=account_id,
                    activity_id=activity.activity_id[:64],
                    started_at=activity.started_at,
                    sport=(activity.sport or None) and str(activity.sport)[:64],
                    status=status,
                    reason=activity.skip,
                    attempts=0,
                    seen_at=at,
                )
            )
            if activity.skip:
                skipped.append((activity.activity_id, activity.skip))
        account = session.get(ConnectorAccount, account_id)
        if account is not None and newest is not None and (account.cursor is None or newest > account.cursor):
            account.cursor = newest
    return skipped
