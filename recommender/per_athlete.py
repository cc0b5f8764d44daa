"""One pass over every athlete, each in its own transaction, for the weekly writers (prompts, digests)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stridecare.db.models import Athlete
from stridecare.runtime import Runtime


def for_each_athlete(rt: Runtime, write: Callable[[Session, Athlete, datetime], bool]) -> int:
    """Call ``write(session, athlete, now)`` for every athlete, one transaction each; returns how many wrote.

    A unique-key clash means another tick (a second beat, a redelivered task) wrote that athlete's row first:
    that athlete is skipped and the others still get theirs.
    """
    now = rt.now()
    created = 0
    with rt.db.transaction() as session:
        athlete_ids = list(session.scalars(select(Athlete.id)))
    for athlete_id in athlete_ids:
        try:
            with rt.db.transaction() as session:
                athlete = session.get(Athlete, athlete_id)
                if athlete is not None and write(session, athlete, now):
                    created += 1
        except IntegrityError:
            continue
    return created
