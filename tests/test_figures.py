"""One name and one unit per number: every surface shows the same figure under the same shared name.

One athlete with five weeks of runs (the last week heavier, so the prompt gives its "last 7 days" reason) is
rendered on every surface on the day of the last run: ``stridecare status --json`` and its text, the dashboard
data, the post-run prompt's email text and webhook payload, the weekly digest (text and payload) and the export.
Each shared figure must be the same number, under the same key, with the same words and unit, on each.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from channel_settings import channel_settings
from conftest import make_settings
from factories import parsed_run, store_runs
from sqlalchemy import select
from typer.testing import CliRunner

from recommender.dashboard_data import dashboard_data
from recommender.data_rights import export_athlete
from recommender.digest import digest_facts, render_digest
from recommender.figures import (
    PER_DAY,
    UNITS,
    figure_text,
    figure_value,
    figure_values,
    number_text,
    with_unit,
)
from recommender.messages import build_message
from stridecare.clock import write_clock_file
from stridecare.db.athletes import get_athlete
from stridecare.db.models import Delivery, Prompt
from stridecare.runtime import Runtime

FIRST = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # a Monday
LAST_DAY = date(2026, 4, 5)  # a Sunday: the digest sent on Monday 6 April covers the week ending today
NOW = datetime(2026, 4, 5, 8, 30, tzinfo=UTC)  # half an hour after the last run: its prompt is fresh


def test_names_units_and_rounding() -> None:
    assert figure_text("acute_load", 1310.4) == "acute load 1,310 ref. steps/day"
    assert figure_text("chronic_load", 1000.0) == "chronic load 1,000 ref. steps/day"
    assert figure_text("load_last_7_days", 9170.2) == "last 7 days: 9,170 ref. steps"
    assert figure_text("acwr", 1.0749) == "acute:chronic ratio 1.07×"
    assert with_unit("load_last_28_days", 31000) == "31,000 ref. steps"
    assert number_text("acute_load", None) == "–"
    assert figure_values(acute_load=1310.6, acwr=None) == {"acute_load": 1311, "acwr": None}
    assert figure_value("acwr", 1.23456) == 1.23
    assert UNITS["acute_load"] == UNITS["chronic_load"] == PER_DAY
    assert all("ref. steps" in unit for key, unit in UNITS.items() if key != "acwr")


@pytest.fixture
def history_rt(tmp_path: Path) -> Runtime:
    clock = tmp_path / "clock"
    write_clock_file(clock, NOW)
    settings = make_settings(tmp_path, clock_file=clock)
    rt = Runtime.open(settings)
    runs = []
    # Four easy weeks (Mon, Wed, Fri, 30 min) and a heavier fifth (five runs of 60 min, the last this morning).
    for week in range(4):
        for weekday in (0, 2, 4):
            runs.append(parsed_run(FIRST + timedelta(days=7 * week + weekday), minutes=30.0))
    for weekday in (0, 1, 3, 5, 6):
        runs.append(parsed_run(FIRST + timedelta(days=28 + weekday), minutes=60.0))
    assert runs[-1].start_time.date() == LAST_DAY
    # History first (old runs, no prompts), then the last run as it arrives live.
    store_runs(rt.db, rt.settings, "anna", runs[:-1], NOW, batch=True)
    store_runs(rt.db, rt.settings, "anna", runs[-1:], NOW)
    with rt.db.transaction() as s:
        athlete = get_athlete(s, "anna")
        athlete.channel_settings = channel_settings(email="anna@example.test")
    return rt


def _cli(rt: Runtime, *args: str) -> str:
    from stridecare_app.cli.main import app

    env = {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
        "STRIDECARE_CLOCK_FILE": str(rt.settings.clock_file),
    }
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def _messages(rt: Runtime) -> tuple[str, dict[str, Any]]:
    """The last run's prompt as the email text and as the webhook payload."""
    with rt.db.read() as s:
        athlete = get_athlete(s, "anna")
        prompt = s.scalars(select(Prompt).where(Prompt.kind == "post_run").order_by(Prompt.created_at.desc())).first()
        assert prompt is not None and prompt.local_day == LAST_DAY
        email = build_message(
            rt, s, Delivery(id=1, prompt_id=prompt.id, channel="email", message_id="m1"), prompt, athlete
        )
        hook = build_message(
            rt, s, Delivery(id=2, prompt_id=prompt.id, channel="webhook", message_id="m2"), prompt, athlete
        )
        return email.text, dict(hook.payload)


def test_every_surface_shows_the_same_figure_under_the_same_name(history_rt: Runtime, tmp_path: Path) -> None:
    rt = history_rt
    status = json.loads(_cli(rt, "status", "--athlete", "anna", "--json"))
    status_text = _cli(rt, "status", "--athlete", "anna")
    week = status["load_last_7_days"]
    acute, chronic = status["acute_load"], status["chronic_load"]
    assert week > 0 and acute > 0 and chronic > 0
    assert status["units"]["acute_load"] == "ref. steps/day" and status["units"]["load_last_7_days"] == "ref. steps"
    assert len(status["flag_details"]) == len(status["flags"])  # each flag once, however many runs raised it

    with rt.db.read() as s:
        athlete = get_athlete(s, "anna")
        dash = dashboard_data(s, rt.settings, athlete, NOW, range_key=None)
        facts = digest_facts(s, rt.settings, athlete, LAST_DAY + timedelta(days=1))
        export = export_athlete(s, athlete, tmp_path / "export")
    digest = render_digest(
        prompt_id="p1",
        athlete_name="anna",
        facts=json.loads(json.dumps(facts, default=str)),  # as stored in the prompt's JSON facts
        unsubscribe_url=None,
        dashboard_url=None,
        created_at=NOW,
    )
    email_text, webhook = _messages(rt)

    # The rolling 7-day sum: one number, one name, on every surface.
    assert dash["figures"]["load_last_7_days"] == week
    assert digest.payload["data"]["figures"]["load_last_7_days"] == week
    assert webhook["data"]["figures"]["load_last_7_days"] == week
    said = figure_text("load_last_7_days", week)  # "last 7 days: 9,170 ref. steps"
    assert said in status_text
    assert said in email_text  # the toe-spread emphasis reason
    assert f"Last 7 days: {number_text('load_last_7_days', week)} ref. steps\n" in digest.text

    # Acute and chronic load: per day, the same on the command line, the dashboard and the digest.
    assert (dash["figures"]["acute_load"], dash["figures"]["chronic_load"]) == (acute, chronic)
    assert (facts["figures"]["acute_load"], facts["figures"]["chronic_load"]) == (acute, chronic)
    assert figure_text("acute_load", acute) in status_text
    assert figure_text("chronic_load", chronic) in status_text
    assert f"Acute load at week's end: {number_text('acute_load', acute)} ref. steps/day" in digest.text
    assert f"Chronic load at week's end: {number_text('chronic_load', chronic)} ref. steps/day" in digest.text

    # The export carries the same figures for the same day, with the units beside them.
    daily = json.loads((tmp_path / "export" / "daily_figures.json").read_text())
    assert daily[-1]["day"] == LAST_DAY.isoformat()
    assert {k: daily[-1][k] for k in ("acute_load", "chronic_load", "load_last_7_days")} == {
        "acute_load": acute,
        "chronic_load": chronic,
        "load_last_7_days": week,
    }
    # The ACWR too, as the command line shows it, and empty before 28 days of history (as every screen has it).
    assert status["acwr"] is not None and daily[-1]["acwr"] == status["acwr"]
    assert daily[0]["acwr"] is None and daily[26]["acwr"] is None
    units = json.loads((tmp_path / "export" / "units.json").read_text())
    assert units["acute_load"] == "ref. steps/day" and units["load"] == "ref. steps" and units["acwr"] == "×"
    assert any(p.name == "units.json" for p in export)

    # No surface names a rolling sum as an average, or leaves a load without its unit.
    for text in (status_text, email_text, digest.text):
        assert "28-day weekly average" not in text and "acute load (7-day)" not in text
        assert "foot load " not in text.lower().replace("foot load in", "")
