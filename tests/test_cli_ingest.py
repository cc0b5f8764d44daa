"""``stridecare ingest --json`` and ``runs --json``: the documented shapes and exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fitgen import write_activity, write_bad_crc
from typer.testing import CliRunner

from stridecare_app.cli.main import app

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)


def lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_ingest_json_prints_one_object_per_file_and_exits_2_on_rejection(cli_env: Path) -> None:
    good = cli_env / "good.fit"
    write_activity(good, start=START, duration_s=1500, speed_mps=3.1, cadence_rpm=85)
    bad = write_bad_crc(good, cli_env / "bad.fit")
    runner = CliRunner()

    result = runner.invoke(app, ["ingest", str(good), str(bad), str(good), "--json"])
    assert result.exit_code == 2, result.output
    objs = lines(result.stdout)
    assert [o["status"] for o in objs] == ["ingested", "rejected", "duplicate"]
    assert set(objs[0]) == {"path", "status", "reason", "runs"}
    run = objs[0]["runs"][0]  # type: ignore[index]
    for key in (
        "id",
        "source",
        "sport",
        "sub_sport",
        "start_time",
        "timer_s",
        "elapsed_s",
        "distance_m",
        "steps",
        "avg_cadence_spm",
        "cadence_source",
        "load",
        "long_run",
    ):
        assert key in run
    assert run["source"] == "fit" and run["start_time"] == "2026-03-02T06:30:00Z"
    assert run["cadence_source"] == "stream" and run["steps"] == 2 * 85 * 1500 // 60
    assert objs[1]["reason"] and "\n" not in str(objs[1]["reason"])

    ok = runner.invoke(app, ["ingest", str(good), "--json"])
    assert ok.exit_code == 0

    listed = runner.invoke(app, ["runs", "--json"])
    assert listed.exit_code == 0
    assert [r["id"] for r in json.loads(listed.stdout)] == [run["id"]]


def test_missing_file_is_a_clear_rejection(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["ingest", str(cli_env / "nope.fit"), "--json"])
    assert result.exit_code == 2
    obj = lines(result.stdout)[0]
    assert obj["status"] == "rejected" and "no longer exists" in str(obj["reason"])


def test_help_teaches(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["import", "--help"])
    assert result.exit_code == 0
    assert "freshness window" in result.stdout and "progress" in result.stdout


def test_import_decodes_each_content_once(cli_env: Path) -> None:
    archive = cli_env / "archive"
    (archive / "backup").mkdir(parents=True)
    write_activity(archive / "a.fit", start=START, duration_s=1200)
    (archive / "backup" / "a-copy.fit").write_bytes((archive / "a.fit").read_bytes())
    write_activity(archive / "c.fit", start=START.replace(day=4), duration_s=900)
    elsewhere = cli_env / "c-imported-before.fit"
    elsewhere.write_bytes((archive / "c.fit").read_bytes())
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(elsewhere)]).exit_code == 0

    result = runner.invoke(app, ["import", str(archive), "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    by_name = {Path(str(o["path"])).name: o for o in lines(result.stdout)}
    err_lines = result.stderr.splitlines()
    # The copy and the content imported before are never parsed again, and the summary says so.
    assert "  duplicate: 2 not read again (same content as a stored file)" in err_lines
    assert err_lines[-1] == f"imported {archive}: 2 duplicate, 1 ingested"
    assert {n: o["status"] for n, o in by_name.items()} == {
        "a.fit": "ingested",
        "a-copy.fit": "duplicate",
        "c.fit": "duplicate",
    }
    assert by_name["a-copy.fit"]["runs"] == by_name["a.fit"]["runs"]  # a duplicate names the stored runs
    listed = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert len(listed) == 2

    again = runner.invoke(app, ["import", str(archive), "--workers", "1"])
    assert again.exit_code == 0, again.output
    again_lines = again.stderr.splitlines()
    assert "  duplicate: 3 not read again (same path, size and time as before)" in again_lines
    assert again_lines[-1] == f"imported {archive}: 3 duplicate"


def test_import_summary_groups_skipped_rejected_and_ignored_files_by_reason(cli_env: Path) -> None:
    folder = cli_env / "export"
    folder.mkdir()
    write_activity(folder / "run.fit", start=START, duration_s=1500, speed_mps=3.1)
    write_activity(folder / "ride1.fit", start=START.replace(day=3), duration_s=1500, sport="cycling")
    write_activity(folder / "ride2.fit", start=START.replace(day=4), duration_s=1600, sport="cycling")
    write_activity(folder / "swim.fit", start=START.replace(day=5), duration_s=1700, sport="swimming")
    write_bad_crc(folder / "run.fit", folder / "broken.fit")
    (folder / "notes.txt").write_text("not a run")
    result = CliRunner().invoke(app, ["import", str(folder), "--workers", "1"])
    assert result.exit_code == 2, result.output  # one file rejected
    err_lines = result.stderr.strip().splitlines()
    assert err_lines[-1].startswith(f"imported {folder}: ")
    assert "1 ingested" in err_lines[-1] and "3 skipped" in err_lines[-1] and "1 rejected" in err_lines[-1]
    skipped = next(line for line in err_lines if line.startswith("  skipped: "))
    assert skipped == "  skipped: 2 not a foot sport (cycling); 1 not a foot sport (swimming)"
    rejected = next(line for line in err_lines if line.startswith("  rejected: "))
    assert rejected.startswith("  rejected: 1 ")
    assert "  ignored: 1 not an activity file (.txt)" in err_lines


def test_prompts_says_why_a_run_got_no_prompt(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from stridecare.clock import write_clock_file

    clock = cli_env / "clock.txt"
    write_clock_file(clock, START + timedelta(hours=4))
    monkeypatch.setenv("STRIDECARE_CLOCK_FILE", str(clock))
    write_activity(cli_env / "first.fit", start=START, duration_s=1500, speed_mps=3.1)
    write_activity(cli_env / "second.fit", start=START + timedelta(hours=2), duration_s=1400, speed_mps=3.0)
    write_activity(cli_env / "old.fit", start=START - timedelta(days=30), duration_s=1600, speed_mps=3.0)
    runner = CliRunner()
    ingested = runner.invoke(
        app, ["ingest", str(cli_env / "first.fit"), str(cli_env / "second.fit"), str(cli_env / "old.fit"), "--json"]
    )
    assert ingested.exit_code == 0, ingested.output
    first, second, old = (o["runs"][0]["id"] for o in lines(ingested.stdout))  # type: ignore[index]

    shown = runner.invoke(app, ["prompts"])
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert "runs without a prompt:" in out
    assert f"run {first} " not in out.split("runs without a prompt:")[1]
    assert f"run {second}  2026-03-02  running 4.2 km: not the first run of 2026-03-02" in out
    assert f"run {old}  2026-01-31  running 4.8 km: outside the 24 h freshness window" in out


def test_ingest_says_what_became_of_each_file_and_run(cli_env: Path) -> None:
    old = cli_env / "old.fit"
    write_activity(old, start=START, duration_s=1500, speed_mps=3.1)  # months before the wall clock: no prompt
    ride = cli_env / "ride.fit"
    write_activity(ride, start=START, duration_s=1500, sport="cycling")
    result = CliRunner().invoke(app, ["ingest", str(old), str(ride)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "no prompt for run 1: outside the 24 h freshness window" in out
    assert "  skipped: 1 not a foot sport (cycling)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "imported 2 files: 1 ingested, 1 skipped"
