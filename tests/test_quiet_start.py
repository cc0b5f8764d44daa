"""A quiet start and a clean stop: ``stridecare run`` prints its banner and what happens to runs, not a library's
warnings, and Ctrl-C stops it with one line of ours."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, make_settings
from harness import processes, settings_env, stridecare, wait_for
from webclient import free_port

pytestmark = pytest.mark.slow


def test_run_starts_without_library_warnings_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, web_port=free_port())
    proc = stridecare("run", ["run"], settings_env(settings), tmp_path / "logs")
    with processes(proc):
        wait_for(lambda: "inbox for me" in proc.output(), timeout=60, what="the banner")
        wait_for(lambda: "new athlete" in proc.output(), timeout=30, what="the worker up")
        wait_for(lambda: "log in at" in proc.output(), timeout=30, what="the web app up")
        proc.popen.send_signal(signal.SIGINT)
        code = proc.popen.wait(timeout=60)
    out = proc.output()
    assert code == 0, out
    assert "stopping: running work finishes, queued work waits for the next start" in out
    noise_lines = ("SecurityWarning", "superuser", "Hitting Ctrl+C", "Warm shutdown", "DeprecationWarning")
    for noise in (*noise_lines, "Uvicorn running", "Started server process", "Waiting for application"):
        assert noise not in out, out


def test_the_license_is_declared_as_packaging_now_expects() -> None:
    # A table (``{text = …}``) makes every editable install (``make run``) print a block of deprecation text.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and (ROOT / project["license-files"][0]).is_file()
