"""Strava's rate-limit budget, read from response headers and kept in SQL, so work is scheduled, never slept
on.

Strava limits the whole application (not one athlete) per fixed 15-minute window (:00/:15/:30/:45 UTC) and per
UTC day, overall and for reads. Each API response carries ``X-RateLimit-Limit``/``X-RateLimit-Usage`` and
``X-ReadRateLimit-Limit``/``X-ReadRateLimit-Usage`` as ``"15-min,daily"``. The real limits differ between apps
and change over time, so they are only ever taken from those headers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.strava.errors import APP_INACTIVE_MESSAGE
from stridecare.db.engine import Database
from stridecare.db.models import ApiBudget
from stridecare.logging import event

log = logging.getLogger(__name__)
console = logging.getLogger("stridecare.console")

BUDGET_NAME = "strava"
# While Strava refuses the app (403 Application/Status/Inactive), one request asks again at most this often.
PROBE_INTERVAL = timedelta(hours=1)

Kind = Literal["read", "write"]


def quarter_start(now: datetime) -> datetime:
    """Start of the 15-minute window that contains ``now`` (UTC)."""
    now = now.astimezone(UTC)
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)


def next_quarter(now: datetime) -> datetime:
    """When the next 15-minute window opens (:00/:15/:30/:45 UTC)."""
    return quarter_start(now) + timedelta(minutes=15)


def day_start(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def next_day(now: datetime) -> datetime:
    """When the daily window opens again (00:00 UTC)."""
    return day_start(now) + timedelta(days=1)


def _pair(value: str | None) -> tuple[int, int] | None:
    # Values look like "600,30000"; stravalib's tests also show "601, 602" with a space.
    if not value:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Budget:
    """What the last response said about the application's budget, and when that was.

    Each pair is ``(15-minute, daily)``; ``None`` when the header was absent. Usage belongs to the windows
    that contained ``observed_at``: once a window has passed, its usage no longer counts.
    """

    limit: tuple[int, int] | None = None
    usage: tuple[int, int] | None = None
    read_limit: tuple[int, int] | None = None
    read_usage: tuple[int, int] | None = None
    observed_at: datetime | None = None
    blocked_until: datetime | None = None

    @property
    def known(self) -> bool:
        """True once any response has told us a limit."""
        return self.limit is not None or self.read_limit is not None

    def _current_usage(self, usage: tuple[int, int] | None, now: datetime) -> tuple[int, int] | None:
        if usage is None or self.observed_at is None:
            return None
        short, daily = usage
        if day_start(self.observed_at) != day_start(now):
            return 0, 0
        if quarter_start(self.observed_at) != quarter_start(now):
            short = 0
        return short, daily

    def remaining(self, now: datetime, kind: Kind = "read") -> tuple[int, int] | None:
        """Requests still allowed in the current 15-minute and daily windows, or ``None`` when unknown.

        A read counts against both the overall and the read limit; a write only against the overall one.
        """
        pairs = [(self.limit, self.usage)]
        if kind == "read":
            pairs.append((self.read_limit, self.read_usage))
        short_left: int | None = None
        day_left: int | None = None
        for limit, usage in pairs:
            current = self._current_usage(usage, now)
            if limit is None or current is None:
                continue
            s = limit[0] - current[0]
            d = limit[1] - current[1]
            short_left = s if short_left is None else min(short_left, s)
            day_left = d if day_left is None else min(day_left, d)
        if short_left is None or day_left is None:
            return None
        return short_left, day_left

    def observe(self, headers: Mapping[str, str], now: datetime) -> Budget:
        """A new budget with one response's rate-limit headers applied (names matched case-insensitively)."""
        lower = {k.lower(): v for k, v in headers.items()}
        limit = _pair(lower.get("x-ratelimit-limit"))
        usage = _pair(lower.get("x-ratelimit-usage"))
        read_limit = _pair(lower.get("x-readratelimit-limit"))
        read_usage = _pair(lower.get("x-readratelimit-usage"))
        if limit is None and read_limit is None:
            return self
        return replace(
            self,
            limit=limit or self.limit,
            usage=usage or self.usage,
            read_limit=read_limit or self.read_limit,
            read_usage=read_usage or self.read_usage,
            observed_at=now,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may be sent now; if not, the earliest time it may."""

    allowed: bool
    resume_at: datetime | None = None
    reason: str = ""


def decide(budget: Budget, now: datetime, kind: Kind = "read", count: int = 1, reserve: int = 0) -> Decision:
    """May ``count`` more requests of ``kind`` be sent at ``now``, keeping ``reserve`` requests spare?

    An unknown budget allows the request: its response tells us the budget, and a 429 is handled as a
    deferral.
    """
    if budget.blocked_until is not None and now < budget.blocked_until:
        return Decision(False, budget.blocked_until, "blocked after a 429")
    left = budget.remaining(now, kind)
    if left is None:
        return Decision(True)
    short_left, day_left = left
    if day_left - reserve < count:
        return Decision(False, next_day(now), "daily budget used up")
    if short_left - reserve < count:
        return Decision(False, next_quarter(now), "15-minute budget used up")
    return Decision(True)


def resume_after_429(budget: Budget, now: datetime) -> datetime:
    """When to try again after a 429: midnight UTC if a daily limit is spent, else the next quarter hour."""
    left = budget.remaining(now, "read")
    if left is not None and left[1] <= 0:
        return next_day(now)
    return next_quarter(now)


def load_budget(session: Session, name: str = BUDGET_NAME) -> Budget:
    """The budget as last stored (an empty one when nothing is known yet)."""
    row = session.get(ApiBudget, name)
    if row is None:
        return Budget()

    def pair(data: dict[str, object], key: str) -> tuple[int, int] | None:
        value = data.get(key)
        if isinstance(value, list) and len(value) == 2:
            return int(value[0]), int(value[1])
        return None

    return Budget(
        limit=pair(row.limits, "overall"),
        usage=pair(row.usage, "overall"),
        read_limit=pair(row.limits, "read"),
        read_usage=pair(row.usage, "read"),
        observed_at=row.observed_at,
        blocked_until=row.blocked_until,
    )


def save_budget(session: Session, budget: Budget, name: str = BUDGET_NAME) -> None:
    """Store ``budget`` unless the stored one is a newer observation (another worker saw a later response)."""
    row = session.get(ApiBudget, name)
    if row is None:
        row = ApiBudget(name=name, limits={}, usage={})
        session.add(row)
    newer_stored = (
        row.observed_at is not None and budget.observed_at is not None and row.observed_at > budget.observed_at
    )
    if not newer_stored and budget.observed_at is not None:
        row.limits = {k: list(v) for k, v in (("overall", budget.limit), ("read", budget.read_limit)) if v is not None}
        row.usage = {k: list(v) for k, v in (("overall", budget.usage), ("read", budget.read_usage)) if v is not None}
        row.observed_at = budget.observed_at
    # A block is kept until it has passed, whoever set it: it is the safer of two views.
    if budget.blocked_until is not None and (row.blocked_until is None or budget.blocked_until > row.blocked_until):
        row.blocked_until = budget.blocked_until


def record_429(session: Session, budget: Budget, now: datetime, name: str = BUDGET_NAME) -> Budget:
    """Record a 429: nothing more is sent until the next window; returns the blocked budget."""
    blocked = replace(budget, blocked_until=resume_after_429(budget, now))
    save_budget(session, blocked, name)
    log.warning("Strava answered 429; requests paused until %s", blocked.blocked_until)
    return blocked


# -- the application's own state (Strava's paywall) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppState:
    """Whether Strava refuses the application itself, since when, and when one request may ask again."""

    inactive_since: datetime | None = None
    probe_at: datetime | None = None

    @property
    def inactive(self) -> bool:
        """True while the last answer was 403 Application/Status/Inactive."""
        return self.inactive_since is not None


def load_app_state(session: Session, name: str = BUDGET_NAME) -> AppState:
    """The stored application state (active when nothing is stored)."""
    row = session.get(ApiBudget, name)
    if row is None:
        return AppState()
    return AppState(row.app_inactive_since, row.app_probe_at)


def claim_probe(session: Session, now: datetime, name: str = BUDGET_NAME) -> datetime | None:
    """Claim the one request that may ask an inactive app's state now: ``None`` when this caller may send it
    (the next probe is moved an hour on, atomically, so concurrent workers send one), else when to ask again."""
    result = session.execute(
        update(ApiBudget)
        .where(
            ApiBudget.name == name,
            ApiBudget.app_inactive_since.is_not(None),
            (ApiBudget.app_probe_at.is_(None)) | (ApiBudget.app_probe_at <= now),
        )
        .values(app_probe_at=now + PROBE_INTERVAL)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return None
    row = session.get(ApiBudget, name, populate_existing=True)
    if row is None or row.app_inactive_since is None or row.app_probe_at is None:
        return None  # active again meanwhile
    return row.app_probe_at


def mark_inactive(session: Session, now: datetime, name: str = BUDGET_NAME) -> tuple[datetime, bool]:
    """Record a 403 Application/Status/Inactive; returns when to ask again and whether this is news (the app
    was active until now)."""
    # Locked: two workers refused at once write one "news" (one console line), not two.
    row = session.get(ApiBudget, name, with_for_update=True)
    if row is None:
        row = ApiBudget(name=name, limits={}, usage={})
        session.add(row)
    news = row.app_inactive_since is None
    if news:
        row.app_inactive_since = now
    probe = now + PROBE_INTERVAL
    if row.app_probe_at is None or row.app_probe_at < probe:
        row.app_probe_at = probe
    return row.app_probe_at, news


def mark_active(session: Session, name: str = BUDGET_NAME) -> bool:
    """Strava answered normally: the app is active. Returns True when it was recorded inactive."""
    row = session.get(ApiBudget, name)
    if row is None or row.app_inactive_since is None:
        return False
    row.app_inactive_since = None
    row.app_probe_at = None
    return True


def record_inactive(db: Database, now: datetime) -> datetime:
    """Record Strava's 403 Application/Status/Inactive; returns when one request may ask again. The first time
    (the app was active until now) one console line says what the operator must do."""
    for attempt in range(2):
        try:
            with db.transaction() as session:
                probe_at, news = mark_inactive(session, now)
            break
        except IntegrityError:
            if attempt:  # pragma: no cover - needs the row created twice by others in between
                raise
            # Another worker created the row at the same moment: the second pass updates it.
    if news:
        event(console, "strava_app", f"Strava: {APP_INACTIVE_MESSAGE}", level=logging.WARNING, state="inactive")
    return probe_at


def record_active(db: Database) -> None:
    """Strava answered normally: clear a recorded inactive state (with one console line when there was one)."""
    with db.read() as session:
        if not load_app_state(session).inactive:
            return  # the usual case: a read, no write lock
    with db.transaction() as session:
        was = mark_active(session)
    if was:
        event(console, "strava_app", "Strava: this Strava app is active again; imports resume", state="active")


def app_status(session: Session) -> dict[str, str] | None:
    """What the status pages show while Strava refuses the app: ``None`` when it is active (or unknown)."""
    state = load_app_state(session)
    if state.inactive_since is None:
        return None
    return {
        "state": "inactive",
        "message": APP_INACTIVE_MESSAGE,
        "since": state.inactive_since.isoformat(timespec="seconds"),
        "next_check": state.probe_at.isoformat(timespec="seconds") if state.probe_at is not None else "",
    }
