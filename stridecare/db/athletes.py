"""Athlete rows: look-up by handle and creation on first use."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stridecare.db.models import Athlete
from stridecare.settings import Settings


class UnknownAthlete(LookupError):
    """No athlete has that handle."""


def get_athlete(session: Session, name: str) -> Athlete:
    """The athlete with handle ``name``; raises UnknownAthlete with the known handles in the message."""
    athlete = session.scalar(select(Athlete).where(Athlete.name == name))
    if athlete is None:
        known = ", ".join(session.scalars(select(Athlete.name).order_by(Athlete.name))) or "none yet"
        raise UnknownAthlete(f"no athlete named {name!r} (known: {known}); add one with `stridecare athlete add`")
    return athlete


def ensure_athlete(session: Session, name: str, settings: Settings) -> Athlete:
    """The athlete with handle ``name``, created with default settings when a folder names a new one."""
    athlete = session.scalar(select(Athlete).where(Athlete.name == name))
    if athlete is not None:
        return athlete
    athlete = Athlete(name=name, timezone=settings.default_timezone)
    try:
        with session.begin_nested():
            session.add(athlete)
            session.flush()
    except IntegrityError:
        # Another worker created it between our read and write: use theirs.
        athlete = session.scalars(select(Athlete).where(Athlete.name == name)).one()
    return athlete
