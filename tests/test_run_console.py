"""``stridecare run`` as a person sees it: a line per file, a line per prompt (or why none), in every mode.

The runner is a real process (Celery worker, beat and watcher on the embedded SQLite queue); the test only
drops files into its inbox and reads what it prints.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import E2EClock, make_settings, set_weekly_schedule
from fitgen import write_activity, write_bad_crc
from harness import Proc, processes, settings_env, stridecare, wait_for

pytestmark = pytest.mark.slow


def _drop_three(inbox: Path, now: datetime) -> None:
    """A fresh run, a run from three weeks ago and a ride, written aside and moved in whole."""
    staging = inbox.parent / "staging"
    staging.mkdir(exist_ok=True)
    write_activity(staging / "fresh.fit", start=now - timedelta(hours=2), duration_s=1800)
    write_activity(staging / "old.fit", start=now - timedelta(days=21), duration_s=3600, speed_mps=2.8)
    write_activity(staging / "ride.fit", start=now - timedelta(hours=5), sport="cycling", cadence_rpm=80.0)
    for name in ("fresh.fit", "old.fit", "ride.fit"):
        (staging / name).rename(inbox / name)


def _start(tmp_path: Path, clock: E2EClock, *args: str) -> tuple[Proc, Path]:
    # A damaged file is re-read until it has held still this long (its writer may not be done).
    settings = make_settings(tmp_path, hold_still_seconds=1.0, **clock.overrides(tmp_path))
    # The prompts these tests expect are the runs' own: no weekly prompt falls due while they run.
    set_weekly_schedule(settings, "me")
    inbox = settings.inbox_map()[0][1]
    inbox.mkdir(parents=True)
    return stridecare("run", ["run", "--no-web", *args], settings_env(settings), tmp_path / "logs"), inbox


def test_run_prints_a_line_per_file_and_the_prompt_or_why_none(tmp_path: Path, e2e_clock: E2EClock) -> None:
    proc, inbox = _start(tmp_path, e2e_clock)
    with processes(proc):
        wait_for(lambda: "inbox for me" in proc.output(), timeout=60, what="the banner")
        _drop_three(inbox, e2e_clock.now())
        write_bad_crc(inbox / "fresh.fit", inbox.parent / "staging" / "broken.fit")
        (inbox.parent / "staging" / "broken.fit").rename(inbox / "broken.fit")
        out = wait_for(
            lambda: (o := proc.output()).count("me: ") >= 6 and "broken.fit rejected" in o and "sent prompt" in o and o,
            timeout=150,
            what="four file lines, two prompt lines and the delivery",
        )
    fresh = re.search(r"me: fresh\.fit ingested: run (\d+), running, 5\.4 km, load [\d,]+ ref\. steps", out)
    assert fresh, out
    fresh_run = fresh.group(1)
    prompt = re.search(rf"me: prompt (\w+) for run {fresh_run} \((toe spread[^)]*)\) → console", out)
    assert prompt, out
    assert re.search(rf"sent prompt {prompt.group(1)} to me by console", out)
    old = re.search(r"me: old\.fit ingested: run (\d+), running, 10\.1 km, load [\d,]+ ref\. steps", out)
    assert old, out
    assert re.search(
        rf"me: no prompt for run {old.group(1)}: outside the 24 h freshness window: it ended 21 days before", out
    ), out
    assert re.search(r"me: ride\.fit skipped: not a foot sport \(cycling\)", out), out
    # A damaged file is a warning: it shows in every mode, with its reason.
    assert re.search(r"\d\d:\d\d:\d\d WARNING me: broken\.fit rejected: \S+", out), out
    # Celery's per-task chatter is not a person's business; the banner is ours, not the worker's.
    assert "Task stridecare.tick" not in out
    assert "[tasks]" not in out


def test_run_json_prints_one_object_per_event_and_quiet_prints_none(tmp_path: Path, e2e_clock: E2EClock) -> None:
    proc, inbox = _start(tmp_path / "json", e2e_clock, "--json")
    quiet, quiet_inbox = _start(tmp_path / "quiet", e2e_clock, "--quiet")
    with processes(proc, quiet):
        wait_for(lambda: "inbox for me" in proc.output() and "inbox for me" in quiet.output(), timeout=60)
        _drop_three(inbox, e2e_clock.now())
        _drop_three(quiet_inbox, e2e_clock.now())
        out = wait_for(
            lambda: (o := proc.output()).count('"event": "file"') >= 3 and '"event": "delivered"' in o and o,
            timeout=150,
            what="three file events and the delivery",
        )
        wait_for(lambda: len(list((tmp_path / "quiet" / "home").glob("prompts.log"))) == 1, timeout=60)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    files: dict[str, dict[str, Any]] = {}
    for e in events:  # each file's first line: a redelivered hand-off may add a "duplicate" line after it
        if e.get("event") == "file":
            files.setdefault(Path(e["path"]).name, e)
    assert files["fresh.fit"]["status"] == "ingested"
    assert files["fresh.fit"]["runs"][0]["distance_m"] == pytest.approx(5400, rel=0.01)
    assert files["ride.fit"]["status"] == "skipped"
    assert "foot sport" in files["ride.fit"]["reason"]
    no_prompt = [e for e in events if e.get("event") == "no_prompt"]
    assert len(no_prompt) == 1
    assert "freshness window" in no_prompt[0]["reason"]
    prompts = [e for e in events if e.get("event") == "prompt"]
    assert len(prompts) == 1
    assert prompts[0]["channels"] == ["console"]
    assert "toe_spread" in prompts[0]["routines"]
    # --quiet: the same work done, and not one line about it (no warnings happened).
    assert "ingested" not in quiet.output()
    assert "no prompt" not in quiet.output()
