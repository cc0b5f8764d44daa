"""Connector accounts and their ledger in SQL: connect and disconnect, the cursor, cooldowns and backoff, which
accounts are due, and the state the ``sources`` view shows.

Every write here is keyed: an account by (athlete, provider, account key), a ledger row by (account,
activity id), so a pull run twice, or killed and run again, records each activity once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from ingest.connectors.base import Blocked, ConnectorError, KeyRefused, RateLimited
from stridecare.crypto import Vault
from stridecare.db.athletes import ensure_athlete
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, ConnectorAccount, ConnectorItem
from stridecare.settings import Settings

# A message for the beat's poll is lost with the broker or its worker: the account is due again after this.
CLAIM_S = 600.0
# A failed download is retried after 5 min, 10 min … at most a day later, and given up after this many tries.
ITEM_BACKOFF_FIRST_S = 300.0
ITEM_BACKOFF_MAX_S = 86400.0
ITEM_MAX_ATTEMPTS = 8
# Final outcomes: the activity is never downloaded again.
FINAL = ("ingested", "duplicate", "skipped", "rejected", "failed")


def jittered(seconds: float, rng: random.Random | None = None, spread: float = 0.2) -> float:
    """``seconds`` give or take ``spread`` of it, so that accounts do not all ask at the same moment."""
    r = rng or random
    return seconds * (1.0 + r.uniform(-spread, spread))


def connect(
    db: Database,
    settings: Settings,
    athlete_name: str,
    provider: str,
    account_key: str,
    credentials: str,
    now: datetime,
) -> int:
    """Store (or replace) an account's credentials, encrypted; a reconnect clears a refusal and a cooldown and
    keeps the ledger, so nothing is downloaded again. The account is due at once. Returns its row id."""
    secret = Vault.from_settings(settings).encrypt(credentials)
    with db.transaction() as session:
        athlete = ensure_athlete(session, athlete_name, settings)
        account = session.scalar(
            select(ConnectorAccount).where(
                ConnectorAccount.athlete_id == athlete.id,
                ConnectorAccount.provider == provider,
                ConnectorAccount.account_key == account_key,
            )
        )
        if account is None:
            account = ConnectorAccount(
                athlete_id=athlete.id, provider=provider, account_key=account_key, connected_at=now, cooldown_s=0
            )
            session.add(account)
        account.credentials_enc = secret
        account.state = "connected"
        account.last_error = None
        account.cooldown_until = None
        account.cooldown_s = 0
        account.next_poll_at = now
        session.flush()
        return account.id


def disconnect(db: Database, athlete_name: str, provider: str) -> int:
    """Forget the credentials of the athlete's accounts at ``provider`` (the ledger and runs stay). Returns how
    many accounts were disconnected."""
    with db.transaction() as session:
        ids = session.scalars(
            select(ConnectorAccount.id)
            .join(Athlete, Athlete.id == ConnectorAccount.athlete_id)
            .where(Athlete.name == athlete_name, ConnectorAccount.provider == provider)
        ).all()
        if ids:
            session.execute(
                update(ConnectorAccount)
                .where(ConnectorAccount.id.in_(ids))
                .values(credentials_enc=None, state="disconnected", next_poll_at=None, last_error=None)
            )
        return len(ids)


def save_credentials(db: Database, settings: Settings, account_id: int, credentials: str) -> None:
    """Store refreshed credentials (tokens a pull renewed), encrypted."""
    secret = Vault.from_settings(settings).encrypt(credentials)
    with db.transaction() as session:
        session.execute(
            update(ConnectorAccount)
            .where(ConnectorAccount.id == account_id, ConnectorAccount.credentials_enc.is_not(None))
            .values(credentials_enc=secret)
        )


def rotate_credentials(db: Database, settings: Settings) -> int:
    """Re-encrypt every stored credential under the newest key; returns how many."""
    vault = Vault.from_settings(settings)
    count = 0
    with db.transaction() as session:
        for account in session.scalars(select(ConnectorAccount).where(ConnectorAccount.credentials_enc.is_not(None))):
            account.credentials_enc = vault.rotate(str(account.credentials_enc))
            count += 1
    return count


def due_accounts(db: Database, now: datetime) -> list[int]:
    """Accounts whose next pull is due, claimed for :data:`CLAIM_S` (their poll message is queued by the
    caller; a lost one makes them due again then)."""
    with db.transaction() as session:
        ids = list(
            session.scalars(
                select(ConnectorAccount.id)
                .where(
                    ConnectorAccount.state.in_(("connected", "blocked")),
                    ConnectorAccount.credentials_enc.is_not(None),
                    (ConnectorAccount.next_poll_at.is_(None)) | (ConnectorAccount.next_poll_at <= now),
                    (ConnectorAccount.cooldown_until.is_(None)) | (ConnectorAccount.cooldown_until <= now),
                )
                .order_by(ConnectorAccount.id)
            )
        )
        if ids:
            session.execute(
                update(ConnectorAccount)
                .where(ConnectorAccount.id.in_(ids))
                .values(next_poll_at=now + timedelta(seconds=CLAIM_S))
            )
        return ids


def account_trouble(account: ConnectorAccount, exc: ConnectorError, now: datetime, limits: Any) -> str:
    """Record on ``account`` what an account-wide error means, and return the plain sentence.

    A refused key waits for a reconnect (no retries at all: a storm of refused logins is what gets accounts
    locked). A 429, a block or an outage starts a cooldown that doubles from ``limits.cooldown_first_s`` up to
    ``limits.cooldown_max_s`` (or the provider's own Retry-After if longer): never an immediate retry.
    """
    message = str(exc)
    account.last_error = message
    account.last_poll_at = now
    if isinstance(exc, KeyRefused):
        account.state = "refused"
        account.next_poll_at = None
        return message
    first, most = float(limits.cooldown_first_s), float(limits.cooldown_max_s)
    wait = min(max(first, account.cooldown_s * 2.0), most)
    if isinstance(exc, RateLimited) and exc.retry_after_s:
        wait = max(wait, min(exc.retry_after_s, most))
    account.cooldown_s = int(wait)
    account.cooldown_until = now + timedelta(seconds=wait)
    account.next_poll_at = account.cooldown_until + timedelta(seconds=jittered(60.0))
    account.state = "blocked" if isinstance(exc, Blocked) else "connected"
    return message


def item_backoff_s(attempts: int) -> float:
    """When a failed download is tried again: 5 min doubling, at most a day."""
    return min(ITEM_BACKOFF_FIRST_S * 2.0 ** max(attempts - 1, 0), ITEM_BACKOFF_MAX_S)


@dataclass(frozen=True, slots=True)
class SourceState:
    """One account as ``stridecare sources`` shows it."""

    athlete: str
    provider: str
    account: str
    state: str
    last_pull: datetime | None
    next_pull: datetime | None
    cooldown_until: datetime | None
    last_error: str | None
    seen: int
    stored: int
    skipped: int
    failed: int
    waiting: int

    def as_json(self) -> dict[str, Any]:
        """The documented JSON shape (times as ISO 8601)."""
        out: dict[str, Any] = {"kind": "account"}
        for key in self.__slots__:
            value = getattr(self, key)
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


def account_states(db: Database, athlete_name: str | None = None) -> list[SourceState]:
    """Every account (of one athlete, or all) with its state and ledger counts."""
    counts = select(ConnectorItem.account_id, ConnectorItem.status, func.count()).group_by(
        ConnectorItem.account_id, ConnectorItem.status
    )
    query = select(ConnectorAccount, Athlete.name).join(Athlete, Athlete.id == ConnectorAccount.athlete_id)
    if athlete_name is not None:
        query = query.where(Athlete.name == athlete_name)
    with db.read() as session:
        by_account: dict[int, dict[str, int]] = {}
        for account_id, status, n in session.execute(counts):
            by_account.setdefault(account_id, {})[status] = int(n)
        out = []
        for account, name in session.execute(query.order_by(Athlete.name, ConnectorAccount.provider)):
            c = by_account.get(account.id, {})
            out.append(
                SourceState(
                    athlete=name,
                    provider=account.provider,
                    account=account.account_key,
                    state=account.state,
                    last_pull=account.last_poll_at,
                    next_pull=account.next_poll_at if account.state in ("connected", "blocked") else None,
                    cooldown_until=account.cooldown_until,
                    last_error=account.last_error,
                    seen=sum(c.values()),
                    stored=c.get("ingested", 0),
                    skipped=c.get("skipped", 0) + c.get("duplicate", 0) + c.get("rejected", 0),
                    failed=c.get("failed", 0),
                    waiting=c.get("pending", 0) + c.get("downloaded", 0),
                )
            )
        return out
