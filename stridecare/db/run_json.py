"""A stored run as the command line's and the API's JSON show it."""

from __future__ import annotations

from typing import Any

from stridecare.db.models import Run


def run_json(run: Run) -> dict[str, Any]:
    """A stored run as the command line's JSON prints it."""
    load = run.load
    return {
        "id": run.id,
        "source": run.source,
        "source_key": run.source_key,
        "sport": run.sport,
        "sub_sport": run.sub_sport,
        "start_time": run.start_time.isoformat().replace("+00:00", "Z"),
        "timer_s": round(run.timer_s, 3),
        "elapsed_s": round(run.elapsed_s, 3),
        "distance_m": round(run.distance_m, 2),
        "steps": round(run.steps),
        "avg_cadence_spm": None if run.avg_cadence_spm is None else round(run.avg_cadence_spm, 1),
        "cadence_source": run.cadence_source,
        "load": None if load is None else round(load.load, 1),
        "long_run": None if load is None else load.long_run,
        "duplicate_of": run.duplicate_of_id,
        "step_note": run.step_note,
    }
