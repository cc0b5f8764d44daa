"""A stored run as the command line's and the API's JSON show it: one mapping, from the run's row (what a read
through SQLAlchemy Core returns) or from the mapped object (what the ORM's callers hold)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stridecare.db.models import Run

# The columns of ``runs`` the JSON shows; a row given to :func:`run_row_json` holds these and, from the run's
# ``run_loads`` row, ``load`` and ``long_run`` (both None when the run has no load yet).
RUN_JSON_COLUMNS = (
    "id",
    "source",
    "source_key",
    "sport",
    "sub_sport",
    "start_time",
    "timer_s",
    "elapsed_s",
    "distance_m",
    "steps",
    "avg_cadence_spm",
    "cadence_source",
    "duplicate_of_id",
    "step_note",
)


def run_row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run's row (:data:`RUN_JSON_COLUMNS` plus ``load`` and ``long_run``) as the command line's JSON prints
    it."""
    load = row["load"]
    return {
        "id": row["id"],
        "source": row["source"],
        "source_key": row["source_key"],
        "sport": row["sport"],
        "sub_sport": row["sub_sport"],
        "start_time": row["start_time"].isoformat().replace("+00:00", "Z"),
        "timer_s": round(row["timer_s"], 3),
        "elapsed_s": round(row["elapsed_s"], 3),
        "distance_m": round(row["distance_m"], 2),
        "steps": round(row["steps"]),
        "avg_cadence_spm": None if row["avg_cadence_spm"] is None else round(row["avg_cadence_spm"], 1),
        "cadence_source": row["cadence_source"],
        "load": None if load is None else round(load, 1),
        "long_run": None if load is None else row["long_run"],
        "duplicate_of": row["duplicate_of_id"],
        "step_note": row["step_note"],
    }


def run_json(run: Run) -> dict[str, Any]:
    """A stored run as the command line's JSON prints it (loads the run's load if it is not loaded yet)."""
    load = run.load
    row = {name: getattr(run, name) for name in RUN_JSON_COLUMNS}
    row["load"], row["long_run"] = (None, None) if load is None else (load.load, load.long_run)
    return run_row_json(row)
