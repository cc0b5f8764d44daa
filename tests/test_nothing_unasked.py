"""Nothing unasked: weekly prompts begin with the athlete's first week with a run, a digest is only ever for the
week just ended and only on its day, and an athlete the inbox settings create is announced on the console."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from conftest import CLOCKS, make_settings
from factories import parsed_run, store_runs
from sqlalchemy import select
from typer.testing import CliRunner

from recommender import rules
from recommender.digest import weekly_digests
from stridecare.clock import write_clock_file
from stridecare.db.models import Athlete, Prompt
from stridecare.logging import event_of
from stridecare.runtime import Runtime
from stridecare_app.cli import main as _commands  # noqa: F401  (attaches every command to app)
from stridecare_app.cli.app import app
from stridecare_app.runner import make_watcher
from workers.periodic import Enqueue, run_periodic

SUNDAY_EVENING = CLOCKS["sunday-evening"][0]  # Sunday 6 December 2026, 18:30 UTC


def _runtime(tmp_path: Path, at: datetime, **overrides: object) -> tuple[Runtime, Path]:
    clock = tmp_path / "clock"
    write_clock_file(clock, at)
    return Runtime.open(make_settings(tmp_path, clock_file=clock, **overrides)), clock


def _kinds(rt: Runtime, name: str) -> list[str]:
    with rt.db.read() as s:
        athlete = s.scalars(select(Athlete).where(Athlete.name == name)).one()
        return sorted(s.scalars(select(Prompt.kind).where(Prompt.athlete_id == athlete.id)))


def _tick(rt: Runtime) -> None:
    run_periodic(rt, Enqueue(delivery=lambda _id: None))


def test_weekly_prompts_begin_in_the_week_of_the_first_run() -> None:
    sunday = date(2026, 12, 6)
    assert not rules.weekly_prompts_begun(sunday, None)
    assert rules.weekly_prompts_begun(sunday, sunday)  # a run today: this week counts
    assert rules.weekly_prompts_begun(sunday, date(2026, 11, 30))  # Monday of the same ISO week
    assert rules.weekly_prompts_begun(sunday, date(2025, 1, 1))
    assert not rules.weekly_prompts_begun(date(2026, 11, 29), date(2026, 11, 30))  # the Sunday before
    # ISO weeks across a year's end: Monday 28 December 2026 is in 2026-W53, Sunday 3 January 2027 too.
    assert rules.weekly_prompts_begun(date(2027, 1, 3), date(2026, 12, 28))


def test_a_new_athlete_gets_no_weekly_balance_on_a_sunday_evening_until_a_week_with_a_run(tmp_path: Path) -> None:
    rt, clock = _runtime(tmp_path, SUNDAY_EVENING)
    runner = CliRunner()
    env = {"STRIDECARE_DATA_HOME": str(rt.settings.data_home), "STRIDECARE_CLOCK_FILE": str(clock)}
    assert runner.invoke(app, ["athlete", "add", "anna"], env=env).exit_code == 0
    _tick(rt)
    _tick(rt)
    assert _kinds(rt, "anna") == [], "a minute-old athlete with no run is asked nothing"

    # A run from last month only (an imported history): the balance check begins, in the week that follows it.
    store_runs(rt.db, rt.settings, "anna", [parsed_run(SUNDAY_EVENING - timedelta(days=30))], SUNDAY_EVENING)
    _tick(rt)
    assert _kinds(rt, "anna") == ["weekly_balance"]

    # Another athlete whose first run is today gets this week's at once (it fell due at 18:00), and only once.
    store_runs(rt.db, rt.settings, "ben", [parsed_run(SUNDAY_EVENING - timedelta(hours=3))], SUNDAY_EVENING)
    _tick(rt)
    _tick(rt)
    assert _kinds(rt, "ben") == ["post_run", "weekly_balance"]


def test_a_digest_only_on_its_day_for_the_week_just_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs last week and this week; the digest is due Mondays 08:00 (the default).
    rt, clock = _runtime(tmp_path, SUNDAY_EVENING, smtp_host="127.0.0.1", smtp_port=9, smtp_security="none")
    runs = [parsed_run(SUNDAY_EVENING - timedelta(days=d, hours=3)) for d in (9, 2)]
    store_runs(rt.db, rt.settings, "anna", runs, SUNDAY_EVENING)
    monkeypatch.setenv("STRIDECARE_DATA_HOME", str(rt.settings.data_home))
    monkeypatch.setenv("STRIDECARE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("STRIDECARE_CLOCK_FILE", str(clock))
    assert CliRunner().invoke(app, ["athlete", "set", "anna", "--email", "anna@example.org"]).exit_code == 0

    # Sunday evening: Monday's digest (for the week that ended six days ago) is long past: none.
    assert weekly_digests(rt) == 0
    # Tuesday: this Monday's was missed (the beat was down all day); it is not sent a day late.
    write_clock_file(clock, datetime(2026, 12, 8, 9, 0, tzinfo=UTC))
    assert weekly_digests(rt) == 0
    # The next Monday at 08:05: the digest of the week just ended, once.
    write_clock_file(clock, datetime(2026, 12, 14, 8, 5, tzinfo=UTC))
    assert weekly_digests(rt) == 1
    assert weekly_digests(rt) == 0
    with rt.db.read() as s:
        digest = s.scalars(select(Prompt).where(Prompt.kind == "digest")).one()
    assert digest.local_day == date(2026, 12, 14)
    assert digest.facts["totals"]["first_day"] == "2026-12-07"


def test_an_athlete_the_inbox_settings_create_gets_a_console_line_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inboxes = [f"anna={tmp_path / 'anna'}", f"ben={tmp_path / 'ben'}", f"anna={tmp_path / 'anna-phone'}"]
    settings = make_settings(tmp_path, inboxes=inboxes, default_timezone="Europe/Berlin")
    rt = Runtime.open(settings)
    with rt.db.transaction() as s:
        s.add(Athlete(name="ben", timezone="UTC"))  # added with `stridecare athlete add` earlier

    def created() -> list[logging.LogRecord]:
        return [r for r in caplog.records if (event_of(r) or {}).get("event") == "athlete_created"]

    with caplog.at_level(logging.INFO, logger="stridecare.console"):
        make_watcher(rt, use_broker=False)
        lines = created()
        assert [event_of(r)["athlete"] for r in lines] == ["anna"]  # type: ignore[index]
        message = lines[0].getMessage()
        assert message.startswith("anna: new athlete")
        assert "Europe/Berlin" in message and "stridecare athlete set anna" in message
        caplog.clear()
        make_watcher(rt, use_broker=False)  # the next start: she exists, nothing to say
        assert created() == []
    with rt.db.read() as s:
        assert sorted(s.scalars(select(Athlete.name))) == ["anna", "ben"]
