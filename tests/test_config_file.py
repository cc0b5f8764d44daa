"""One settings file in the data home: `stridecare config set/unset/show`, read by `stridecare run` and every other
command, the environment still winning; the README's "another terminal" flow against a running runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from fitgen import write_activity
from harness import BIN, SmtpSink, WebhookReceiver, processes, stridecare, wait_for
from typer.testing import CliRunner

from stridecare.settings import SETTINGS_FILE, Settings
from stridecare_app.cli import main as _commands  # noqa: F401  (attaches every command to app)
from stridecare_app.cli.app import app

KEY = "6vYg1GDm8N3gTk6u0p5mYw4QG1vXh2Jq9v6Tq3l0W0c="


def _env(home: Path, **extra: str) -> dict[str, str]:
    """A terminal's environment: nothing of stridecare's but where its data lives (and what ``extra`` adds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIDECARE_")}
    return {**env, "STRIDECARE_DATA_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}


def _terminal(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``stridecare ARGS`` as a process of its own, as typed in another terminal."""
    done = subprocess.run([str(BIN / "stridecare"), *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _cli(home: Path, *args: str, ok: bool = True, **env: str) -> Result:
    """``stridecare ARGS`` in this process, with the data home ``home`` and the variables ``env``."""
    result = CliRunner().invoke(app, list(args), env={"STRIDECARE_DATA_HOME": str(home), **env})
    if ok:
        assert result.exit_code == 0, result.stdout + result.stderr
    return result


def test_config_set_unset_and_show_keep_one_checked_file_with_secrets_hidden(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = home / SETTINGS_FILE
    assert "no settings yet" in _cli(home, "config", "show").stdout

    # Any spelling of a name: the variable, the field, dashes; the model's constants under [load].
    _cli(home, "config", "set", "STRIDECARE_SMTP_HOST", "smtp.example.org")
    _cli(home, "config", "set", "smtp-port", "2525")
    _cli(home, "config", "set", "smtp_password", "hunter2")
    _cli(home, "config", "set", "webhook_allowed_networks", "127.0.0.0/8, 192.168.0.0/16")
    _cli(home, "config", "set", "STRIDECARE_LOAD_DEFAULT_MASS_KG", "72.5")
    stored = tomllib.loads(path.read_text())
    assert stored == {
        "smtp_host": "smtp.example.org",
        "smtp_port": 2525,  # typed as the setting reads it
        "smtp_password": "hunter2",
        "webhook_allowed_networks": ["127.0.0.0/8", "192.168.0.0/16"],
        "load": {"default_mass_kg": 72.5},
    }
    assert path.stat().st_mode & 0o077 == 0, "the file may hold secrets: only its owner reads it"

    # A person's comment survives the next change.
    path.write_text("# my mail server\n" + path.read_text())
    _cli(home, "config", "set", "smtp_security", "SSL")
    assert path.read_text().startswith("# my mail server\n")
    assert tomllib.loads(path.read_text())["smtp_security"] == "ssl"

    # Every command reads it.
    shown = _cli(home, "settings", "--json").stdout
    effective = json.loads(shown)
    assert effective["STRIDECARE_SMTP_HOST"] == "smtp.example.org"
    assert effective["STRIDECARE_SMTP_PORT"] == "2525"
    assert effective["STRIDECARE_LOAD_DEFAULT_MASS_KG"] == "72.5"
    assert "hunter2" not in shown

    show = _cli(home, "config", "show").stdout
    assert str(path) in show and "smtp.example.org" in show and "hunter2" not in show
    assert re.search(r"smtp_password\s+= \*\*\* \(set\)", show), show
    as_json = json.loads(_cli(home, "config", "show", "--json").stdout)
    assert as_json["settings"]["smtp_password"] == "*** (set)" and as_json["settings"]["smtp_port"] == 2525

    # The environment wins, and both `set` and `show` say so.
    note = _cli(home, "config", "set", "smtp_port", "2526", STRIDECARE_SMTP_PORT="587").stderr
    assert "STRIDECARE_SMTP_PORT in the environment wins" in note
    shown = _cli(home, "config", "show", STRIDECARE_SMTP_PORT="587").stdout
    assert "STRIDECARE_SMTP_PORT in the environment wins" in shown
    assert (
        json.loads(_cli(home, "settings", "--json", STRIDECARE_SMTP_PORT="587").stdout)["STRIDECARE_SMTP_PORT"] == "587"
    )

    # Bad input: a clear message, and the file as it was.
    before = path.read_bytes()
    bad = _cli(home, "config", "set", "smtp_port", "many", ok=False)
    assert bad.exit_code == 2 and "smtp_port" in bad.stderr and "unchanged" in bad.stderr
    typo = _cli(home, "config", "set", "smtp_hots", "x", ok=False)
    assert typo.exit_code == 2 and "did you mean smtp_host" in typo.stderr
    zone = _cli(home, "config", "set", "default_timezone", "Mars/Olympus", ok=False)
    assert "unknown time zone" in zone.stderr
    home_in_file = _cli(home, "config", "set", "data_home", "/elsewhere", ok=False)
    assert "STRIDECARE_DATA_HOME" in home_in_file.stderr
    assert path.read_bytes() == before

    _cli(home, "config", "unset", "smtp_password")
    _cli(home, "config", "unset", "load.default_mass_kg")
    assert "nothing to do" in _cli(home, "config", "unset", "smtp_password").stdout
    stored = tomllib.loads(path.read_text())
    assert "smtp_password" not in stored and "load" not in stored
    assert json.loads(_cli(home, "settings", "--json").stdout)["STRIDECARE_SMTP_PASSWORD"] == ""


def test_the_file_sits_below_the_environment_and_explicit_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / SETTINGS_FILE).write_text(
        'smtp_host = "file.example.org"\nsmtp_port = 2525\ninboxes = ["anna=/srv/anna"]\n'
        "[load]\ndefault_mass_kg = 80\nexponent = 3.5\n"
    )
    monkeypatch.setenv("STRIDECARE_DATA_HOME", str(home))
    monkeypatch.setenv("STRIDECARE_SMTP_PORT", "465")
    monkeypatch.setenv("STRIDECARE_LOAD_DEFAULT_MASS_KG", "60")
    settings = Settings()
    assert (settings.smtp_host, settings.smtp_port) == ("file.example.org", 465)
    assert settings.inbox_map() == [("anna", Path("/srv/anna"))]
    # A [load] table does not hide a STRIDECARE_LOAD_* variable, and keeps the constants it sets alone.
    assert settings.load.default_mass_kg == 60
    assert settings.load.exponent == pytest.approx(3.5)
    assert Settings(smtp_host="explicit").smtp_host == "explicit"
    # Another data home, another file (none): the defaults.
    assert Settings(data_home=tmp_path / "other").smtp_host is None

    # A file that does not parse names itself; the command line says so in one line and `config` can mend it.
    (home / SETTINGS_FILE).write_text("smtp_host = \n")
    with pytest.raises(ValueError, match=str(home / SETTINGS_FILE)):
        Settings()
    broken = _cli(home, "status", ok=False)
    assert broken.exit_code == 2 and f"settings file {home / SETTINGS_FILE}" in broken.stderr
    assert "Traceback" not in broken.stderr


@pytest.mark.slow(longest=True)
def test_the_readme_flow_another_terminal_sees_the_settings_stridecare_run_was_started_with(tmp_path: Path) -> None:
    """`stridecare run` in one terminal; in another, `health`, `athlete set --email/--webhook` and `digest
    --preview` with nothing but the data home in their environment agree with it: SMTP is configured, the
    webhook's network is allowed, and the runner sends the prompt by both."""
    sink = SmtpSink().start()
    receiver = WebhookReceiver().start()
    home = tmp_path / "home"
    terminal = _env(home, STRIDECARE_ENCRYPTION_KEYS=KEY)
    try:
        for name, value in [
            ("smtp_host", "127.0.0.1"),
            ("smtp_port", str(sink.port)),
            ("smtp_security", "none"),
            ("webhook_allowed_networks", "127.0.0.0/8"),
            ("settle_seconds", "0.3"),
        ]:
            _cli(home, "config", "set", name, value)  # once, by whoever runs it
        run = stridecare("run", ["run", "--no-web"], terminal, tmp_path / "logs")
        with processes(run):
            wait_for(lambda: "inbox for me" in run.output(), timeout=60, what="the runner's banner")

            # "In another terminal":
            health = _terminal(terminal, "health", ok=False).stdout
            assert re.search(rf"ok\s+smtp\s+127\.0\.0\.1:{sink.port} \(none\): reachable", health), health
            email = _terminal(terminal, "athlete", "set", "me", "--email", "me@example.org")
            assert "warning" not in email.stderr and "SMTP" not in email.stderr, email.stderr
            hook = _terminal(terminal, "athlete", "set", "me", "--webhook", receiver.url)
            assert "refused" not in hook.stderr, hook.stderr
            secret = re.search(r"whsec_\S+", hook.stdout + hook.stderr)
            assert secret, hook.stdout + hook.stderr
            receiver.secret = secret.group(0)
            preview = _terminal(terminal, "digest", "--preview", "me", "--out", str(tmp_path / "digest.html"))
            assert "SMTP" not in preview.stdout + preview.stderr

            inbox = home / "inbox"
            staging = tmp_path / "staging"
            staging.mkdir()
            write_activity(staging / "fresh.fit", start=datetime.now(UTC) - timedelta(hours=2), duration_s=1800)
            os.replace(staging / "fresh.fit", inbox / "fresh.fit")
            wait_for(
                lambda: sink.messages and receiver.delivered_ids(), timeout=150, what="the prompt by email and webhook"
            )
        assert sink.messages[0]["To"] == "me@example.org"
    finally:
        sink.stop()
        receiver.stop()
