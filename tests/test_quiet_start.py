"""A quiet start and a clean stop: ``stridecare run`` prints its banner and what happens to runs, not a library's
warnings, and Ctrl-C stops it with one line of ours."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, make_settings
from harness import BIN, processes, settings_env, stridecare, wait_for
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


def test_a_ctrl_c_while_the_worker_connects_stops_as_quietly(tmp_path: Path) -> None:
    """Celery installs its own Ctrl-C handler as its worker starts, and it prints a block of shutdown text. The
    Ctrl-C here arrives at the worst moment, deterministically: once that handler is in, as the worker's
    consumer starts to connect (the probe sends it from there)."""
    probe = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from celery.worker.consumer.consumer import Consumer
start = Consumer.start
def start_after_ctrl_c(self):
    os.kill(os.getpid(), signal.SIGINT)
    return start(self)
Consumer.start = start_after_ctrl_c
sys.argv = ["stridecare", "run", "--no-web"]
from stridecare_app.cli.main import main
main()
"""
    settings = make_settings(tmp_path)
    env = {**settings_env(settings), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "stopping: running work finishes, queued work waits for the next start" in text
    for noise in ("Hitting Ctrl+C", "Warm shutdown", "cold shutdown"):
        assert noise not in text, text


def test_ctrl_c_stops_even_when_the_beat_cannot_save_its_schedule(tmp_path: Path) -> None:
    """Celery's beat saves its schedule as it stops, and its stop waits until it did: with the schedule's data
    file gone (a data folder cleaned under a running process; a full disk fails the same way) that wait never
    ended, and neither a first nor a second Ctrl-C stopped ``stridecare run``."""
    settings = make_settings(tmp_path, relay_interval_s=1.0)
    proc = stridecare("run", ["run", "--no-web"], settings_env(settings), tmp_path / "logs")
    schedule = settings.data_home / "celerybeat-schedule.dat"
    with processes(proc):
        wait_for(lambda: "new athlete" in proc.output(), timeout=60, what="the worker up")
        wait_for(schedule.exists, timeout=30, what="the beat's schedule on disk")
        schedule.unlink()
        proc.popen.send_signal(signal.SIGINT)
        code = proc.popen.wait(timeout=60)
    out = proc.output()
    assert code == 0, out
    assert "stopping: running work finishes, queued work waits for the next start" in out


@pytest.mark.parametrize("command", [["run"], ["web"]])
def test_a_taken_web_port_is_said_plainly_before_any_login_link(tmp_path: Path, command: list[str]) -> None:
    """Another program on the port: before, ``stridecare run`` printed a login link to that port (which opens
    the other program) and went on without its web app, uvicorn's error lost among the lines."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = make_settings(tmp_path, web_port=port)
        out = subprocess.run(
            [str(BIN / "stridecare"), *command], env=settings_env(settings), capture_output=True, text=True, timeout=120
        )
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert f"cannot serve the web app on 127.0.0.1:{port}: address already in use" in text, text
    assert "STRIDECARE_WEB_PORT" in text and "log in at" not in text and "Traceback" not in text, text
