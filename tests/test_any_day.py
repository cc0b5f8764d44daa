"""The suite's own calendar: the clocks `pytest --clock` puts end-to-end tests on, and the weekly schedule tests
that count prompts set, are what they claim to be."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import CLOCKS, E2EClock, make_settings, parse_clock, set_weekly_schedule
from sqlalchemy import select

from recommender import rules
from stridecare.db.models import Athlete
from stridecare.runtime import Runtime


def test_the_sunday_evening_clock_is_after_the_default_weekly_balance_fell_due() -> None:
    at, zone = CLOCKS["sunday-evening"]
    assert (at.weekday(), at.hour, at.minute, zone) == (6, 18, 30, "UTC")
    # An athlete on the defaults (Sunday 18:00) is owed this week's balance prompt at that moment.
    assert rules.weekly_balance_due(at, zone, 6, "18:00", None) is not None
    # The schedule the counting tests set is not due then.
    assert rules.weekly_balance_due(at, zone, 6, "23:59", None) is None


def test_the_dst_night_clock_is_in_the_hour_berlin_lives_twice() -> None:
    at, zone = CLOCKS["dst-night"]
    local = at.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute, local.fold) == (2, 30, 1), "02:30 for the second time"
    an_hour_earlier = (at - timedelta(hours=1)).astimezone(ZoneInfo(zone))
    assert (an_hour_earlier.hour, an_hour_earlier.minute, an_hour_earlier.fold) == (2, 30, 0)
    assert local.utcoffset() != an_hour_earlier.utcoffset()
    assert rules.weekly_balance_due(at, zone, 6, "23:59", None) is None


def test_clock_option_values() -> None:
    now = datetime(2026, 12, 9, 12, 0, tzinfo=UTC)  # a Wednesday
    assert parse_clock(None, now) == parse_clock("system", now) == E2EClock(None)
    assert parse_clock("dst-night", now) == E2EClock(*CLOCKS["dst-night"])
    tokyo = parse_clock("2026-12-06T18:30:00+09:00@Asia/Tokyo", now)
    assert tokyo == E2EClock(datetime(2026, 12, 6, 9, 30, tzinfo=UTC), "Asia/Tokyo")
    with pytest.raises(pytest.UsageError, match="offset"):
        parse_clock("2026-12-06T18:30:00", now)
    # The system clock in the week's last minutes: frozen before them, so that no schedule set to the week's
    # last minute falls due while a test's processes run.
    late = datetime(2026, 12, 13, 23, 50, tzinfo=UTC)
    frozen = parse_clock(None, late)
    assert frozen.at is not None and frozen.at < late and frozen.at.weekday() == 6
    assert rules.weekly_balance_due(frozen.now(), "UTC", 6, "23:59", None) is None


def test_a_clock_puts_a_process_on_its_instant_and_zone(tmp_path: Path) -> None:
    clock = E2EClock(*CLOCKS["dst-night"])
    settings = make_settings(tmp_path, **clock.overrides(tmp_path / "clock"))
    assert settings.default_timezone == "Europe/Berlin"
    rt = Runtime.open(settings)
    try:
        assert rt.now() == clock.now() == CLOCKS["dst-night"][0]
    finally:
        rt.close()
    assert E2EClock(None).overrides(tmp_path / "none") == {}


def test_set_weekly_schedule_creates_the_athlete_as_its_inbox_would(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, default_timezone="Asia/Tokyo")
    set_weekly_schedule(settings, "me")
    rt = Runtime.open(settings)
    try:
        with rt.db.read() as s:
            me = s.scalars(select(Athlete)).one()
            assert (me.name, me.timezone) == ("me", "Asia/Tokyo")
            assert (me.balance_weekday, me.balance_time, me.digest_weekday, me.digest_time) == (6, "23:59", 6, "23:59")
    finally:
        rt.close()
