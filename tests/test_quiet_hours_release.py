"""Held prompts follow the athlete's quiet hours and time zone as they are now, not as they were when the prompt
was made: `stridecare athlete set --quiet ''` releases a held prompt at once (it used to stay held until the
old window's end), a longer window holds it longer, and a new time zone re-reads the window in it.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_settings, set_weekly_schedule
from fitgen import write_activity
from harness import BIN, processes, settings_env, stridecare, wait_for
from sqlalchemy import select

from recommender.schedule import reschedule_held
from stridecare.db.athletes import ensure_athlete
from stridecare.db.models import Delivery, Prompt
from stridecare.runtime import Runtime

NOW = datetime(2026, 6, 3, 23, 30, tzinfo=UTC)  # 01:30 in Berlin (CEST), 08:30 in Tokyo


def _held(rt: Runtime, quiet: tuple[str, str], tz: str = "UTC") -> str:
    """An athlete with quiet hours ``quiet`` in ``tz`` and a prompt made at NOW, held by them, with a console
    delivery never tried and a webhook delivery waiting out a retry delay."""
    with rt.db.transaction() as session:
        athlete = ensure_athlete(session, "me", rt.settings)
        athlete.timezone = tz
        athlete.quiet_start, athlete.quiet_end = quiet
        from recommender.rules import defer_for_quiet_hours

        due = defer_for_quiet_hours(NOW, tz, *quiet)
        assert due > NOW
        prompt = Prompt(
            athlete_id=athlete.id,
            kind="post_run",
            dedupe_key="run-1",
            local_day=NOW.date(),
            routines=["toe_spread"],
            created_at=NOW,
            due_at=due,
        )
        session.add(prompt)
        session.flush()
        session.add_all(
            [
                Delivery(prompt_id=prompt.id, athlete_id=athlete.id, channel="console", next_attempt_at=due),
                Delivery(
                    prompt_id=prompt.id,
                    athlete_id=athlete.id,
                    channel="webhook",
                    attempts=1,
                    next_attempt_at=due + timedelta(hours=1),
                ),
            ]
        )
        return prompt.id


def _times(rt: Runtime, prompt_id: str) -> tuple[datetime, dict[str, datetime]]:
    with rt.db.read() as session:
        prompt = session.get(Prompt, prompt_id)
        assert prompt is not None
        rows = session.scalars(select(Delivery).where(Delivery.prompt_id == prompt_id)).all()
        return prompt.due_at, {d.channel: d.next_attempt_at for d in rows}


def _change(rt: Runtime, now: datetime, **values: object) -> tuple[list[str], list[tuple[str, datetime]]]:
    with rt.db.transaction() as session:
        athlete = ensure_athlete(session, "me", rt.settings)
        for key, value in values.items():
            setattr(athlete, key, value)
        done = reschedule_held(session, athlete, now)
        return done.released, done.moved


def test_removed_quiet_hours_release_a_held_prompt_and_leave_a_retry_alone(rt: Runtime) -> None:
    prompt_id = _held(rt, ("22:00", "07:00"))
    _due, before = _times(rt, prompt_id)
    later = NOW + timedelta(minutes=20)
    released, moved = _change(rt, later, quiet_start=None, quiet_end=None)
    assert (released, moved) == ([prompt_id], [])
    due, after = _times(rt, prompt_id)
    assert due == later and after["console"] == later
    assert after["webhook"] == before["webhook"]  # a retry keeps its backoff


def test_shorter_longer_and_unrelated_changes(rt: Runtime) -> None:
    prompt_id = _held(rt, ("22:00", "07:00"))
    # Longer: held to 09:00 now.
    released, moved = _change(rt, NOW, quiet_end="09:00")
    assert released == [] and moved == [(prompt_id, datetime(2026, 6, 4, 9, 0, tzinfo=UTC))]
    # Shorter, ending before now: out at once.
    later = NOW + timedelta(hours=2)  # 01:30
    released, moved = _change(rt, later, quiet_start="22:00", quiet_end="01:00")
    assert released == [prompt_id] and moved == []
    # Nothing held any more: a further change touches nothing.
    assert _change(rt, later, quiet_start="00:00", quiet_end="08:00") == ([], [])


def test_a_new_time_zone_reads_the_window_in_it(rt: Runtime) -> None:
    prompt_id = _held(rt, ("22:00", "07:00"), tz="UTC")  # 23:30 UTC: held to 07:00 UTC
    # In Tokyo NOW is 08:30: outside the window, so out at once.
    released, _moved = _change(rt, NOW, timezone="Asia/Tokyo")
    assert released == [prompt_id]
    prompt_id2 = _held_again(rt)
    # In Los Angeles NOW is 16:30: outside too; in Berlin 01:30: held to 07:00 CEST = 05:00 UTC.
    released, moved = _change(rt, NOW, timezone="Europe/Berlin")
    assert released == [] and moved == [(prompt_id2, datetime(2026, 6, 4, 5, 0, tzinfo=UTC))]


def _held_again(rt: Runtime) -> str:
    """A second held prompt for the same athlete (quiet 22:00–07:00 UTC), made at NOW."""
    with rt.db.transaction() as session:
        athlete = ensure_athlete(session, "me", rt.settings)
        athlete.timezone = "UTC"
        due = datetime(2026, 6, 4, 7, 0, tzinfo=UTC)
        prompt = Prompt(
            athlete_id=athlete.id,
            kind="post_run",
            dedupe_key="run-2",
            local_day=NOW.date(),
            routines=["toe_spread"],
            created_at=NOW,
            due_at=due,
        )
        session.add(prompt)
        session.flush()
        session.add(Delivery(prompt_id=prompt.id, athlete_id=athlete.id, channel="console", next_attempt_at=due))
        return prompt.id


@pytest.mark.slow
def test_stridecare_run_sends_a_held_prompt_as_soon_as_quiet_hours_are_removed(tmp_path: Path) -> None:
    """End to end: a real runner holds a fresh run's prompt for quiet hours around now; `athlete set --quiet ''`
    in another process, and the runner sends it within a relay interval (not hours later)."""
    now = datetime.now(UTC)
    settings = make_settings(tmp_path)
    set_weekly_schedule(settings, "me")
    env = settings_env(settings)
    start = (now - timedelta(hours=1)).strftime("%H:%M")
    end = (now + timedelta(hours=3)).strftime("%H:%M")

    def cli(*args: str) -> str:
        done = subprocess.run([str(BIN / "stridecare"), *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    cli("athlete", "set", "me", "--timezone", "UTC", "--quiet", f"{start}-{end}")
    inbox = settings.inbox_map()[0][1]
    inbox.mkdir(parents=True, exist_ok=True)
    proc = stridecare("run", ["run", "--no-web"], env, tmp_path / "logs")
    with processes(proc):
        wait_for(lambda: "inbox for me" in proc.output(), timeout=60, what="the banner")
        staging = tmp_path / "staging"
        staging.mkdir()
        write_activity(staging / "fresh.fit", start=now - timedelta(hours=1), duration_s=1800)
        (staging / "fresh.fit").rename(inbox / "fresh.fit")
        line = wait_for(
            lambda: re.search(r"prompt (\w+) for run \d+ .*held for quiet hours until", proc.output()),
            timeout=90,
            what="the held prompt",
        )
        assert line is not None
        prompt_id = line.group(1)
        held = json.loads(cli("prompts", "--athlete", "me", "--json"))
        assert f"sent prompt {prompt_id}" not in proc.output(), held
        out = cli("athlete", "set", "me", "--quiet", "")
        assert f"held prompt {prompt_id} released" in out
        released_at = datetime.now(UTC)
        wait_for(
            lambda: f"sent prompt {prompt_id} to me by console" in proc.output(),
            timeout=30,
            what="the released prompt's delivery",
        )
        took = (datetime.now(UTC) - released_at).total_seconds()
    assert took < 30  # within a few relay passes, where the old window still had hours to run
