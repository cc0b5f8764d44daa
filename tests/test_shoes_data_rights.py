"""Shoes (distance and steps per pair, the worn-out reminder once, Strava gear mapping) and data rights (export
files hold the athlete's rows; forget leaves no row of that athlete in any table and others untouched)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import ingest_planned
from fake_strava import make_activity
from fitgen import write_activity
from sqlalchemy import Table, select
from typer.testing import CliRunner

from ingest.runs import store_parsed
from ingest.strava.convert import convert_activity
from recommender.data_rights import EXPORT_TABLES
from recommender.feedback import record_done
from stridecare.db.models import (
    Athlete,
    Base,
    Delivery,
    DeliveryAttempt,
    Prompt,
    Run,
    SeenFile,
    Shoe,
    StravaAccount,
    StravaEvent,
)
from stridecare.domain.load import DEFAULT_CONSTANTS
from stridecare.domain.run import ParsedRun
from stridecare.runtime import Runtime

START = datetime(2026, 4, 6, 6, 0, tzinfo=UTC)


def cli(rt: Runtime, *args: str) -> Any:
    from stridecare_app.cli.main import app

    env = {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
        "STRIDECARE_INBOXES": json.dumps(rt.settings.inboxes),
    }
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


def drop(rt: Runtime, tmp_path: Path, athlete: str, day: int, minutes: int = 30) -> None:
    start = START + timedelta(days=day)
    path = tmp_path / f"{athlete}-{day}.fit"
    write_activity(path, start=start, duration_s=minutes * 60, speed_mps=3.0, cadence_rpm=85, sample_interval_s=5)
    report = ingest_planned(rt.db, rt.settings, athlete, path, start + timedelta(minutes=minutes + 20))
    assert report.status == "ingested"


def add_athlete(rt: Runtime, name: str) -> None:
    with rt.db.transaction() as s:
        s.add(Athlete(name=name, timezone="UTC"))


# -- shoes ----------------------------------------------------------------------------------------------------


def test_shoe_distance_steps_and_one_reminder(rt: Runtime, tmp_path: Path) -> None:
    add_athlete(rt, "anna")
    cli(rt, "shoe", "add", "old-pair", "--athlete", "anna")
    # In use from the day after the first run (the default would be the day it is added: no run of April).
    cli(rt, "shoe", "add", "pegasus", "--athlete", "anna", "--remind-at-km", "12", "--from", "2026-04-07")
    drop(rt, tmp_path, "anna", 0)  # no default pair yet: counted on none
    cli(rt, "shoe", "use", "pegasus", "--athlete", "anna")
    for day in (1, 2, 3):  # 3 × 5.4 km: the reminder distance is passed on day 3
        drop(rt, tmp_path, "anna", day)

    rows = {r["name"]: r for r in json.loads(cli(rt, "shoe", "list", "--athlete", "anna", "--json").stdout)}
    with rt.db.transaction() as s:
        runs = list(s.scalars(select(Run).order_by(Run.start_time)))
        pegasus = s.scalars(select(Shoe).where(Shoe.name == "pegasus")).one()
        on_pegasus = [r for r in runs if r.shoe_id == pegasus.id]
        assert runs[0].shoe_id is None and len(on_pegasus) == 3
        reminders = list(s.scalars(select(Prompt).where(Prompt.kind == "shoe")))
    assert rows["pegasus"]["runs"] == 3 and rows["pegasus"]["default"] is True
    assert rows["pegasus"]["distance_km"] == pytest.approx(sum(r.distance_m for r in on_pegasus) / 1000, abs=0.01)
    assert rows["pegasus"]["steps"] == round(sum(r.steps for r in on_pegasus))
    assert rows["old-pair"]["runs"] == 0 and rows["old-pair"]["distance_km"] == 0
    assert len(reminders) == 1
    assert reminders[0].dedupe_key == f"shoe:{pegasus.id}:12"
    assert "pegasus" in reminders[0].reasons[0]
    # Before the third run the pair was under 12 km: the reminder came with the run that crossed it.
    assert reminders[0].created_at == runs[3].start_time + timedelta(minutes=50)

    drop(rt, tmp_path, "anna", 4)  # still past the distance: no second reminder
    with rt.db.transaction() as s:
        assert len(list(s.scalars(select(Prompt).where(Prompt.kind == "shoe")))) == 1
        # The reminder goes out like any prompt (console here); the relay renders it without error.
        assert [d.channel for d in s.scalars(select(Delivery).join(Prompt).where(Prompt.kind == "shoe"))] == ["console"]
    from recommender.messages import relay_pending

    relay_pending(rt)
    with rt.db.transaction() as s:
        assert all(a.ok for a in s.scalars(select(DeliveryAttempt)))
    assert "pegasus" in (rt.settings.data_home / "prompts.log").read_text()

    cli(rt, "shoe", "retire", "pegasus", "--athlete", "anna")
    drop(rt, tmp_path, "anna", 5)
    with rt.db.transaction() as s:
        newest = s.scalars(select(Run).order_by(Run.start_time.desc()).limit(1)).one()
        assert newest.shoe_id is None  # retiring the default pair stops counting on it
        assert s.scalars(select(Athlete).where(Athlete.name == "anna")).one().default_shoe_id is None


def test_strava_gear_id_maps_runs_to_their_pair(rt: Runtime) -> None:
    add_athlete(rt, "anna")
    cli(rt, "shoe", "add", "trail", "--athlete", "anna", "--strava-gear-id", "g777")
    cli(rt, "shoe", "add", "road", "--athlete", "anna", "--use", "--from", "2026-04-01")
    parsed_trail = convert_activity(make_activity(1, START, gear_id="g777"), DEFAULT_CONSTANTS)
    parsed_other = convert_activity(make_activity(2, START + timedelta(days=1), gear_id="g999"), DEFAULT_CONSTANTS)
    assert isinstance(parsed_trail, ParsedRun) and isinstance(parsed_other, ParsedRun)
    assert parsed_trail.gear_id == "g777"
    with rt.db.transaction() as s:
        anna = s.scalars(select(Athlete).where(Athlete.name == "anna")).one()
        trail_run, other_run = store_parsed(s, anna, [parsed_trail, parsed_other]).runs
        shoes = {sh.name: sh.id for sh in s.scalars(select(Shoe))}
        assert trail_run.shoe_id == shoes["trail"]
        assert other_run.shoe_id == shoes["road"]  # an unknown gear id falls back to the default pair


# -- data rights ----------------------------------------------------------------------------------------------


def seed_two(rt: Runtime, tmp_path: Path) -> dict[str, int]:
    ids = {}
    for name in ("anna", "ben"):
        add_athlete(rt, name)
        cli(rt, "shoe", "add", "pair", "--athlete", name, "--use", "--remind-at-km", "5")
        for day in (0, 1, 2):
            # Different files per athlete: seen-file entries are per content, not per athlete.
            drop(rt, tmp_path, name, day, minutes=30 if name == "anna" else 32)
        with rt.db.transaction() as s:
            athlete = s.scalars(select(Athlete).where(Athlete.name == name)).one()
            ids[name] = athlete.id
            prompt = s.scalars(select(Prompt).where(Prompt.athlete_id == athlete.id, Prompt.kind == "post_run")).first()
            assert prompt is not None
            record_done(s, prompt.id, START + timedelta(hours=5))
            strava_id = 1000 + athlete.id
            s.add(
                StravaAccount(
                    athlete_id=athlete.id,
                    strava_athlete_id=strava_id,
                    access_token_enc="x",
                    refresh_token_enc="y",
                    expires_at=START,
                )
            )
            s.add(StravaEvent(dedupe_key=f"ev-{name}", payload={"owner_id": strava_id, "object_id": 5}))
    from recommender.messages import relay_pending

    relay_pending(rt)  # delivery attempts exist too
    return ids


def test_export_writes_json_and_csv_with_the_athletes_rows(rt: Runtime, tmp_path: Path) -> None:
    ids = seed_two(rt, tmp_path)
    out = tmp_path / "export"
    cli(rt, "export", "anna", "--out", str(out))
    for table in EXPORT_TABLES:
        assert (out / f"{table}.json").exists() and (out / f"{table}.csv").exists()
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 3 and {r["athlete_id"] for r in runs} == {ids["anna"]}
    with (out / "runs.csv").open() as fh:
        assert [int(r["id"]) for r in csv.DictReader(fh)] == [r["id"] for r in runs]
    loads = json.loads((out / "run_loads.json").read_text())
    assert {r["run_id"] for r in loads} == {r["id"] for r in runs}
    daily = json.loads((out / "daily_loads.json").read_text())
    assert [d["day"] for d in daily] == ["2026-04-06", "2026-04-07", "2026-04-08"]
    prompts = json.loads((out / "prompts.json").read_text())
    assert prompts and {p["athlete_id"] for p in prompts} == {ids["anna"]}
    completions = json.loads((out / "completions.json").read_text())
    assert completions and {c["athlete_id"] for c in completions} == {ids["anna"]}
    with (out / "prompts.csv").open() as fh:
        first = next(csv.DictReader(fh))
        assert isinstance(json.loads(first["routines"]), list)  # lists as JSON text in one cell
    text = "".join(p.read_text() for p in out.iterdir())
    assert "dashboard_token" not in text and "refresh_token" not in text
    (profile,) = json.loads((out / "profile.json").read_text())
    assert profile["name"] == "anna" and "webhook_secret_enc" not in profile
    samples = json.loads((out / "samples.json").read_text())
    assert {s["run_id"] for s in samples} == {r["id"] for r in runs}
    deliveries = json.loads((out / "deliveries.json").read_text())
    assert deliveries and {d["athlete_id"] for d in deliveries} == {ids["anna"]}
    # Numbers rounded to what they mean: no float noise such as 7392.000000000324 anywhere.
    import re

    assert not re.search(r"\d\.\d{7,}", text)


def _rows_of(rt: Runtime, athlete_id: int, run_ids: set[int], delivery_ids: set[int]) -> dict[str, int]:
    found: dict[str, int] = {}
    with rt.db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            assert isinstance(table, Table)
            cols = table.c
            clauses = []
            if "athlete_id" in cols:
                clauses.append(cols.athlete_id == athlete_id)
            if table.name == "athletes":
                clauses.append(cols.id == athlete_id)
            if "run_id" in cols and run_ids:
                clauses.append(cols.run_id.in_(run_ids))
            if table.name == "runs" and run_ids:
                clauses.append(cols.id.in_(run_ids))
            if "delivery_id" in cols and delivery_ids:
                clauses.append(cols.delivery_id.in_(delivery_ids))
            for clause in clauses:
                n = len(conn.execute(select(table).where(clause)).all())
                if n:
                    found[table.name] = found.get(table.name, 0) + n
    return found


def test_forget_leaves_no_row_of_the_athlete_and_others_untouched(rt: Runtime, tmp_path: Path) -> None:
    ids = seed_two(rt, tmp_path)
    with rt.db.transaction() as s:
        anna_runs = set(s.scalars(select(Run.id).where(Run.athlete_id == ids["anna"])))
        anna_deliveries = set(s.scalars(select(Delivery.id).where(Delivery.athlete_id == ids["anna"])))
        ben_runs = set(s.scalars(select(Run.id).where(Run.athlete_id == ids["ben"])))
        ben_deliveries = set(s.scalars(select(Delivery.id).where(Delivery.athlete_id == ids["ben"])))
        seen_before = len(list(s.scalars(select(SeenFile.path))))
    before_anna = _rows_of(rt, ids["anna"], anna_runs, anna_deliveries)
    before_ben = _rows_of(rt, ids["ben"], ben_runs, ben_deliveries)
    # The seed reaches every kind of row, so "nothing left" below means something.
    for table in (
        "athletes",
        "runs",
        "run_samples",
        "run_loads",
        "daily_loads",
        "prompts",
        "completions",
        "deliveries",
        "delivery_attempts",
        "imported_files",
        "shoes",
        "strava_accounts",
    ):
        assert before_anna.get(table), table

    result = cli(rt, "forget", "anna", "--yes")
    assert "forgot anna" in result.stdout

    assert _rows_of(rt, ids["anna"], anna_runs, anna_deliveries) == {}
    assert _rows_of(rt, ids["ben"], ben_runs, ben_deliveries) == before_ben
    with rt.db.transaction() as s:
        owners = [e.payload["owner_id"] for e in s.scalars(select(StravaEvent))]
        assert owners == [1000 + ids["ben"]]
        # Seen-file entries of anna's files are gone, ben's stay.
        assert len(list(s.scalars(select(SeenFile.path)))) == seen_before - 3
        assert all("anna" not in p for p in s.scalars(select(SeenFile.path)))
    # Exporting the forgotten athlete now fails: it is unknown.
    from stridecare_app.cli.main import app

    env = {"STRIDECARE_DATA_HOME": str(rt.settings.data_home)}
    failed = CliRunner().invoke(app, ["export", "anna", "--out", str(tmp_path / "x")], env=env)
    assert failed.exit_code == 2 and "no athlete named 'anna'" in failed.output
