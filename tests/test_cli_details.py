"""Command-line details a runner reads: ``runs`` marks copies and names its units, ``done`` takes a short id."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from test_session_identity import START, fit, ingest, store_strava, strava_run
from typer.testing import CliRunner

from stridecare.db.models import Completion, Prompt
from stridecare.runtime import Runtime

FRESH = START + timedelta(hours=1)


def cli(rt: Runtime, *args: str) -> tuple[int, str]:
    from stridecare_app.cli.main import app

    env = {
        "STRIDECARE_DATA_HOME": str(rt.settings.data_home),
        "STRIDECARE_ENCRYPTION_KEYS": rt.settings.encryption_keys[0].get_secret_value(),
    }
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_runs_marks_a_copy_with_the_run_that_counts_and_names_its_units(rt: Runtime, tmp_path: Path) -> None:
    ingest(rt, fit(tmp_path / "watch.fit"), now=FRESH)
    store_strava(rt, strava_run(START, moving_time=1700, elapsed_time=1800), now=FRESH)
    code, out = cli(rt, "runs", "--athlete", "me")
    assert code == 0, out
    header, *lines = out.strip().splitlines()
    assert "load (ref. steps)" in header and "spm" in header and "km" in header
    fit_line = next(line for line in lines if " stream " in line)
    copy_line = next(line for line in lines if "= run" in line)
    assert copy_line.rstrip().endswith(f"= run {fit_line.split()[0]}")


def test_done_takes_a_unique_prefix_of_six_or_more_characters(rt: Runtime, tmp_path: Path) -> None:
    ingest(rt, fit(tmp_path / "watch.fit"), now=FRESH)
    with rt.db.read() as s:
        prompt_id = s.scalars(select(Prompt.id).where(Prompt.kind == "post_run")).one()
    code, out = cli(rt, "done", prompt_id[:5])
    assert code != 0 and "at least its first 6 characters" in out
    code, out = cli(rt, "done", "ffffffff")
    assert code != 0 and "no prompt whose id starts with 'ffffffff'" in out
    code, out = cli(rt, "done", prompt_id[:8] + "…")  # as the console shows it
    assert code == 0 and "recorded" in out
    with rt.db.read() as s:
        assert s.scalars(select(Completion.prompt_id)).all()[0] == prompt_id
