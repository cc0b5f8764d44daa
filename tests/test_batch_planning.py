"""One recompute path: a batch stored in any order and replanned once, in short chunks, gives exactly the figures
of the same runs arriving one by one in time order; deletes go through the same path."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from factories import history, parsed_run, store_runs
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from ingest.runs import remove_runs
from recommender.planner import ChunkDone, replan
from stridecare.db.models import Athlete, DailyLoad, Prompt, Run, RunLoad
from stridecare.runtime import Runtime

FIRST = datetime(2025, 3, 1, 5, tzinfo=UTC)
TZ = "Europe/Berlin"


def open_rt(path: Path) -> Runtime:
    rt = Runtime.open(make_settings(path))
    with rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone=TZ))
    return rt


def snapshot(rt: Runtime) -> dict[str, Any]:
    """Every derived figure, keyed by what identifies a run across databases (its start)."""
    with rt.db.transaction() as s:
        runs = list(s.scalars(select(Run).order_by(Run.start_time)))
        by_id = {r.id: r.start_time.isoformat() for r in runs}
        return {
            "runs": [
                (
                    r.start_time.isoformat(),
                    r.load.load if r.load else None,
                    r.load.long_run if r.load else None,
                    r.load.flags if r.load else None,
                    {k: v for k, v in r.load.facts.items() if k != "inputs_key"} if r.load else None,
                )
                for r in runs
            ],
            "days": [
                (d.day.isoformat(), d.load, d.acute, d.chronic, d.distance_m, d.steps)
                for d in s.scalars(select(DailyLoad).order_by(DailyLoad.day))
            ],
            "prompts": sorted(
                (by_id.get(p.run_id or 0), p.local_day.isoformat(), p.routines, p.reasons, p.rule, p.facts["flags"])
                for p in s.scalars(select(Prompt).where(Prompt.kind == "post_run"))
            ),
        }


def test_a_shuffled_batch_of_160_runs_equals_one_by_one_in_date_order(tmp_path: Path) -> None:
    runs = history(FIRST, 160)
    now = max(r.start_time for r in runs) + timedelta(hours=3)  # the last day's runs are fresh: prompts
    one_by_one = open_rt(tmp_path / "a")
    store_runs(one_by_one.db, one_by_one.settings, "me", sorted(runs, key=lambda r: r.start_time), now)
    batch = open_rt(tmp_path / "b")
    shuffled = runs[:]
    random.Random(5).shuffle(shuffled)
    store_runs(batch.db, batch.settings, "me", shuffled, now, batch=True, chunk_runs=25)
    a, b = snapshot(one_by_one), snapshot(batch)
    assert len(a["runs"]) == 160 and all(r[1] for r in a["runs"])
    assert a["prompts"], "the freshest runs get their prompt"
    assert any(r[3] for r in a["runs"]) and any(r[2] for r in a["runs"])  # flags and long runs to compare
    assert a["days"] == b["days"]
    assert a["runs"] == b["runs"]
    assert a["prompts"] == b["prompts"]
    with batch.db.transaction() as s:
        assert s.scalars(select(Athlete)).one().replan_from is None


def test_runs_older_than_the_newest_arrive_late_and_change_nothing_but_what_they_should(tmp_path: Path) -> None:
    runs = history(FIRST, 80, seed=3)
    now = max(r.start_time for r in runs) + timedelta(days=2)
    in_order = open_rt(tmp_path / "a")
    store_runs(in_order.db, in_order.settings, "me", sorted(runs, key=lambda r: r.start_time), now)
    newest_first = open_rt(tmp_path / "b")
    store_runs(newest_first.db, newest_first.settings, "me", sorted(runs, key=lambda r: r.start_time)[::-1], now)
    assert snapshot(in_order) == snapshot(newest_first)


def test_a_single_live_run_reads_only_its_window(tmp_path: Path) -> None:
    runs = history(FIRST, 300, seed=8)
    rt = open_rt(tmp_path / "a")
    last = max(r.start_time for r in runs)
    store_runs(rt.db, rt.settings, "me", runs, last, batch=True)
    loaded: list[int] = []

    def on_load(session: Any, instance: Any) -> None:
        if isinstance(instance, Run):
            loaded.append(instance.id)

    live = parsed_run(last + timedelta(days=1), minutes=50)
    event.listen(Session, "loaded_as_persistent", on_load)
    try:
        (live_id,) = store_runs(rt.db, rt.settings, "me", [live], last + timedelta(days=1, hours=1))
    finally:
        event.remove(Session, "loaded_as_persistent", on_load)
    # The live run's rules look back at most 12 weeks and a few days: never at the whole history.
    assert 0 < len(set(loaded)) < 120
    with rt.db.transaction() as s:
        prompt = s.scalars(select(Prompt).where(Prompt.run_id == live_id)).one()
        assert prompt.facts["run"]["distance_km"] == pytest.approx(9.0)


def test_a_strava_delete_recomputes_the_flags_of_later_runs(tmp_path: Path) -> None:
    # Six weeks of 5 km runs, a 30 km Strava run, then 5.6 km: against the 30 km it is no spike (but a ramp),
    # and once the 30 km run is deleted, the 6 km run is measured against 5 km runs again.
    base = [parsed_run(FIRST + timedelta(days=2 * i), minutes=5000 / 3.0 / 60, speed_mps=3.0) for i in range(20)]
    big_start = FIRST + timedelta(days=40)
    big = parsed_run(big_start, minutes=30_000 / 3.0 / 60, key="42", source="strava")
    after = parsed_run(FIRST + timedelta(days=42), minutes=5600 / 3.0 / 60)
    rt = open_rt(tmp_path / "a")
    now = FIRST + timedelta(days=60)
    store_runs(rt.db, rt.settings, "me", [*base, big, after], now)
    with rt.db.transaction() as s:
        later = s.scalars(select(Run).where(Run.start_time == after.start_time)).one()
        assert later.load is not None and "spike_caution" not in later.load.flags and "ramp" in later.load.flags
        athlete = s.scalars(select(Athlete)).one()
        doomed = s.scalars(select(Run).where(Run.source == "strava")).all()
        remove_runs(s, athlete, doomed)
        athlete_id = athlete.id
    replan(rt.db, rt.settings, athlete_id, now)
    reference = open_rt(tmp_path / "b")
    store_runs(reference.db, reference.settings, "me", [*base, after], now)
    with rt.db.transaction() as s:
        later = s.scalars(select(Run).where(Run.start_time == after.start_time)).one()
        assert later.load is not None and later.load.flags == ["spike_caution"]  # 5.6 km is 1.12× 5 km
    assert snapshot(rt) == snapshot(reference)


def test_a_crash_between_chunks_is_finished_by_the_next_replan(tmp_path: Path) -> None:
    runs = history(FIRST, 120, seed=4)
    now = max(r.start_time for r in runs) + timedelta(days=3)
    reference = open_rt(tmp_path / "a")
    store_runs(reference.db, reference.settings, "me", runs, now, batch=True)
    crashed = open_rt(tmp_path / "b")
    chunks: list[ChunkDone] = []

    def killed_after_two(done: ChunkDone) -> None:
        chunks.append(done)
        if len(chunks) == 2:
            raise RuntimeError("killed")  # the process dies once the second chunk is committed

    with pytest.raises(RuntimeError):
        store_runs(crashed.db, crashed.settings, "me", runs, now, batch=True, chunk_runs=25, on_chunk=killed_after_two)
    with crashed.db.transaction() as s:
        mark = s.scalars(select(Athlete)).one().replan_from
        assert mark is not None and mark > FIRST  # two chunks were committed, the mark moved past them
        athlete_id = s.scalars(select(Athlete.id)).one()
        assert s.scalar(select(func.count()).select_from(RunLoad)) == sum(c.runs for c in chunks)
    replan(crashed.db, crashed.settings, athlete_id, now, chunk_runs=25)
    assert snapshot(crashed) == snapshot(reference)


def test_a_late_run_recomputes_sample_level_load_only_where_its_inputs_changed(tmp_path: Path) -> None:
    runs = sorted(history(FIRST, 200, seed=6), key=lambda r: r.start_time)
    rt = open_rt(tmp_path / "a")
    now = runs[-1].start_time + timedelta(days=1)
    store_runs(rt.db, rt.settings, "me", runs, now, batch=True)
    computed: list[datetime] = []

    def starts(done: ChunkDone) -> None:
        with rt.db.read() as s:
            computed.extend(s.scalars(select(Run.start_time).where(Run.id.in_(done.computed))))
        computed.sort()

    middle = runs[60].start_time + timedelta(hours=2)
    # Without cadence the late run is in no later run's cadence baseline: only its own load is computed.
    store_runs(rt.db, rt.settings, "me", [parsed_run(middle, cadence_spm=None, key="late-1")], now, on_chunk=starts)
    assert [t.replace(tzinfo=UTC) for t in computed] == [middle]
    computed.clear()
    # With cadence it moves the baselines of later runs, at most those of the next 90 days.
    late = parsed_run(middle + timedelta(hours=1), speed_mps=3.0, key="late-2")
    store_runs(rt.db, rt.settings, "me", [late], now, on_chunk=starts)
    computed = [t.replace(tzinfo=UTC) for t in computed]
    assert computed[0] == middle + timedelta(hours=1)
    assert all(t - middle <= timedelta(days=90, hours=1) for t in computed)
    later = sum(1 for r in runs if r.start_time > middle)
    assert 1 < len(computed) < later
    # And the figures are those of the whole history stored in date order.
    reference = open_rt(tmp_path / "b")
    extra = [parsed_run(middle, cadence_spm=None, key="late-1"), parsed_run(middle + timedelta(hours=1), key="late-2")]
    store_runs(reference.db, reference.settings, "me", sorted([*runs, *extra], key=lambda r: r.start_time), now)
    assert snapshot(rt) == snapshot(reference)


def test_a_richer_copy_of_a_session_replaces_the_primary_and_counts_once(tmp_path: Path) -> None:
    runs = [parsed_run(FIRST + timedelta(days=2 * i), minutes=40) for i in range(10)]
    session_start = FIRST + timedelta(days=21)
    summary = parsed_run(session_start, minutes=50, with_samples=False, source="strava", key="99")
    fit = parsed_run(session_start + timedelta(seconds=20), minutes=50, key="watch")
    now = session_start + timedelta(days=2)
    rt = open_rt(tmp_path / "a")
    store_runs(rt.db, rt.settings, "me", [*runs, summary, fit], now)
    reference = open_rt(tmp_path / "b")
    store_runs(reference.db, reference.settings, "me", [*runs, fit], now)
    with rt.db.transaction() as s:
        copy = s.scalars(select(Run).where(Run.source == "strava")).one()
        assert copy.duplicate_of_id is not None
    assert snapshot(rt)["days"] == snapshot(reference)["days"]


def test_the_batch_path_on_both_databases_matches_one_by_one(any_rt: Runtime, tmp_path: Path) -> None:
    runs = history(FIRST, 120, seed=9)
    now = max(r.start_time for r in runs) + timedelta(hours=2)
    with any_rt.db.transaction() as s:
        s.add(Athlete(name="me", timezone=TZ))
    shuffled = runs[:]
    random.Random(2).shuffle(shuffled)
    store_runs(any_rt.db, any_rt.settings, "me", shuffled, now, batch=True, chunk_runs=30)
    reference = open_rt(tmp_path / "ref")
    store_runs(reference.db, reference.settings, "me", sorted(runs, key=lambda r: r.start_time), now)
    assert snapshot(any_rt) == snapshot(reference)


def test_a_batch_that_updates_a_stored_run_recomputes_its_load(tmp_path: Path) -> None:
    from ingest.strava.sync import store_parsed

    rt = open_rt(tmp_path / "a")
    start = FIRST + timedelta(days=3)
    now = start + timedelta(days=1)
    first = parsed_run(start, minutes=40, with_samples=False, source="strava", key="7")
    with rt.db.transaction() as s:
        athlete = s.scalars(select(Athlete)).one()
        store_parsed(s, athlete, [first])
        athlete_id = athlete.id
    replan(rt.db, rt.settings, athlete_id, now)
    with rt.db.transaction() as s:
        before = s.scalars(select(Run)).one().load.load  # type: ignore[union-attr]
        athlete = s.scalars(select(Athlete)).one()
        # The activity was edited on Strava: twice the time, stored by a backfill page (marked only).
        store_parsed(s, athlete, [parsed_run(start, minutes=80, with_samples=False, source="strava", key="7")])
        athlete_id = athlete.id
    replan(rt.db, rt.settings, athlete_id, now)
    with rt.db.transaction() as s:
        after = s.scalars(select(Run)).one().load.load  # type: ignore[union-attr]
        day = s.scalars(select(DailyLoad)).one()
    assert after == pytest.approx(2 * before, rel=1e-6)
    assert day.load == after
