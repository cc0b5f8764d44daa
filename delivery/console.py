"""The embedded default channel: prompts go to ``<data home>/prompts.log`` (one JSON line each) and stderr.

A runner with no mail server still sees its prompts, and the log is easy to tail or feed to other tools.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

if sys.platform != "win32":
    import fcntl

from stridecare.crypto import Vault
from stridecare.db.models import Athlete
from stridecare.plugins import ChannelOptions, DeliveryOutcome, OutgoingMessage, SettingsChannel, Target
from stridecare.settings import Settings

LOG_NAME = "prompts.log"
# A retry after a crash between "written" and "marked sent" comes soon after; the file's tail is enough to
# spot it without reading a log that grows for years.
_TAIL_BYTES = 256 * 1024
# Terminal control sequences in an athlete name or subject must not reach the operator's terminal.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _record(message: OutgoingMessage, target: str | None) -> dict[str, Any]:
    return {
        "logged_at": datetime.now(UTC).isoformat(),
        "message_id": message.message_id,
        "prompt_id": message.prompt_id,
        "delivery_id": message.delivery_id,
        "athlete": message.athlete_name,
        "target": target,
        "subject": message.subject,
        "text": message.text,
        "done_url": message.done_url,
        "created_at": message.created_at.isoformat(),
        "payload": message.payload,
    }


@contextmanager
def _locked(handle: IO[str]) -> Iterator[None]:
    """Hold an exclusive lock so two processes neither interleave lines nor both miss each other's copy."""
    if sys.platform == "win32":  # no fcntl; a single local runner is the norm there
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _already_logged(path: Path, message_id: str) -> bool:
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - _TAIL_BYTES))
        tail = handle.read()
    for line in tail.splitlines():
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # the cut-off first line of the tail, or a line damaged by a crash
        if isinstance(entry, dict) and entry.get("message_id") == message_id:
            return True
    return False


class ConsoleOptions(ChannelOptions):
    """Whether an athlete's prompts go to the log; on unless turned off (no settings stored: on)."""

    enabled: bool = True


class ConsoleChannel(SettingsChannel):
    """Appends each prompt as one JSON line to ``prompts.log`` in the data home and echoes it to stderr."""

    name = "console"
    address_key = ""  # no address: the log is the same for everyone
    options_schema = ConsoleOptions

    def __init__(self, settings: Settings, *, echo: bool = True, stream: IO[str] | None = None) -> None:
        """Build the channel; ``echo=False`` keeps stderr quiet, ``stream`` redirects the echo (tests)."""
        super().__init__(settings)
        self.path = settings.data_home / LOG_NAME
        self._echo = echo
        self._stream = stream

    def wants(self, athlete: Athlete) -> bool:
        """Every athlete, unless they turned the console off."""
        return bool(self.options(athlete).get("enabled", True))

    def target(self, athlete: Athlete, vault: Vault) -> Target:
        """The log file (the same for everyone)."""
        return Target(str(self.path))

    def send(self, message: OutgoingMessage, target: str | None = None, secret: str | None = None) -> DeliveryOutcome:
        """Append ``message`` to the log (fsynced) unless its ``message_id`` is among the recent lines.

        ``target`` is recorded when given (for example the recipient the prompt was meant for); ``secret`` is
        ignored. A failure to write is reported as retryable, never raised.
        """
        line = json.dumps(_record(message, target), ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle, _locked(handle):
                # Decide under the lock: another writer may have created or extended the file meanwhile.
                was_empty = os.fstat(handle.fileno()).st_size == 0
                if not was_empty and _already_logged(self.path, message.message_id):
                    return DeliveryOutcome(ok=True, retry=False, detail=f"already in {self.path}")
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            if was_empty:
                # Make a new file's directory entry durable too, or a crash could lose the whole log.
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            return DeliveryOutcome(ok=False, retry=True, detail=f"cannot write {self.path}: {exc}")
        if self._echo:
            self._print(message)
        return DeliveryOutcome(ok=True, retry=False, detail=f"appended to {self.path}")

    def _print(self, message: OutgoingMessage) -> None:
        stream = self._stream or sys.stderr
        body = _UNPRINTABLE.sub("", message.text).rstrip()
        header = " ".join(
            _UNPRINTABLE.sub("", f"stridecare prompt for {message.athlete_name}: {message.subject}").split()
        )
        try:
            stream.write(f"{header}\n{body}\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stderr must not turn a logged prompt into a failed delivery
