"""Athlete rows: look-up by handle and creation on first use."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stridecare.db.models import Athlete
from stridecare.handles import UnknownAthlete, check_handle, unknown_athlete
from stridecare.settings import Settings

__all__ = ["UnknownAthlete", "ensure_athlete", "get_athlete", "lock_athlete"]


def get_athlete(session: Session, name: str) -> Athlete:
    """The athlete with handle ``name``; raises UnknownAthlete with the known handles in the message, and
    :class:`~stridecare.handles.InvalidHandle` for a name that cannot be a handle."""
    check_handle(name)
    athlete = session.scalar(select(Athlete).where(Athlete.name == name))
    if athlete is None:
        raise unknown_athlete(name, session.scalars(select(Athlete.name).order_by(Athlete.name)))
    return athlete


def lock_athlete(session: Session, athlete_id: int) -> None:
    """Hold the athlete's row lock until the transaction ends (PostgreSQL; SQLite serialises writers anyway).

    Every transaction that changes an athlete's runs, load or prompts takes it first, before inserting any row
    that references the athlete: a foreign-key insert takes a share lock on the athlete row, and two
    transactions that each hold one and then ask for the row lock deadlock. Taken first, the lock simply
    serialises one athlete's writers, which the incremental load update needs anyway.
    """
    session.execute(select(Athlete.id).where(Athlete.id == athlete_id).with_for_update())


def ensure_athlete(session: Session, name: str, settings: Settings, *, lock: bool = False) -> Athlete:
    """The athlete with handle ``name``, created with default settings when a folder names a new one.

    ``lock`` takes the athlete's row lock (:func:`lock_athlete`) before returning. Raises
    :class:`~stridecare.handles.InvalidHandle` (before touching the database) for a name that is no handle.
    """
    check_handle(name)
    athlete = session.scalar(select(Athlete).where(Athlete.name == name))
    if athlete is None:
        athlete = Athlete(name=name, timezone=settings.default_timezone)
        try:
            with session.begin_nested():
                session.add(athlete)
                session.flush()
        except IntegrityError:
            # Another worker created it between our read and write: use theirs.
            athlete = session.scalars(select(Athlete).where(Athlete.name == name)).one()
    if lock:
        lock_athlete(session, athlete.id)
    return athlete
