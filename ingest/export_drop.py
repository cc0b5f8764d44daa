"""A Strava bulk export dropped into an inbox: imported whole, once, like ``stridecare import export.zip``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ingest.decode import Decoded
from ingest.service import check
from ingest.store import FileReport, remember_file
from ingest.strava_export import Report, StravaExportError, import_strava_export
from stridecare.db.athletes import ensure_athlete
from stridecare.runtime import Runtime


def import_dropped_export(
    rt: Runtime, athlete: str, path: Path, root: Path | None, now: datetime, *, report: Report | None = None
) -> FileReport:
    """Import the export at ``path`` for ``athlete`` (``report`` hears each activity's outcome) and remember the
    archive, so that a rescan does not offer it again. The returned report sums the archive up; its runs are
    stored with the athlete's replan owed."""
    checked = check(rt.settings, path, root)
    if isinstance(checked, FileReport):
        return checked
    try:
        summary = import_strava_export(rt, path, athlete, now, report=report)
    except StravaExportError as exc:
        outcome = FileReport(str(path), "rejected", str(exc))
    else:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.items())) or "no activities"
        status = "ingested" if summary.get("ingested") else "skipped" if not summary.get("duplicate") else "duplicate"
        outcome = FileReport(str(path), status, f"Strava export: {counts}", replan_owed=bool(summary.get("ingested")))
    with rt.db.transaction() as session:
        athlete_id = ensure_athlete(session, athlete, rt.settings).id
        remember_file(session, athlete_id, Decoded(path, checked.stat, checked.digest, "strava_export", None, None))
    outcome.athlete_id = athlete_id
    return outcome
