"""Logging set-up: plain or JSON lines, with secrets scrubbed from every record before it is written."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from stridecare.settings import Settings

# Bearer tokens, OAuth fields in query strings and bodies, Standard Webhooks secrets and Fernet tokens.
_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|code|hub\.verify_token|verify_token|password|token)"
        r"['\"]?\s*[:=]\s*['\"]?)[^'\"&\s,}]+"
    ),
    re.compile(r"whsec_[A-Za-z0-9+/=]+"),
    re.compile(r"gAAAAA[A-Za-z0-9_-]{20,}={0,2}"),
]


def scrub(text: str) -> str:
    """Replace anything that looks like a token or secret with ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text) if pattern.groups else pattern.sub("***", text)
    return text


class ScrubFilter(logging.Filter):
    """Renders each record's message once and scrubs it (arguments included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not kill the caller
            message = str(record.msg)
        record.msg = scrub(message)
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(data)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now, not the stream that was current when logging was set up."""

    @property
    def stream(self) -> object:
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        return


def setup_logging(settings: Settings) -> None:
    """Configure the root logger once per process."""
    root = logging.getLogger()
    if getattr(root, "_stridecare", False):
        root.setLevel(settings.log_level.upper())
        return
    handler = _StderrHandler()
    handler.addFilter(ScrubFilter())
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # Alembic announces its dialect on every start; only real migrations are worth a line.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    root._stridecare = True  # type: ignore[attr-defined]
