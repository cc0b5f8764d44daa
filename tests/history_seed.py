"""Long histories in seconds: an athlete with thousands of runs written straight into the database with bulk inserts
(never through the pipeline, which would take minutes), for the tests and the bench that check that a page costs
the same whatever the length of the history.

One run a day ending the day before ``now``, each with its load row, its daily row (acute and chronic averages,
a plain EWMA: the figures are not what is measured), a post-run prompt (most ticked off, with completions), a
flag on every tenth run; every ninth run got no prompt (so the runs list says why) and every fifteenth has a
second copy from another source linked to it; one pair of shoes carries every run; foot-discomfort scores for the
last two months; a sample series on the newest run.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select, text, update

from stridecare.db.models import (
    Athlete,
    Completion,
    DailyLoad,
    FeelScore,
    Prompt,
    Run,
    RunLoad,
    RunSamples,
    Shoe,
)
from stridecare.db.samples import pack_samples
from stridecare.domain.run import Samples

TZ = "Europe/Berlin"
BATCH = 5_000
SPIKE_REASON = "this run's load 2.1 × your longest of the last 30 days; consider keeping the next runs easy."
ROUTINES = ["roll_out", "toe_spread"]


def insert_rows(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` in one executemany and empty the list (seeders gather rows in batches)."""
    if rows:
        conn.execute(insert(table), rows)
        rows.clear()


def sample_blob(minutes: int) -> bytes:
    """A steady run of ``minutes`` at one sample a second, a little wavy, packed as runs keep their samples."""
    n = minutes * 60
    t = [float(i) for i in range(n)]
    speed: list[float | None] = [3.0 + 0.3 * math.sin(i / 90) for i in range(n)]
    cadence: list[float | None] = [170.0 + 4 * math.sin(i / 60) for i in range(n)]
    distance: list[float | None] = [3.0 * i for i in range(n)]
    altitude: list[float | None] = [50.0 + 5 * math.sin(i / 300) for i in range(n)]
    return pack_samples(Samples(t, distance, speed, cadence, altitude, [True] * n))


def seed_history(engine: Engine, name: str, runs: int, now: datetime, token: str) -> tuple[int, int]:
    """Athlete ``name`` (secret link ``token``) with ``runs`` days of history before ``now``; returns the
    athlete's id and the newest run's id."""
    with engine.begin() as conn:
        athlete_id = conn.execute(
            insert(Athlete).returning(Athlete.id),
            [
                {
                    "name": name,
                    "display_name": name.capitalize(),
                    "timezone": TZ,
                    "dashboard_token": token,
                    "link_secret": "s" * 32,
                    "channel_settings": {},
                    "created_at": now - timedelta(days=runs + 10),
                }
            ],
        ).scalar_one()
        shoe_id = conn.execute(
            insert(Shoe).returning(Shoe.id),
            [{"athlete_id": athlete_id, "name": "Pegasus", "remind_at_km": 800.0, "retired": False, "start_km": 0.0}],
        ).scalar_one()
        conn.execute(update(Athlete).where(Athlete.id == athlete_id).values(default_shoe_id=shoe_id))
        base = int(conn.execute(select(func.coalesce(func.max(Run.id), 0))).scalar_one())
        run_rows: list[dict[str, Any]] = []
        load_rows: list[dict[str, Any]] = []
        daily_rows: list[dict[str, Any]] = []
        prompt_rows: list[dict[str, Any]] = []
        done_rows: list[dict[str, Any]] = []
        acute = chronic = 0.0
        first_day = (now - timedelta(days=runs)).date()
        next_id = base + 1
        newest = 0
        for k in range(runs):
            run_id = next_id
            newest = run_id
            next_id += 1
            start = datetime.combine(first_day + timedelta(days=k), datetime.min.time(), UTC) + timedelta(hours=6)
            # Patterns count back from ``now``: the recent weeks look alike whatever the length of the history.
            back = runs - k
            minutes = 30 + (back % 7) * 8
            distance = minutes * 60 * 3.0
            steps = minutes * 170.0
            load = steps * 0.6
            flagged = back % 10 == 9
            run = {
                "id": run_id,
                "athlete_id": athlete_id,
                "source": "fit",
                "source_key": f"{name}-{k}",
                "name": f"Morning run {k}",
                "sport": "running",
                "start_time": start,
                "elapsed_s": minutes * 60.0,
                "timer_s": minutes * 60.0,
                "distance_m": distance,
                "steps": steps,
                "avg_cadence_spm": 170.0,
                "cadence_source": "recorded",
                "shoe_id": shoe_id,
                "duplicate_of_id": None,
                "created_at": start + timedelta(hours=2),
                "updated_at": start + timedelta(hours=2),
            }
            run_rows.append(run)
            if back % 15 == 7:
                # The same session from Strava, linked to the richer copy: it counts nowhere.
                run_rows.append(
                    {**run, "id": next_id, "source": "strava", "duplicate_of_id": run_id, "name": "Strava copy"}
                )
                next_id += 1
            load_rows.append(
                {
                    "run_id": run_id,
                    "load": load,
                    "stimulus_sum": 1.0,
                    "downhill_impact": 0.0,
                    "peak_force_bw": 2.5,
                    "walking_steps": 0.0,
                    "running_steps": steps,
                    "long_run": minutes >= 70,
                    "flags": ["spike_caution"] if flagged else [],
                    "facts": {"flag_reasons": {"spike_caution": SPIKE_REASON}} if flagged else {},
                    "model_version": 2,
                }
            )
            acute += (load - acute) * 2 / 8
            chronic += (load - chronic) * 2 / 29
            daily_rows.append(
                {
                    "athlete_id": athlete_id,
                    "day": start.date(),
                    "load": load,
                    "acute": acute,
                    "chronic": chronic,
                    "distance_m": distance,
                    "steps": steps,
                    "stimulus": 1.0,
                }
            )
            if back % 9 != 4:
                due = start + timedelta(minutes=minutes + 50)
                prompt_id = f"{athlete_id:08x}{run_id:024x}"
                done = back % 6 != 0
                prompt_rows.append(
                    {
                        "id": prompt_id,
                        "athlete_id": athlete_id,
                        "kind": "post_run",
                        "dedupe_key": f"run:{run_id}",
                        "run_id": run_id,
                        "local_day": start.date(),
                        "routines": ROUTINES,
                        "reasons": ["an easy run: the routines keep feet ready"],
                        "facts": {},
                        "rule": "bench",
                        "created_at": due,
                        "due_at": due,
                        "done_at": due + timedelta(hours=2) if done else None,
                    }
                )
                if done:
                    done_rows.extend(
                        {"prompt_id": prompt_id, "athlete_id": athlete_id, "routine": r, "done_at": due}
                        for r in ROUTINES
                    )
            if len(run_rows) >= BATCH:
                for table, rows in ((Run, run_rows), (RunLoad, load_rows), (DailyLoad, daily_rows)):
                    insert_rows(conn, table, rows)
                insert_rows(conn, Prompt, prompt_rows)
                insert_rows(conn, Completion, done_rows)
        for table, rows in ((Run, run_rows), (RunLoad, load_rows), (DailyLoad, daily_rows)):
            insert_rows(conn, table, rows)
        insert_rows(conn, Prompt, prompt_rows)
        insert_rows(conn, Completion, done_rows)
        conn.execute(
            insert(FeelScore),
            [
                {
                    "athlete_id": athlete_id,
                    "day": (now - timedelta(days=d)).date(),
                    "score": (d * 7) % 6,
                    "location": None,
                    "recorded_at": now - timedelta(days=d),
                }
                for d in range(1, 60)
            ],
        )
        conn.execute(insert(RunSamples), [{"run_id": newest, "count": 3600, "data": sample_blob(60)}])
        if engine.dialect.name == "sqlite":
            conn.execute(text("ANALYZE"))
    if engine.dialect.name != "sqlite":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    return int(athlete_id), newest
