"""ConsoleChannel: one fsynced JSON line per prompt in the data home, and a short echo to stderr."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import threading
from pathlib import Path

import pytest

from delivery.console import ConsoleChannel
from stridecare.plugins import Channel, OutgoingMessage
from stridecare.settings import Settings


def make_message(message_id: str = "prompt-41-console", athlete: str = "Ada") -> OutgoingMessage:
    return OutgoingMessage(
        prompt_id="41",
        delivery_id=7,
        message_id=message_id,
        athlete_name=athlete,
        recipient=None,
        subject="Ada: foot care after your 21.1 km run",
        text="1. Roll out your soles (1 min per foot)\n\nGeneral wellness advice, not medical advice.\n",
        html="<p>unused here</p>",
        payload={"type": "prompt.created", "data": {"prompt_id": "41"}},
        unsubscribe_url=None,
        done_url="https://care.example.org/done/41",
        created_at=dt.datetime(2026, 5, 4, 7, 30, tzinfo=dt.UTC),
    )


def read_log(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_appends_one_json_line_and_echoes(tmp_path: Path) -> None:
    home = tmp_path / "not-yet-created"
    stream = io.StringIO()
    channel = ConsoleChannel(Settings(data_home=home), stream=stream)
    assert isinstance(channel, Channel)
    assert channel.name == "console"

    outcome = channel.send(make_message(), "ada@example.test", None)

    assert outcome.ok
    [entry] = read_log(home / "prompts.log")
    assert entry["message_id"] == "prompt-41-console"
    assert entry["prompt_id"] == "41"
    assert entry["target"] == "ada@example.test"
    assert entry["payload"] == {"type": "prompt.created", "data": {"prompt_id": "41"}}
    assert entry["created_at"] == "2026-05-04T07:30:00+00:00"
    assert str(entry["logged_at"]).endswith("+00:00")
    echoed = stream.getvalue()
    assert "Ada: foot care after your 21.1 km run" in echoed
    assert "Roll out your soles" in echoed


def test_echo_can_be_turned_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ConsoleChannel(Settings(data_home=tmp_path), echo=False).send(make_message(), "", None).ok
    assert capsys.readouterr().err == ""
    assert len(read_log(tmp_path / "prompts.log")) == 1


def test_default_echo_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleChannel(Settings(data_home=tmp_path)).send(make_message(), "", None)
    captured = capsys.readouterr()
    assert "Roll out your soles" in captured.err
    assert captured.out == ""


def test_a_retry_of_the_same_message_is_not_logged_twice(tmp_path: Path) -> None:
    channel = ConsoleChannel(Settings(data_home=tmp_path), echo=False)
    assert channel.send(make_message("a"), "", None).ok
    assert channel.send(make_message("b"), "", None).ok
    again = ConsoleChannel(Settings(data_home=tmp_path), echo=False).send(make_message("a"), "", None)
    assert again.ok
    assert [e["message_id"] for e in read_log(tmp_path / "prompts.log")] == ["a", "b"]


def test_concurrent_writers_neither_interleave_nor_duplicate(tmp_path: Path) -> None:
    settings = Settings(data_home=tmp_path)
    # A text well above PIPE_BUF makes torn or interleaved writes visible as invalid JSON.
    long_text = "x" * 20_000

    def write(message_id: str) -> None:
        message = dataclasses.replace(make_message(message_id), text=long_text)
        ConsoleChannel(settings, echo=False).send(message, "", None)

    threads = [threading.Thread(target=write, args=(f"id-{i % 4}",)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = sorted(str(e["message_id"]) for e in read_log(tmp_path / "prompts.log"))
    assert ids == ["id-0", "id-1", "id-2", "id-3"]


def test_terminal_control_sequences_are_not_echoed(tmp_path: Path) -> None:
    stream = io.StringIO()
    hostile = "Ada\x1b]0;pwned\x07\x1b[2J\nFAKE LINE"
    ConsoleChannel(Settings(data_home=tmp_path), stream=stream).send(make_message(athlete=hostile), "", None)
    echoed = stream.getvalue()
    assert "\x1b" not in echoed
    assert "\x07" not in echoed
    assert "\nFAKE LINE" not in echoed
    # The log keeps the name exactly; JSON escapes it safely.
    assert read_log(tmp_path / "prompts.log")[0]["athlete"] == hostile


def test_unwritable_log_is_a_retryable_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    outcome = ConsoleChannel(Settings(data_home=blocker), echo=False).send(make_message(), "", None)
    assert (outcome.ok, outcome.retry) == (False, True)
