"""``stridecare athlete add|set``: a webhook URL the request-forgery guard will refuse is flagged at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stridecare_app.cli.main import app


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://2130706433/hook", "http://[::ffff:127.0.0.1]/"])
def test_a_webhook_on_a_private_address_is_stored_with_a_warning(cli_env: Path, url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["athlete", "add", "ann", "--webhook", url])
    assert result.exit_code == 0, result.output
    assert "127.0.0.1" in result.stderr and "STRIDECARE_WEBHOOK_ALLOWED_NETWORKS" in result.stderr
    assert "whsec_" in result.stdout  # stored all the same: the operator may allow the network later


def test_no_warning_once_the_network_is_allowed(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIDECARE_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
    runner = CliRunner()
    assert runner.invoke(app, ["athlete", "add", "ann"]).exit_code == 0
    result = runner.invoke(app, ["athlete", "set", "ann", "--webhook", "http://127.0.0.1:9/hook"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr


def test_a_url_that_is_not_http_is_refused(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["athlete", "add", "ann", "--webhook", "file:///etc/passwd"])
    assert result.exit_code == 2
    assert "https://" in result.stderr
