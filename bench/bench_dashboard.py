"""The pages a runner opens often, at a short and a long history: does a page cost more as history grows?

Run from the repository root::

    .venv/bin/python bench/bench_dashboard.py [--small 500] [--large 4000] [--repeat 30] [--json]

Two fresh SQLite databases are seeded with bulk inserts (not through the pipeline, which would take minutes):
one athlete with ``--small`` and one with ``--large`` days of history, a run a day with its load and daily rows,
prompts, flags, shoes, scores and the newest run's samples (``tests/history_seed.py``). Then, after a warm-up,
requests to both databases are interleaved in one loop (the same moment's load on the machine falls on both),
through the web app as a reader with the secret link gets them: the default dashboard (6 weeks), ``range=6m``,
the newest run's page, and the admin's home page (roster and cards). Printed: each page's median and p95 per
database, the ratio large/small of the medians, and the load average (1 min) beside each figure; then
``range=all`` at the large history alone. The goals: the default page at the large history within 1.2× of the
small one, ``range=all`` at 4,000 runs under 300 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from history_seed import seed_history  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from webclient import admin  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

from stridecare.clock import write_clock_file  # noqa: E402
from stridecare.runtime import Runtime  # noqa: E402
from stridecare.settings import Settings  # noqa: E402
from stridecare_app.web.app import create_app  # noqa: E402

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TOKEN = "t" * 32


def settings_for(home: Path) -> Settings:
    """A scratch installation in ``home`` (SQLite) whose clock stands at the bench's "now"."""
    home.mkdir(parents=True)
    write_clock_file(home / "clock.txt", NOW)
    return Settings(
        data_home=home,
        clock_file=home / "clock.txt",
        encryption_keys=["6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="],
        secret_key="bench-signing-key",
    )


def seed(rt: Runtime, runs: int) -> int:
    """One athlete named ``runner`` with ``runs`` days of history (``tests/history_seed.py``); the newest run's id."""
    return int(seed_history(rt.db.engine, "runner", runs, NOW, TOKEN)[1])


def _stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in samples)
    return {
        "median_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))], 1),
    }


def _client(rt: Runtime) -> TestClient:
    client: TestClient = admin(create_app(rt), rt)
    return client


def measure(rts: dict[str, Runtime], newest: dict[str, int], repeat: int) -> dict[str, Any]:
    """Interleaved timings of each page on every database (``newest``: the id of the run whose page is read),
    the load average beside each page's figures."""
    clients = {key: _client(rt) for key, rt in rts.items()}
    # Each page's address; ``{run}``: the newest run of the database asked.
    pages = {
        "dashboard (6 weeks, default)": f"/dashboard/runner?t={TOKEN}",
        "dashboard range=6m": f"/dashboard/runner?t={TOKEN}&range=6m",
        "run page (newest run)": f"/dashboard/runner/runs/{{run}}?t={TOKEN}",
        "home (admin)": "/",
    }
    times: dict[str, dict[str, list[float]]] = {page: {key: [] for key in rts} for page in pages}
    loads: dict[str, list[float]] = {page: [] for page in pages}
    sizes: dict[str, dict[str, int]] = {page: {} for page in pages}
    for i in range(repeat + 3):
        for page, path in pages.items():
            # Each round asks the databases in turn, the other one first every second round: whatever the
            # first request of a pair pays (a collection, a cache the other filled) falls on both alike.
            for key, client in list(clients.items())[:: 1 if i % 2 else -1]:
                started = time.perf_counter()
                answer = client.get(path.format(run=newest[key]))
                took = time.perf_counter() - started
                assert answer.status_code == 200, (page, key, answer.text[:300])
                sizes[page][key] = len(answer.content)
                if i >= 3:  # the first rounds warm caches and templates
                    times[page][key].append(took)
            loads[page].append(os.getloadavg()[0])
    small, large = list(rts)
    out: dict[str, Any] = {}
    for page in pages:
        a, b = _stats(times[page][small]), _stats(times[page][large])
        out[page] = {
            small: a,
            large: b,
            "ratio": round(b["median_ms"] / a["median_ms"], 2),
            "bytes": sizes[page],
            "load_avg_1m": round(statistics.median(loads[page]), 2),
        }
    all_times: list[float] = []
    all_loads: list[float] = []
    for i in range(repeat + 2):
        started = time.perf_counter()
        answer = clients[large].get(f"/dashboard/runner?t={TOKEN}&range=all")
        took = time.perf_counter() - started
        assert answer.status_code == 200, answer.text[:300]
        if i >= 2:
            all_times.append(took)
        all_loads.append(os.getloadavg()[0])
    out[f"dashboard range=all at {large}"] = {
        **_stats(all_times),
        "bytes": len(answer.content),
        "load_avg_1m": round(statistics.median(all_loads), 2),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        runs = {str(args.small): args.small, str(args.large): args.large}
        rts: dict[str, Runtime] = {}
        try:
            seeded_in: dict[str, float] = {}
            newest: dict[str, int] = {}
            for key, n in runs.items():
                started = time.perf_counter()
                rt = Runtime.open(settings_for(Path(tmp) / key))
                rts[key] = rt
                newest[key] = seed(rt, n)
                seeded_in[key] = round(time.perf_counter() - started, 1)
            result = {"seed_s": seeded_in, "pages": measure(rts, newest, args.repeat)}
        finally:
            for rt in rts.values():
                rt.close()
    if args.json:
        print(json.dumps(result, indent=1))
        return
    small, large = str(args.small), str(args.large)
    print(f"SQLite, one athlete, {small} and {large} runs (seeded in {result['seed_s']} s), {args.repeat} rounds")
    for page, r in result["pages"].items():
        if "ratio" in r:
            print(
                f"  {page:30s} {small}: median {r[small]['median_ms']:6.1f} ms p95 {r[small]['p95_ms']:6.1f}   "
                f"{large}: median {r[large]['median_ms']:6.1f} ms p95 {r[large]['p95_ms']:6.1f}   "
                f"ratio {r['ratio']:.2f}  (load {r['load_avg_1m']}, {r['bytes'][large] // 1024} KiB)"
            )
        else:
            print(
                f"  {page:30s} median {r['median_ms']:6.1f} ms p95 {r['p95_ms']:6.1f}  "
                f"(load {r['load_avg_1m']}, {r['bytes'] // 1024} KiB)"
            )


if __name__ == "__main__":
    main()
