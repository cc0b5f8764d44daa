"""The coach's roster (the admin's home page) at 200 athletes with 4,000 runs each.

Run from the repository root::

    .venv/bin/python bench/bench_roster.py [--athletes 200] [--runs 4000] [--repeat 20] [--pg URL] [--json]

Rows are written straight into a fresh database with bulk inserts (not through the pipeline, which would take
hours): per athlete ``--runs`` runs, one every 20 hours back from now, each with its load row and a post-run
prompt (most ticked off), a few flags in the last week, foot-discomfort scores, a pair of shoes and, for some, a
shoe alert. Then it times, after a warm-up, the roster alone (``recommender.roster.roster``) and the whole home
page as the admin gets it (``GET /`` through the web app, logged in): median, p95 and max. ``--pg`` runs the
same on PostgreSQL (a database you name, emptied first). The goal: the page under 300 ms here.

Measured here (2 shared cores, load average about 6; 800,000 runs, 800,000 prompts): SQLite — roster 22 ms
median (p95 100), the whole page 38 ms median (p95 120, max 148); PostgreSQL — roster 58 ms, page 60 ms median
(p95 197, max 252). Before the roster's queries were made index-friendly the page took 250–350 ms median: a
scan of every prompt for shoe alerts (the planner cannot know they are rare) and a max() over every run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from history_seed import insert_rows  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from stridecare.db.models import Athlete, FeelScore, Prompt, Run, RunLoad, Shoe  # noqa: E402
from stridecare.runtime import Runtime  # noqa: E402
from stridecare.settings import Settings  # noqa: E402

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BATCH = 20_000
SPIKE_REASON = "load 2.1 × the 28-day average"


def settings_for(home: Path, pg: str | None) -> Settings:
    return Settings(
        data_home=home,
        database_url=pg,
        encryption_keys=["6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="],
        secret_key="bench-signing-key",
    )


def seed(rt: Runtime, athletes: int, runs: int) -> dict[str, float]:
    """Bulk-insert the roster's data; returns the seconds each part took."""
    rng = random.Random(7)
    took: dict[str, float] = {}
    started = time.perf_counter()
    groups = ["juniors", "club", "masters", None]
    with rt.db.engine.begin() as conn:
        conn.execute(
            insert(Athlete),
            [
                {
                    "name": f"a{i:04d}",
                    "display_name": f"Athlete {i}",
                    "timezone": "Europe/Berlin",
                    "group_name": groups[i % 4],
                    "dashboard_token": f"tok{i:029d}",
                    "link_secret": f"sec{i:029d}",
                    "channel_settings": {},
                    "created_at": NOW - timedelta(days=4000),
                }
                for i in range(athletes)
            ],
        )
        ids = [row[0] for row in conn.execute(text("SELECT id FROM athletes ORDER BY id"))]
        conn.execute(
            insert(Shoe),
            [
                {"athlete_id": a, "name": "Pegasus", "remind_at_km": 700.0, "retired": False, "start_km": 0.0}
                for a in ids
            ],
        )
        shoes: dict[int, int] = {int(a): int(s) for a, s in conn.execute(text("SELECT athlete_id, id FROM shoes"))}
    took["athletes"] = time.perf_counter() - started

    run_rows: list[dict[str, Any]] = []
    next_id = 1
    started = time.perf_counter()
    with rt.db.engine.begin() as conn:
        for n, athlete_id in enumerate(ids):
            # A tenth of the roster stopped sending data two weeks ago.
            offset = timedelta(days=14) if n % 10 == 0 else timedelta(hours=rng.randint(1, 30))
            for k in range(runs):
                run_rows.append(
                    {
                        "id": next_id,
                        "athlete_id": athlete_id,
                        "source": "bench",
                        "source_key": f"{athlete_id}-{k}",
                        "sport": "running",
                        "start_time": NOW - offset - timedelta(hours=20 * k),
                        "elapsed_s": 2400.0,
                        "timer_s": 2400.0,
                        "distance_m": 7200.0,
                        "steps": 6800.0,
                        "cadence_source": "recorded",
                        "shoe_id": shoes[athlete_id],
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                )
                next_id += 1
                if len(run_rows) >= BATCH:
                    insert_rows(conn, Run, run_rows)
        insert_rows(conn, Run, run_rows)
    took["runs"] = time.perf_counter() - started

    started = time.perf_counter()
    load_rows: list[dict[str, Any]] = []
    prompt_rows: list[dict[str, Any]] = []
    with rt.db.engine.begin() as conn:
        run_id = 1
        for n, athlete_id in enumerate(ids):
            offset = timedelta(days=14) if n % 10 == 0 else timedelta(hours=1)
            for k in range(runs):
                start = NOW - offset - timedelta(hours=20 * k)
                flagged = k < 8 and n % 7 == 0 and k == 2
                load_rows.append(
                    {
                        "run_id": run_id,
                        "load": 4000.0,
                        "stimulus_sum": 1.0,
                        "downhill_impact": 0.0,
                        "peak_force_bw": 2.5,
                        "walking_steps": 0.0,
                        "running_steps": 6800.0,
                        "long_run": False,
                        "flags": ["spike_caution"] if flagged else [],
                        "facts": {"flag_reasons": {"spike_caution": "load 2.1 × the 28-day average"}}
                        if flagged
                        else {},
                        "model_version": 1,
                    }
                )
                due = start + timedelta(minutes=50)
                prompt_rows.append(
                    {
                        "id": f"{run_id:032x}",
                        "athlete_id": athlete_id,
                        "kind": "post_run",
                        "dedupe_key": f"run:{run_id}",
                        "run_id": run_id,
                        "local_day": due.date(),
                        "routines": ["roll_out", "toe_spread"],
                        "reasons": [],
                        "facts": {},
                        "rule": "bench",
                        "created_at": due,
                        "due_at": due,
                        "done_at": None if (n % 5 == 0 and k < 6) else due + timedelta(hours=2),
                    }
                )
                run_id += 1
                if len(load_rows) >= BATCH:
                    insert_rows(conn, RunLoad, load_rows)
                    insert_rows(conn, Prompt, prompt_rows)
        insert_rows(conn, RunLoad, load_rows)
        insert_rows(conn, Prompt, prompt_rows)
        # Scores: two weeks of answers for every athlete, some high; shoe alerts for a few.
        conn.execute(
            insert(FeelScore),
            [
                {
                    "athlete_id": a,
                    "day": (NOW - timedelta(days=d)).date(),
                    "score": rng.choice([0, 1, 1, 2, 2, 3, 5]),
                    "location": None,
                    "recorded_at": NOW - timedelta(days=d),
                }
                for a in ids
                for d in range(14)
            ],
        )
        conn.execute(
            insert(Prompt),
            [
                {
                    "id": f"shoe{a:028x}",
                    "athlete_id": a,
                    "kind": "shoe",
                    "dedupe_key": f"shoe:{shoes[a]}:700",
                    "local_day": NOW.date(),
                    "routines": [],
                    "reasons": [],
                    "facts": {"shoe": {"due": "712 km of the 700 km set"}},
                    "rule": "bench",
                    "created_at": NOW,
                    "due_at": NOW,
                }
                for a in ids[::9]
            ],
        )
    took["loads_prompts_scores"] = time.perf_counter() - started
    if rt.db.engine.dialect.name == "sqlite":
        with rt.db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    else:
        with rt.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    return took


def _stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in samples)
    return {
        "median_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))], 1),
        "max_ms": round(ms[-1], 1),
    }


def measure(rt: Runtime, repeat: int) -> dict[str, Any]:
    from webclient import admin  # type: ignore[import-not-found]

    from recommender.roster import roster
    from stridecare_app.web.app import create_app

    roster_times: list[float] = []
    for _ in range(repeat + 2):
        started = time.perf_counter()
        with rt.db.read() as session:
            rows = roster(session, NOW)
        roster_times.append(time.perf_counter() - started)
    client = admin(create_app(rt), rt)
    page_times: list[float] = []
    for _ in range(repeat + 2):
        started = time.perf_counter()
        answer = client.get("/")
        page_times.append(time.perf_counter() - started)
        assert answer.status_code == 200 and 'id="roster"' in answer.text, answer.text[:300]
    group_times: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get("/?group=club")
        group_times.append(time.perf_counter() - started)
    needing = sum(1 for r in rows if r["reasons"])
    return {
        "athletes_listed": len(rows),
        "needing_attention": needing,
        "first": {"name": rows[0]["name"], "reasons": [r["kind"] for r in rows[0]["reasons"]]},
        "roster_query": _stats(roster_times[2:]),
        "home_page": _stats(page_times[2:]),
        "home_page_one_group": _stats(group_times),
        "page_bytes": len(answer.content),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--athletes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--pg", help="a PostgreSQL URL to run on (its tables are dropped and recreated)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dir", help="where to make the scratch database (default: the system temp folder)")
    parser.add_argument("--reuse", help="a data home to keep the seeded SQLite database in and reuse when it exists")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-roster-", dir=args.dir) as tmp:
        home = Path(args.reuse) if args.reuse else Path(tmp) / "home"
        reused = bool(args.reuse) and (home / "stridecare.db").exists()
        if args.pg:
            from stridecare.db.engine import Database

            db = Database(args.pg)
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            db.dispose()
        rt = Runtime.open(settings_for(home, args.pg))
        try:
            result: dict[str, Any] = {
                "database": rt.db.engine.dialect.name,
                "athletes": args.athletes,
                "runs_per_athlete": args.runs,
                "seed_s": {} if reused else {k: round(v, 1) for k, v in seed(rt, args.athletes, args.runs).items()},
            }
            result.update(measure(rt, args.repeat))
        finally:
            rt.close()
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"{result['database']}: {args.athletes} athletes × {args.runs} runs "
        f"(seeded in {sum(result['seed_s'].values()):.0f} s)\n"
        f"  roster query   median {result['roster_query']['median_ms']} ms, p95 {result['roster_query']['p95_ms']} ms\n"
        f"  home page GET  median {result['home_page']['median_ms']} ms, p95 {result['home_page']['p95_ms']} ms, "
        f"max {result['home_page']['max_ms']} ms ({result['page_bytes'] // 1024} KiB)\n"
        f"  one group      median {result['home_page_one_group']['median_ms']} ms\n"
        f"  {result['needing_attention']} of {result['athletes_listed']} need attention; first: {result['first']}"
    )


if __name__ == "__main__":
    main()
