"""The console's account of one file: a line for what became of the file, and one per run for its prompt.

Called by whoever ingested the file for a watched folder (the worker task, the in-process watcher), so that
``stridecare run`` tells a person what happened to every file they dropped and why a run got no prompt.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ingest.store import FileReport
from recommender.figures import figure_text
from recommender.routines import routine
from recommender.silence import PromptOutcome, outcomes_for_runs
from stridecare.db.engine import Database
from stridecare.db.models import Athlete, ImportedFile, Run, StravaAccount, StravaEvent
from stridecare.db.run_json import run_json
from stridecare.logging import event
from stridecare.settings import Settings

log = logging.getLogger("stridecare.console")


def _run_text(run: dict[str, Any]) -> str:
    parts = [f"run {run['id']}", f"{run['sport']}", f"{run['distance_m'] / 1000:.1f} km"]
    if run.get("load") is not None:
        parts.append(figure_text("run_load", run["load"]))
    return ", ".join(parts)


def file_line(athlete: str, report: FileReport) -> str:
    """One line for a file: ingested with distance and load, duplicate of which run, skipped or rejected and why."""
    name = Path(report.path).name
    if report.status == "ingested" and not report.runs:  # an archive: its reason sums it up
        return f"{athlete}: {name} ingested: {report.reason}"
    if report.status == "ingested":
        text = f"{athlete}: {name} ingested: " + "; ".join(_run_text(r) for r in report.runs)
        return text + (f" ({report.reason})" if report.reason else "")
    if report.status == "duplicate":
        of = ", ".join(f"run {r['id']}" for r in report.runs)
        return f"{athlete}: {name} is a duplicate" + (f" of {of}" if of else "") + f": {report.reason}"
    reason = (report.reason or "no reason given").replace("/None)", ")")  # "(cycling/None)": no sub-sport
    if report.status == "rejected" and reason.startswith("damaged"):
        reason += " (quarantined; `stridecare retry` reads it again, after an upgrade say)"
    return f"{athlete}: {name} {report.status}: {reason}"


def prompt_line(outcome: PromptOutcome) -> str:
    """One line for a run's prompt: to whom and by which channels, or why there is none."""
    if outcome.prompt_id is None:
        return f"{outcome.athlete}: no prompt for run {outcome.run_id}: {outcome.reason}"
    channels = ", ".join(outcome.channels) or "no channel (the athlete has none set up)"
    held = f", held for quiet hours until {outcome.held_until:%Y-%m-%d %H:%M %Z}" if outcome.held_until else ""
    titles = ", ".join(_title(key) for key in outcome.routines)
    return f"{outcome.athlete}: prompt {outcome.prompt_id} for run {outcome.run_id} ({titles}) → {channels}{held}"


def _title(key: str) -> str:
    try:
        return routine(key).title.lower()
    except (KeyError, ValueError):
        return key


def announce(db: Database, settings: Settings, athlete: str, report: FileReport, *, prompts: bool = True) -> None:
    """Log the file's line and, for new runs, each run's prompt line (rejections as warnings).

    ``prompts=False`` logs the file's line only."""
    level = logging.WARNING if report.status == "rejected" else logging.INFO
    event(
        log,
        "file",
        file_line(athlete, report),
        level=level,
        athlete=athlete,
        path=report.path,
        status=report.status,
        reason=report.reason,
        runs=report.runs,
    )
    if report.status == "ingested" and prompts:
        announce_prompts(db, settings, [int(r["id"]) for r in report.runs])


def announce_prompts(db: Database, settings: Settings, run_ids: list[int]) -> None:
    """Log each run's prompt line, or why it got none."""
    with db.read() as session:  # the console only reads: no write lock on the worker's path
        outcomes = outcomes_for_runs(session, settings, run_ids)
    for outcome in outcomes:
        event(
            log,
            "prompt" if outcome.prompt_id else "no_prompt",
            prompt_line(outcome),
            athlete=outcome.athlete,
            run_id=outcome.run_id,
            prompt_id=outcome.prompt_id,
            routines=outcome.routines,
            channels=outcome.channels,
            held_until=outcome.held_until.isoformat() if outcome.held_until else None,
            reason=outcome.reason,
        )


def announce_stored(db: Database, settings: Settings, run_ids: list[int], *, activities: bool = False) -> None:
    """The lines of the files that stored ``run_ids``, once their figures are known: a deferred store (an inbox
    burst) has no load to show until its replan, which calls this. ``activities``: the runs stored from an API
    rather than a file (a Strava history import) get a line each too."""
    reports: dict[int, tuple[str, FileReport]] = {}
    api_runs: list[tuple[str, dict[str, Any]]] = []
    with db.read() as session:  # the console only reads: no write lock on the worker's path
        for run in session.scalars(select(Run).where(Run.id.in_(run_ids)).order_by(Run.start_time, Run.id)):
            if run.file_id is None and activities:
                owner = session.get(Athlete, run.athlete_id)
                api_runs.append((owner.name if owner is not None else str(run.athlete_id), run_json(run)))
                continue
            if run.file_id is None or (imported := session.get(ImportedFile, run.file_id)) is None:
                continue
            if run.file_id not in reports:
                owner = session.get(Athlete, run.athlete_id)
                name = owner.name if owner is not None else str(run.athlete_id)
                reports[run.file_id] = (name, FileReport(imported.path, imported.status, imported.reason))
            reports[run.file_id][1].runs.append(run_json(run))
    # Every file's line, then the prompt lines of all their runs from one read (a chunk holds many files).
    for name, report in reports.values():
        announce(db, settings, name, report, prompts=False)
    for name, stored in api_runs:
        source, key = stored["source"], stored["source_key"]
        text = f"{name}: {source.capitalize()} activity {key} stored: {_run_text(stored)}"
        event(log, "activity", text, athlete=name, source=source, activity_id=key, run=stored)
    ingested = [int(r["id"]) for _name, report in reports.values() if report.status == "ingested" for r in report.runs]
    ingested += [int(stored["id"]) for _name, stored in api_runs]
    if ingested:
        announce_prompts(db, settings, ingested)


def announce_strava_event(db: Database, settings: Settings, event_id: int) -> None:
    """The console's line for a Strava event that changed runs: the activity's run with distance and load, or
    that it was removed, then its prompt line (or why none)."""
    with db.read() as session:  # the console only reads: no write lock on the worker's path
        row = session.get(StravaEvent, event_id)
        if row is None:
            return
        payload = row.payload
        account = session.scalar(
            select(StravaAccount).where(StravaAccount.strava_athlete_id == payload.get("owner_id"))
        )
        athlete = session.get(Athlete, account.athlete_id) if account is not None else None
        if athlete is None:
            return
        activity = payload.get("object_id")
        run = session.scalar(
            select(Run).where(Run.athlete_id == athlete.id, Run.source == "strava", Run.source_key == str(activity))
        )
        summary = None if run is None else run_json(run)
        name = athlete.name
    if summary is None:
        event(log, "strava", f"{name}: Strava activity {activity} removed", athlete=name, activity=activity)
        return
    event(
        log,
        "strava",
        f"{name}: Strava activity {activity} {payload.get('aspect_type', 'create')}d: {_run_text(summary)}",
        athlete=name,
        activity=activity,
        run=summary,
    )
    announce_prompts(db, settings, [int(summary["id"])])
