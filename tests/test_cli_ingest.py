"""``stridecare ingest --json`` and ``runs --json``: the documented shapes and exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fitgen import write_activity, write_bad_crc
from typer.testing import CliRunner

from stridecare_app.cli.main import _register, app

_register()
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


def test_import_decodes_each_content_once(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stridecare_app.cli.ingest_cmds as ingest_cmds

    archive = cli_env / "archive"
    (archive / "backup").mkdir(parents=True)
    write_activity(archive / "a.fit", start=START, duration_s=1200)
    (archive / "backup" / "a-copy.fit").write_bytes((archive / "a.fit").read_bytes())
    write_activity(archive / "c.fit", start=START.replace(day=4), duration_s=900)
    elsewhere = cli_env / "c-imported-before.fit"
    elsewhere.write_bytes((archive / "c.fit").read_bytes())
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(elsewhere)]).exit_code == 0

    decoded: list[str] = []
    real = ingest_cmds.decode_path

    def counting(path: Path, root: Path | None, max_bytes: int) -> object:
        decoded.append(path.name)
        return real(path, root, max_bytes)

    monkeypatch.setattr(ingest_cmds, "decode_path", counting)
    result = runner.invoke(app, ["import", str(archive), "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    by_name = {Path(str(o["path"])).name: o for o in lines(result.stdout)}
    assert decoded == ["a.fit"]  # the copy and the content imported before are never parsed again
    assert {n: o["status"] for n, o in by_name.items()} == {
        "a.fit": "ingested",
        "a-copy.fit": "duplicate",
        "c.fit": "duplicate",
    }
    assert by_name["a-copy.fit"]["runs"] == by_name["a.fit"]["runs"]  # a duplicate names the stored runs
    listed = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert len(listed) == 2
