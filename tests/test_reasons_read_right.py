"""Reasons a runner reads right: a count names what it counts (isolation sessions, not runs), and a week's load
is compared with the weeks before the run, never with an average that holds the run itself; with nothing
before to compare with, the reason says so instead of giving a ratio."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from factories import parsed_run, store_runs
from sqlalchemy import select

from recommender.rules import HistoryFacts, RunFacts, post_run_decision
from stridecare.db.models import Prompt, Run
from stridecare.domain.long_run import classify_long_run
from stridecare.runtime import Runtime

TZ = "Europe/Berlin"
RATIO = re.compile(r"\d\.\d\d×")  # "1.30×" (doses say "3 × 30 s": not a ratio)
# Wednesday 4 June 2025, 07:00 local
START = datetime(2025, 6, 4, 5, tzinfo=UTC)


def easy_run(load: float = 7_000.0) -> RunFacts:
    return RunFacts(
        start_time=START,
        end_time=START + timedelta(minutes=47),
        timer_s=2_700,
        distance_m=8_000,
        load=load,
        long_run=classify_long_run(2_700, 8_000, START, []),
    )


def test_toe_isolation_counts_isolation_sessions_and_says_so() -> None:
    monday = date(2025, 6, 2)
    d = post_run_decision(easy_run(), HistoryFacts(toe_isolation_days=[monday]), tz=TZ)
    assert "toe_isolation" in d.routines
    reason = next(r for r in d.reasons if "isolation" in r)
    assert "isolation session 2 of up to 3 this week" in reason
    # The run is not the thing counted: no bare "session N" next to the run's distance.
    assert "(8.0 km), session" not in reason


def test_first_run_after_a_break_says_there_is_nothing_to_compare_with() -> None:
    # The old rule: the 28-day sum held only this run, so the last 7 days were "4.00×" its weekly average.
    alone = HistoryFacts(load_7d=7_000.0, load_28d=7_000.0, load_28d_before=0.0, history_days=400)
    d = post_run_decision(easy_run(), alone, tz=TZ)
    text = " ".join(d.reasons)
    assert not RATIO.search(text), text
    assert "back after four weeks or more without a run: no recent weeks to compare this week's load with" in text
    assert d.emphasis == ["toe_spread"]
    assert d.facts["load_7d_ratio"] is None
    assert "toe_spread=every_run+back_after_break" in d.rule


def test_a_week_is_compared_with_the_four_weeks_before_not_including_itself() -> None:
    # 40,000 in the four weeks before: 10,000 a week. This week 13,000 (the run included) is 1.30×; the old rule
    # divided by (28-day sum including this week's runs) / 4 and would have shown a smaller, muddled ratio.
    hist = HistoryFacts(load_7d=13_000.0, load_28d=45_000.0, load_28d_before=40_000.0, history_days=60)
    d = post_run_decision(easy_run(), hist, tz=TZ)
    assert d.emphasis == ["toe_spread"]
    assert any("1.30× your weekly average of the 4 weeks before (10,000 ref. steps/week)" in r for r in d.reasons), (
        d.reasons
    )
    steady = HistoryFacts(load_7d=10_500.0, load_28d=42_000.0, load_28d_before=40_000.0, history_days=60)
    assert post_run_decision(easy_run(), steady, tz=TZ).emphasis == []


def test_not_enough_history_or_unknown_before_gives_no_ratio_and_no_emphasis() -> None:
    short = HistoryFacts(load_7d=7_000.0, load_28d=7_000.0, load_28d_before=0.0, history_days=10)
    unknown = HistoryFacts(load_7d=7_000.0, load_28d=7_000.0, load_28d_before=None, history_days=400)
    for hist in (short, unknown):
        d = post_run_decision(easy_run(), hist, tz=TZ)
        assert d.emphasis == [] and not any(RATIO.search(r) or "back after" in r for r in d.reasons)


def _prompt_of(rt: Runtime, run_id: int) -> Prompt:
    with rt.db.read() as s:
        prompt = s.scalar(select(Prompt).where(Prompt.run_id == run_id, Prompt.kind == "post_run"))
        assert prompt is not None
        s.expunge(prompt)
        return prompt


def test_end_to_end_a_comeback_run_and_a_steady_week_read_right(rt: Runtime) -> None:
    """Eight steady weeks (Mon/Wed/Fri), five weeks off, then a run: its prompt says it is a comeback, with no
    ratio; a week later, three runs into steady running again, the comparison uses the weeks before."""
    first = datetime(2026, 8, 3, 6, 0, tzinfo=UTC)  # a Monday
    steady = [first + timedelta(weeks=w, days=d) for w in range(8) for d in (0, 2, 4)]
    store_runs(rt.db, rt.settings, "anna", [parsed_run(t) for t in steady], steady[-1] + timedelta(hours=2), batch=True)

    comeback = steady[-1] + timedelta(weeks=5, days=3)  # a Monday, 38 days after the last run
    now = comeback + timedelta(hours=1)
    [run_id] = store_runs(rt.db, rt.settings, "anna", [parsed_run(comeback, key="comeback")], now)
    prompt = _prompt_of(rt, run_id)
    text = " ".join(prompt.reasons)
    assert "back after four weeks or more without a run" in text, prompt.reasons
    assert not RATIO.search(text), text
    assert "toe_spread" in prompt.facts["emphasis"]

    # Running again: Mon (the comeback), Wed, Fri, Mon, Wed. The last run's week is compared with the four weeks
    # before its day, which hold the comeback's runs: a ratio, not a comeback note.
    again = [comeback + timedelta(days=d) for d in (2, 4, 7, 9)]
    ids = [
        store_runs(rt.db, rt.settings, "anna", [parsed_run(t, minutes=30)], t + timedelta(hours=1))[0] for t in again
    ]
    later = _prompt_of(rt, ids[-1])
    # Shorter, easy runs (the comeback was long against nothing): the count names isolation sessions.
    assert any("isolation session 1 of up to 3 this week" in r for r in _prompt_of(rt, ids[0]).reasons)
    assert not any("back after" in r for r in later.reasons)
    assert later.facts["load_7d_ratio"] is not None
    with rt.db.read() as s:
        run = s.get(Run, ids[-1])
        assert run is not None and run.load is not None
        facts = run.load.facts
    # The baseline is the 28 days before the run's day (Mon, Wed, Fri, Mon), without the run itself...
    assert facts["load_28d_before"] == pytest.approx(facts["load_28d"] - run.load.load)
    # ... and the last 7 days (Fri, Mon, Wed: this run included) are set against a quarter of them.
    assert later.facts["load_7d_ratio"] == round(facts["load_7d"] / (facts["load_28d_before"] / 4), 2)
