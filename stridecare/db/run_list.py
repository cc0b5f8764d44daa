"""An athlete's newest runs, read with SQLAlchemy Core alone: what ``stridecare runs`` prints.

The command reads a few rows, and importing the ORM and the models costs about 0.2 s of CPU, far more than the
query; so this read names only the columns it reads, with lightweight ``table()``/``column()``
constructs. ``stridecare.db.models`` stays the schema: tests/test_cli_lazy.py checks these names against it, and
the rows become JSON through the same mapping as the ORM's runs (:func:`~stridecare.db.run_json.run_row_json`).
The same statements serve SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, Integer, String, Text, column, select, table

from stridecare.db.column_types import UTCDateTime
from stridecare.db.engine import Database
from stridecare.db.run_json import RUN_JSON_COLUMNS, run_row_json
from stridecare.handles import check_handle, unknown_athlete

ATHLETES = table("athletes", column("id", Integer), column("name", String))
RUNS = table(
    "runs",
    column("id", Integer),
    column("athlete_id", Integer),
    column("source", String),
    column("source_key", String),
    column("sport", String),
    column("sub_sport", String),
    column("start_time", UTCDateTime()),
    column("timer_s", Float),
    column("elapsed_s", Float),
    column("distance_m", Float),
    column("steps", Float),
    column("avg_cadence_spm", Float),
    column("cadence_source", String),
    column("duplicate_of_id", Integer),
    column("step_note", Text),
)
RUN_LOADS = table("run_loads", column("run_id", Integer), column("load", Float), column("long_run", Boolean))


def newest_runs(db: Database, handle: str, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` newest runs of the athlete ``handle``, newest first, as the command line's JSON shows them.

    One read-only transaction (as :meth:`Database.read`'s, through Core). Raises
    :class:`~stridecare.handles.InvalidHandle` for a name that is no handle and
    :class:`~stridecare.handles.UnknownAthlete` for one no athlete has.
    """
    check_handle(handle)
    with db.read_engine.connect() as conn:
        athlete_id = conn.scalar(select(ATHLETES.c.id).where(ATHLETES.c.name == handle))
        if athlete_id is None:
            raise unknown_athlete(handle, conn.scalars(select(ATHLETES.c.name).order_by(ATHLETES.c.name)))
        # The runs, filtered and ordered as the ORM's query of them was, then their loads in one query.
        runs = conn.execute(
            select(*(RUNS.c[name] for name in RUN_JSON_COLUMNS))
            .where(RUNS.c.athlete_id == athlete_id)
            .order_by(RUNS.c.start_time.desc())
            .limit(limit)
        ).mappings()
        rows = [dict(run) for run in runs]
        ids = [row["id"] for row in rows]
        loads = {
            load.run_id: load
            for load in conn.execute(
                select(RUN_LOADS.c.run_id, RUN_LOADS.c.load, RUN_LOADS.c.long_run).where(RUN_LOADS.c.run_id.in_(ids))
            )
        }
    for row in rows:
        load = loads.get(row["id"])
        row["load"], row["long_run"] = (None, None) if load is None else (load.load, load.long_run)
    return [run_row_json(row) for row in rows]
