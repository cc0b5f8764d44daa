"""An athlete's current picture: acute and chronic load today, ACWR when it may be shown, flags, recent runs and
prompts. Shared by ``stridecare status`` and the web app."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recommender.planner import constants, daily_rows
from recommender.run_json import run_json
from stridecare.db.models import Athlete, Delivery, Prompt, Run
from stridecare.domain.history import EwmaState, acwr, local_day, recompute_from
from stridecare.settings import Settings


def prompt_json(prompt: Prompt, deliveries: list[Delivery]) -> dict[str, Any]:
    """A prompt as the command line's JSON prints it."""
    return {
        "id": prompt.id,
        "kind": prompt.kind,
        "run_id": prompt.run_id,
        "local_day": prompt.local_day.isoformat(),
        "routines": prompt.routines,
        "reasons": prompt.reasons,
        "rule": prompt.rule,
        "flags": [f["name"] for f in prompt.facts.get("flags", [])],
        "created_at": prompt.created_at.isoformat(),
        "due_at": prompt.due_at.isoformat(),
        "done_at": prompt.done_at.isoformat() if prompt.done_at else None,
        "deliveries": {d.channel: d.status for d in deliveries},
    }


def prompts_for(
    session: Session, athlete: Athlete, limit: int = 20, pending_only: bool = False
) -> list[dict[str, Any]]:
    """The athlete's newest prompts with the state of each delivery."""
    prompts = list(
        session.scalars(
            select(Prompt).where(Prompt.athlete_id == athlete.id).order_by(Prompt.created_at.desc()).limit(limit)
        )
    )
    out = []
    for p in prompts:
        deliveries = list(session.scalars(select(Delivery).where(Delivery.prompt_id == p.id)))
        if pending_only and not any(d.status == "pending" for d in deliveries):
            continue
        out.append(prompt_json(p, deliveries))
    return out


def athlete_status(session: Session, settings: Settings, athlete: Athlete, now: datetime) -> dict[str, Any]:
    """Acute and chronic load as of today (rest days since the last run decay them), flags and recent activity."""
    today = local_day(now, athlete.timezone)
    rows = daily_rows(session, athlete.id)
    acute = chronic = 0.0
    ratio: float | None = None
    history_days = 0
    if rows:
        first, last = rows[0].day, rows[-1].day
        acute, chronic = rows[-1].acute, rows[-1].chronic
        if today > last:
            decayed = recompute_from(
                [],
                start=last + timedelta(days=1),
                through=today,
                previous=EwmaState(last, acute, chronic),
                first_day=first,
                constants=constants(settings),
            )
            acute, chronic = decayed[-1].acute, decayed[-1].chronic
        history_days = (max(today, last) - first).days + 1
        ratio = acwr(acute, chronic, history_days, min_history_days=settings.load.acwr_min_history_days)
    recent = list(
        session.scalars(
            select(Run)
            .where(Run.athlete_id == athlete.id, Run.duplicate_of_id.is_(None))
            .order_by(Run.start_time.desc())
            .limit(10)
        )
    )
    flags: list[dict[str, Any]] = []
    for run in recent:
        if run.load is None or run.start_time < now - timedelta(days=14):
            continue
        reasons = run.load.facts.get("flag_reasons", {})
        flags += [{"flag": f, "run_id": run.id, "reason": reasons.get(f, f)} for f in run.load.flags]
    return {
        "athlete": athlete.name,
        "as_of": today.isoformat(),
        "acute_load": round(acute, 1),
        "chronic_load": round(chronic, 1),
        "acwr": None if ratio is None else round(ratio, 3),
        "history_days": history_days,
        "flags": sorted({f["flag"] for f in flags}),
        "flag_details": flags,
        "recent_runs": [run_json(r) for r in recent],
        "pending_prompts": prompts_for(session, athlete, pending_only=True),
    }
