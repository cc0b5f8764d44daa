"""Every top-level command: its name, the module that defines it, its one-line help and its section of
``stridecare --help``.

The list is what lets the command line start at once: ``--help`` and shell completion read it, and a command's
module (with SQLAlchemy, Celery and the rest of what it needs) is imported only when that command runs.
``tests/test_cli_lazy.py`` checks it against the commands the modules really define, help text included.
"""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    """One top-level command as ``--help`` lists it."""

    module: str
    help: str
    section: str


START = "Start here"
RUNS = "Runs and files"
SOURCES = "Sources: Strava and connected accounts"
CARE = "Prompts, feet and shoes"
DATA = "Your data"
OPERATE = "Operating"

COMMANDS: dict[str, Entry] = {
    "run": Entry("operate", "Run everything in one process: watcher, worker, scheduler and web app.", START),
    "athlete": Entry("athletes", "Add athletes and set how and when they receive prompts.", START),
    "status": Entry(
        "status_cmd",
        "Acute and chronic foot load, ACWR (after 28 days, as information), flags, recent runs, pending prompts.",
        START,
    ),
    "ingest": Entry("ingest_cmds", "Read files now, in this process, and store their runs.", RUNS),
    "import": Entry("ingest_cmds", "Import a whole archive in parallel, with a progress bar and a summary.", RUNS),
    "watch": Entry("ingest_cmds", "Watch folders and ingest every complete FIT file that lands in them.", RUNS),
    "runs": Entry("runs_cmd", "List stored runs, newest first, with distance, steps, cadence source and load.", RUNS),
    "retry": Entry("ingest_cmds", "Read again files that were rejected, quarantined or left to a later try.", RUNS),
    "recompute": Entry(
        "ingest_cmds",
        "Rebuild an athlete's runs from their sources after an upgrade or a change of a model setting.",
        RUNS,
    ),
    "strava": Entry("strava_cmds", "Connect Strava, receive its push events and import your history.", SOURCES),
    "intervals": Entry(
        "connector_cmds",
        "Pull runs from intervals.icu (it already receives them from Garmin, Coros, Polar, Suunto, Wahoo, Zwift).",
        SOURCES,
    ),
    "garmin": Entry(
        "connector_cmds",
        "Pull runs from Garmin Connect (unofficial; needs pip install 'stridecare[garmin]').",
        SOURCES,
    ),
    "sources": Entry(
        "connector_cmds",
        "Where each athlete's runs come from: watched folders, and accounts with their state (connected, last and "
        "next pull, cooldown, last error in plain words, activities seen / stored / skipped / waiting).",
        SOURCES,
    ),
    "sync": Entry(
        "connector_cmds",
        "Pull now from every connected account (not waiting for the schedule) and store the new runs, with their "
        "load and prompts.",
        SOURCES,
    ),
    "prompts": Entry(
        "prompts_cmds",
        "List prompts with their reasons, the rule that produced them and each delivery's state, then the recent "
        "runs that got no prompt and why (outside the freshness window, not the day's first run, …).",
        CARE,
    ),
    "done": Entry(
        "prompts_cmds",
        'Record a prompt\'s routines as done (the same as its "done" link); balance progresses with these.',
        CARE,
    ),
    "feel": Entry(
        "feel_cmds",
        "Say how your feet feel after a run: 0 (no discomfort) to 10 (the worst), and where if you like.",
        CARE,
    ),
    "shoe": Entry(
        "shoe_cmds",
        "Track shoes: distance, steps and foot load per pair, and one alert when a pair reaches its retirement "
        "distance or foot load.",
        CARE,
    ),
    "digest": Entry(
        "digest_cmds",
        "Render the weekly digest ATHLETE would get now (the last scheduled week) into one HTML file to open in a "
        "browser: the chart is inlined, the links are the real ones.",
        CARE,
    ),
    "export": Entry(
        "data_cmds",
        "Write the athlete's runs, loads, daily loads, prompts, completions and shoes as JSON and CSV files.",
        DATA,
    ),
    "forget": Entry(
        "data_cmds",
        "Delete everything stored about the athlete: runs, loads, prompts, deliveries, shoes, Strava link.",
        DATA,
    ),
    "config": Entry(
        "config_cmds",
        "The settings file in the data home (DATA_HOME/stridecare.toml): `stridecare run`, every other command and "
        "the compose services read it, so a setting made here holds in every terminal.",
        OPERATE,
    ),
    "settings": Entry(
        "operate", "Show every setting with its environment variable and current value (secrets hidden).", OPERATE
    ),
    "health": Entry(
        "health_cmd",
        "Check the database (reachable, schema at head), the broker, the inboxes, the data home, SMTP and keys.",
        OPERATE,
    ),
    "migrate": Entry(
        "operate",
        "Create or upgrade the database schema (the distributed deployment runs this once before the rest).",
        OPERATE,
    ),
    "web": Entry(
        "operate",
        "Serve the web app: done links, unsubscribe, Strava connect and webhooks, health and metrics.",
        OPERATE,
    ),
    "admin": Entry(
        "admin_cmds",
        "The admin's login to the web pages: a one-time link, an optional password, ending every session.",
        OPERATE,
    ),
}
