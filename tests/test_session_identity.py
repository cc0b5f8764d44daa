"""One session is one run: copies of a session from any source give one primary run and one daily load.

Each case reads the same session twice (a re-export, a re-save, a ``.fit`` and its ``.fit.gz``, the Strava
activity with 15 % less moving time, a GPX file) and checks that exactly one run is primary, the other points
at it, and the daily series counts the primary's load once. A real second run the same day stays a run.
"""

from __future__ import annotations

import gzip
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from factories import ingest_planned
from fake_strava import make_activity
from fitgen import write_activity
from sqlalchemy import select
from test_more_sources import gpx_xml, track_points

from ingest.dedupe import overlap_fraction, same_session
from ingest.runs import remove_runs
from ingest.strava.convert import convert_activity
from ingest.strava.sync import store_parsed
from recommender.data_rights import forget_athlete
from recommender.planner import replan
from stridecare.db.athletes import ensure_athlete, get_athlete
from stridecare.db.models import DailyLoad, Prompt, Run, RunLoad
from stridecare.domain.load import DEFAULT_CONSTANTS
from stridecare.domain.run import ParsedRun
from stridecare.runtime import Runtime
from stridecare_app.cli.ingest_cmds import import_folder

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)
NOW = START + timedelta(days=1)


# -- helpers ---------------------------------------------------------------------------------------------------


def runs_of(rt: Runtime, athlete: str = "me") -> list[Run]:
    with rt.db.read() as s:
        who = get_athlete(s, athlete)
        rows = list(s.scalars(select(Run).where(Run.athlete_id == who.id).order_by(Run.id)))
        for r in rows:
            s.expunge(r)
        return rows


def primary_and_daily(rt: Runtime, athlete: str = "me") -> tuple[list[Run], float, float]:
    """(primary runs, Σ of their loads, Σ of the daily series' loads)."""
    with rt.db.read() as s:
        who = get_athlete(s, athlete)
        primaries = list(s.scalars(select(Run).where(Run.athlete_id == who.id, Run.duplicate_of_id.is_(None))))
        run_load = sum(r.load.load for r in primaries if r.load is not None)
        daily = sum(d.load for d in s.scalars(select(DailyLoad).where(DailyLoad.athlete_id == who.id)))
        for r in primaries:
            s.expunge(r)
        return primaries, run_load, daily


def assert_one_session(rt: Runtime, copies: int = 2, athlete: str = "me") -> Run:
    """Exactly one primary among ``copies`` runs, the rest linked to it, its load in the daily series once."""
    every = runs_of(rt, athlete)
    assert len(every) == copies
    primaries, run_load, daily = primary_and_daily(rt, athlete)
    assert len(primaries) == 1
    primary = primaries[0]
    assert all(r.duplicate_of_id == primary.id for r in every if r.id != primary.id)
    assert run_load > 0
    assert daily == pytest.approx(run_load)
    with rt.db.read() as s:
        # A copy keeps no load of its own: nothing that reads loads can count the session twice.
        loads = list(s.scalars(select(RunLoad.run_id)))
    assert loads == [primary.id]
    return primary


def fit(path: Path, **kwargs: object) -> Path:
    values: dict[str, object] = {"start": START, "duration_s": 1800, "speed_mps": 3.2, "cadence_rpm": 84}
    values.update(kwargs)
    write_activity(path, **values)
    return path


def strava_run(start: datetime, moving_time: int, elapsed_time: int, activity_id: int = 4711) -> ParsedRun:
    """A summary-only Strava activity (no streams), as the API returns it."""
    activity = make_activity(
        activity_id,
        start,
        moving_time=moving_time,
        elapsed_time=elapsed_time,
        distance=moving_time * 3.2,
        average_cadence=84.0,
        gear_id=None,
    )
    parsed = convert_activity(activity, DEFAULT_CONSTANTS)
    assert isinstance(parsed, ParsedRun)
    return parsed


def ingest(rt: Runtime, path: Path, athlete: str = "me", now: datetime = NOW) -> str:
    return ingest_planned(rt.db, rt.settings, athlete, path, now).status


def store_strava(rt: Runtime, parsed: ParsedRun, now: datetime = NOW) -> None:
    """Store a Strava activity as an event does, then the replan it owes."""
    with rt.db.transaction() as s:
        athlete = ensure_athlete(s, "me", rt.settings, lock=True)
        owed = store_parsed(s, athlete, [parsed]).replan_owed
        athlete_id = athlete.id
    if owed:
        replan(rt.db, rt.settings, athlete_id, now)


# -- the rule ----------------------------------------------------------------------------------------------------


def test_rule_overlap_of_elapsed_ranges_not_durations() -> None:
    def run(offset_s: float, elapsed_s: float, timer_s: float | None = None, sport: str = "running") -> Run:
        return Run(
            sport=sport,
            start_time=START + timedelta(seconds=offset_s),
            elapsed_s=elapsed_s,
            timer_s=elapsed_s if timer_s is None else timer_s,
        )

    watch = run(0, 3000)
    assert same_session(watch, run(15, 3000, timer_s=2550))  # Strava: moving time 15 % below the timer
    assert same_session(watch, run(600, 1200))  # a phone started late: wholly inside
    assert overlap_fraction(watch, run(2950, 1800)) < 0.05
    assert not same_session(watch, run(2970, 1800))  # back to back, 30 s clock skew
    assert not same_session(watch, run(11 * 3600, 3000))  # the evening run
    assert not same_session(watch, run(0, 3000, sport="walking"))
    assert same_session(run(0, 0), run(30, 0))  # two instants (summaries without duration) within 60 s
    assert not same_session(run(0, 0), run(90, 0))


# -- file copies -------------------------------------------------------------------------------------------------


def test_re_export_with_and_without_the_paused_records_is_one_run(any_rt: Runtime, tmp_path: Path) -> None:
    # The same 30-minute run with a 2-minute stop: one export keeps the timer stopped through the pause, the
    # other (recorded through the stop) has the pause's records in the timer.
    paused = fit(tmp_path / "export-a.fit", duration_s=1800, pauses=[(900, 120)])
    through = fit(tmp_path / "export-b.fit", duration_s=1920)
    assert ingest(any_rt, paused) == "ingested"
    assert ingest(any_rt, through) == "ingested"
    primary = assert_one_session(any_rt)
    # The richer record by sample count is the one with the stop's records.
    assert primary.timer_s == pytest.approx(1920, abs=2)


def test_a_file_and_its_re_save_are_one_run(any_rt: Runtime, tmp_path: Path) -> None:
    original = fit(tmp_path / "garmin.fit")
    resaved = fit(tmp_path / "garmin-resaved.fit", sample_interval_s=2, manufacturer="garmin")
    assert original.read_bytes() != resaved.read_bytes()
    assert [ingest(any_rt, original), ingest(any_rt, resaved)] == ["ingested", "ingested"]
    primary = assert_one_session(any_rt)
    assert primary.file_id is not None


def test_fit_beside_its_own_fit_gz_is_one_run(any_rt: Runtime, tmp_path: Path) -> None:
    plain = fit(tmp_path / "run.fit")
    packed = tmp_path / "run.fit.gz"
    with plain.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert [ingest(any_rt, packed), ingest(any_rt, plain)] == ["ingested", "ingested"]
    primary = assert_one_session(any_rt)
    # Equal records: the one whose source and key sort first is primary, whichever was stored first.
    assert (primary.source, primary.source_key) == min((r.source, r.source_key) for r in runs_of(any_rt))


def test_fit_and_gpx_of_one_session_are_one_run(rt: Runtime, tmp_path: Path) -> None:
    watch = fit(tmp_path / "watch.fit", duration_s=1800, speed_mps=3.0, cadence_rpm=85)
    gpx = tmp_path / "phone.gpx"
    # The phone app started 90 s later (the athlete pressed start on the watch first) and has no cadence.
    late = track_points(start=START + timedelta(seconds=90), duration_s=1710, interval_s=5)
    gpx.write_text(gpx_xml([("running", late, None)]))
    assert [ingest(rt, gpx), ingest(rt, watch)] == ["ingested", "ingested"]
    primary = assert_one_session(rt)
    assert primary.source == "fit"  # measured cadence beats an estimate


def test_a_second_run_the_same_day_stays_a_second_run(any_rt: Runtime, tmp_path: Path) -> None:
    ingest(any_rt, fit(tmp_path / "morning.fit"))
    # Another length: the same loop at exactly whole hours later would read as a copy with a shifted clock.
    ingest(any_rt, fit(tmp_path / "evening.fit", start=START + timedelta(hours=11), duration_s=2400))
    primaries, run_load, daily = primary_and_daily(any_rt)
    assert len(primaries) == 2
    assert daily == pytest.approx(run_load)
    with any_rt.db.read() as s:
        assert len(list(s.scalars(select(DailyLoad)))) == 1  # both on one local day


# -- FIT and Strava ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fit_first", [True, False], ids=["fit-then-strava", "strava-then-fit"])
def test_fit_and_strava_with_15_percent_less_moving_time_are_one_run(
    any_rt: Runtime, tmp_path: Path, fit_first: bool
) -> None:
    # A watch that records through stops: timer 3000 s; Strava's moving time is 15 % less.
    watch = fit(tmp_path / "watch.fit", duration_s=3000)
    strava = strava_run(START + timedelta(seconds=10), moving_time=2550, elapsed_time=3000)
    fresh = START + timedelta(minutes=55)  # inside the freshness window: the session gets its prompt
    if fit_first:
        assert ingest(any_rt, watch, now=fresh) == "ingested"
        store_strava(any_rt, strava, fresh)
    else:
        store_strava(any_rt, strava, fresh)
        assert ingest(any_rt, watch, now=fresh) == "ingested"
    primary = assert_one_session(any_rt)
    assert primary.source == "fit"  # per-sample cadence beats Strava's summary
    with any_rt.db.read() as s:
        assert len(list(s.scalars(select(Prompt).where(Prompt.kind == "post_run")))) == 1


def test_removing_the_primary_elects_the_copy_and_recomputes(any_rt: Runtime, tmp_path: Path) -> None:
    ingest(any_rt, fit(tmp_path / "watch.fit", duration_s=3000))
    store_strava(any_rt, strava_run(START, moving_time=2550, elapsed_time=3000))
    primary = assert_one_session(any_rt)
    with any_rt.db.transaction() as s:
        athlete = get_athlete(s, "me")
        remove_runs(s, athlete, [s.get(Run, primary.id)])  # type: ignore[list-item]
        athlete_id = athlete.id
    replan(any_rt.db, any_rt.settings, athlete_id, NOW)
    heir = assert_one_session(any_rt, copies=1)
    assert heir.source == "strava"


# -- seen files per athlete ---------------------------------------------------------------------------------------


def test_two_athletes_importing_one_folder_each_get_their_runs_and_forget_clears(rt: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "shared-folder"
    folder.mkdir()
    for day in range(3):
        fit(folder / f"run{day}.fit", start=START + timedelta(days=day))
    assert import_folder(rt, folder, "anna", 1) == {"ingested": 3}
    assert import_folder(rt, folder, "bert", 1) == {"ingested": 3}
    assert import_folder(rt, folder, "bert", 1) == {"duplicate": 3}
    assert len(runs_of(rt, "anna")) == len(runs_of(rt, "bert")) == 3

    with rt.db.transaction() as s:
        forget_athlete(s, get_athlete(s, "anna"))
    assert import_folder(rt, folder, "anna", 1) == {"ingested": 3}
    assert len(runs_of(rt, "anna")) == 3
    assert import_folder(rt, folder, "bert", 1) == {"duplicate": 3}


def test_two_concurrent_imports_of_one_folder_on_postgres_both_finish(pg_url: str, tmp_path: Path) -> None:
    from conftest import make_settings

    rt = Runtime.open(make_settings(tmp_path, database_url=pg_url))
    try:
        folder = tmp_path / "inbox"
        folder.mkdir()
        # Copies take the duplicate fast path, which reads and writes without the athlete's lock.
        for day in range(4):
            fit(folder / f"run{day}.fit", start=START + timedelta(days=day))
            for n in range(2):
                shutil.copy(folder / f"run{day}.fit", folder / f"run{day}-copy{n}.fit")
        results: list[dict[str, int]] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                results.append(import_folder(rt, folder, "me", 1))
            except BaseException as exc:  # the test reports whatever escaped
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert len(results) == 2
        assert all(sum(r.values()) == 12 and set(r) <= {"ingested", "duplicate"} for r in results)
        assert sum(r.get("ingested", 0) for r in results) == 4
        assert len(runs_of(rt)) == 4
    finally:
        rt.close()
