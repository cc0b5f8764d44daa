"""The installation at a glance, for the home page: each athlete with their inbox folders, last runs and prompts,
Strava state and channels, and the health of the parts a runner notices (database, inboxes, outbox).

Plain JSON-able values; cheap queries only (the page is opened often and must not wait on a network check).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from delivery.outbox import channels_for
from recommender.run_detail import routine_title
from stridecare.db.models import Athlete, Delivery, ImportedFile, Prompt, Run, RunLoad, StravaAccount
from stridecare.domain.history import local_day
from stridecare.settings import Settings

LAST_RUNS = 3
LAST_PROMPTS = 3


def _athlete_view(session: Session, settings: Settings, athlete: Athlete) -> dict[str, Any]:
    # Plain rows with each run's load joined: no query per run.
    runs = list(
        session.execute(
            select(Run.id, Run.start_time, Run.distance_m, Run.sport, RunLoad.load)
            .outerjoin(RunLoad, RunLoad.run_id == Run.id)
            .where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None))
            .order_by(Run.start_time.desc())
            .limit(LAST_RUNS)
        )
    )
    prompts = list(
        session.scalars(
            select(Prompt).where(Prompt.athlete_id == athlete.id).order_by(Prompt.created_at.desc()).limit(LAST_PROMPTS)
        )
    )
    strava = session.scalar(select(StravaAccount).where(StravaAccount.athlete_id == athlete.id))
    run_count = session.scalar(
        select(func.count(Run.id)).where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None))
    )
    return {
        "id": athlete.id,
        "name": athlete.name,
        "display_name": athlete.display_name or athlete.name,
        "timezone": athlete.timezone,
        "channels": channels_for(settings, athlete),
        "inboxes": [str(path) for who, path in settings.inbox_map() if who == athlete.name],
        "runs": int(run_count or 0),
        "last_runs": [
            {
                "id": r.id,
                "day": local_day(r.start_time, athlete.timezone).isoformat(),
                "distance_km": round(r.distance_m / 1000, 1),
                "load": round(r.load) if r.load is not None else None,
                "sport": r.sport,
            }
            for r in runs
        ],
        "last_prompts": [
            {
                "id": p.id,
                "kind": p.kind,
                "day": p.local_day.isoformat(),
                "routines": [routine_title(k) for k in p.routines],
                "run_id": p.run_id,
                "done": p.done_at is not None,
            }
            for p in prompts
        ],
        "strava": (
            {"connected": True, "since": strava.connected_at.isoformat(), "backfill": strava.backfill_state}
            if strava is not None
            else {"connected": False}
        ),
    }


def _folder_state(path: str) -> str:
    if os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK):
        return "ok"
    return "not writable" if os.path.exists(path) else "missing"


def health(session: Session, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Database, inbox folders, outbox and recent imports, each ``{"name", "ok", "detail"}``."""
    checks: list[dict[str, Any]] = []
    try:
        session.execute(text("SELECT 1"))
        checks.append({"name": "database", "ok": True, "detail": "reachable"})
    except Exception as exc:  # the page still shows, with the error named
        checks.append({"name": "database", "ok": False, "detail": exc.__class__.__name__})
        return checks
    for who, path in settings.inbox_map():
        state = _folder_state(str(path))
        checks.append({"name": f"inbox {who}", "ok": state == "ok", "detail": f"{path}: {state}"})
    counts: dict[str, int] = {
        status: int(n)
        for status, n in session.execute(select(Delivery.status, func.count(Delivery.id)).group_by(Delivery.status))
    }
    overdue = session.scalar(
        select(func.count(Delivery.id)).where(Delivery.status == "pending", Delivery.next_attempt_at < now)
    )
    failed = int(counts.get("failed", 0))
    checks.append(
        {
            "name": "outbox",
            "ok": failed == 0,
            "detail": f"{counts.get('sent', 0)} sent, {counts.get('pending', 0)} waiting "
            f"({overdue or 0} due now), {failed} failed",
        }
    )
    rejected = session.scalar(select(func.count(ImportedFile.id)).where(ImportedFile.status == "rejected"))
    checks.append(
        {
            "name": "imports",
            "ok": True,
            "detail": f"{rejected or 0} damaged file(s) moved to {settings.effective_quarantine_dir}"
            if rejected
            else "no damaged files",
        }
    )
    return checks


def overview(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    """Every athlete (by name) with their recent activity, plus :func:`health`."""
    athletes = list(session.scalars(select(Athlete).order_by(Athlete.name)))
    known = {a.name for a in athletes}
    return {
        "athletes": [_athlete_view(session, settings, a) for a in athletes],
        # An inbox configured for a handle that no athlete has yet: files there wait for `stridecare athlete add`.
        "orphan_inboxes": [{"athlete": who, "path": str(p)} for who, p in settings.inbox_map() if who not in known],
        "health": health(session, settings, now),
        "strava_configured": bool(settings.strava_client_id),
        "public_url": settings.effective_public_url,
    }
