"""Named leases in SQL: a lock with an owner and an expiry, safe across processes and machines."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from stridecare.db.engine import Database
from stridecare.db.models import Lease


def acquire(db: Database, name: str, owner: str, now: datetime, ttl_s: float) -> bool:
    """Take or renew lease ``name`` for ``owner``; False while another owner holds an unexpired lease."""
    until = now + timedelta(seconds=ttl_s)
    with db.transaction() as session:
        result = session.execute(
            update(Lease)
            .where(Lease.name == name, (Lease.owner == owner) | (Lease.expires_at < now))
            .values(owner=owner, expires_at=until)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return True
        if session.scalar(select(Lease.name).where(Lease.name == name)) is not None:
            return False
    try:
        with db.transaction() as session:
            session.add(Lease(name=name, owner=owner, expires_at=until))
        return True
    except IntegrityError:
        return False


def release(db: Database, name: str, owner: str) -> None:
    """Give lease ``name`` back if ``owner`` holds it."""
    with db.transaction() as session:
        session.execute(delete(Lease).where(Lease.name == name, Lease.owner == owner))
