"""Logging set-up: plain or JSON lines, with secrets scrubbed from every record before it is written.

Besides ordinary log lines there are *events*: one record per thing a person watching ``stridecare run`` wants
to see (a file read, a prompt made or not made, a prompt sent), logged through :func:`event` with a one-line
message and its facts. :func:`setup_console` shows events and every warning and error, as lines a person can
follow or as JSON objects.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

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


EVENT_ATTR = "stridecare_event"
ConsoleMode = Literal["lines", "quiet", "json"]


def event(logger: logging.Logger, kind: str, message: str, *, level: int = logging.INFO, **facts: Any) -> None:
    """Log one console event: ``message`` for people, ``kind`` and ``facts`` (JSON values) for programs."""
    logger.log(level, "%s", message, extra={EVENT_ATTR: {"event": kind, **facts}})


def event_of(record: logging.LogRecord) -> dict[str, Any] | None:
    """The event a record carries, or None for an ordinary log line."""
    value = getattr(record, EVENT_ATTR, None)
    return value if isinstance(value, dict) else None


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _scrub_value(v) for k, v in value.items()}
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; an event's facts are fields of the object."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        facts = event_of(record)
        if facts is not None:
            data.update({k: _scrub_value(v) for k, v in facts.items() if k not in data})
        if record.exc_info:
            data["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(data, default=str)


# Errors of the machine around the process, not of its code: a full disk, a database or broker that is down or
# restarting. The console says their cause in one line (every tick would otherwise print a traceback while the
# disk stays full); ``--verbose`` and JSON logs keep the traceback.
_OUTAGE_NAMES = frozenset({"OperationalError", "InterfaceError", "DisconnectionError", "ConnectionError"})
_OUTAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ECONNREFUSED, errno.ECONNRESET})


def outage_cause(error: BaseException | None) -> BaseException | None:
    """The innermost cause of ``error`` when it is an outage (see ``_OUTAGE_NAMES``), else None."""
    chain: list[BaseException] = []
    while error is not None and error not in chain and len(chain) < 20:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for cause in reversed(chain):
        if type(cause).__name__ in _OUTAGE_NAMES or isinstance(cause, ConnectionError | TimeoutError):
            return cause
        if isinstance(cause, OSError) and cause.errno in _OUTAGE_ERRNOS:
            return cause
    return None


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS message`` for events; warnings and errors also say their level and where they come from. An
    outage's traceback becomes one line naming its cause unless ``tracebacks``."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        clock = datetime.fromtimestamp(record.created).astimezone().strftime("%H:%M:%S")
        message = record.getMessage()
        if event_of(record) is not None:
            line = f"{clock} {message}" if record.levelno < logging.WARNING else f"{clock} {record.levelname} {message}"
        else:
            line = f"{clock} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            cause = None if self.tracebacks else outage_cause(record.exc_info[1])
            if cause is not None:
                # One line: some libraries append a stack of their own to the message (Celery's beat does).
                said = next(iter(str(cause).strip().splitlines()), "")
                line = next(iter(line.splitlines()), line)
                line += scrub(f" ({type(cause).__name__}: {said})" if said else f" ({type(cause).__name__})")
            else:
                line += "\n" + scrub(self.formatException(record.exc_info))
        return line


class ConsoleFilter(logging.Filter):
    """What the console shows: events (unless quiet) and every warning and error; everything when verbose."""

    def __init__(self, mode: ConsoleMode, verbose: bool = False) -> None:
        super().__init__()
        self.mode, self.verbose = mode, verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or record.levelno >= logging.WARNING:
            return True
        return self.mode != "quiet" and event_of(record) is not None


class _LiveStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` (or ``sys.stdout``) is now, not the stream that was current when
    logging was set up.

    A stream that feeds back into logging (Celery's ``LoggingProxy`` when a worker redirects its output) is
    skipped for the process's real one: writing a record into it would drop the record or loop.
    """

    def __init__(self, which: Literal["stderr", "stdout"] = "stderr") -> None:
        self._which = which
        super().__init__()

    @property
    def stream(self) -> IO[str]:
        current: IO[str] = getattr(sys, self._which)
        original: IO[str] | None = getattr(sys, f"__{self._which}__")
        if type(current).__name__ == "LoggingProxy" and original is not None:
            return original
        return current

    @stream.setter
    def stream(self, _value: object) -> None:
        return


def setup_logging(settings: Settings) -> None:
    """Configure the root logger once per process."""
    root = logging.getLogger()
    if getattr(root, "_stridecare", False):
        root.setLevel(settings.log_level.upper())
        return
    handler = _LiveStreamHandler()
    handler.addFilter(ScrubFilter())
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # Alembic announces its dialect on every start; only real migrations are worth a line.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # httpx logs every request at INFO: a first connector sync would print a line per activity.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root._stridecare = True  # type: ignore[attr-defined]
    root._stridecare_handler = handler  # type: ignore[attr-defined]


def setup_console(settings: Settings, mode: ConsoleMode = "lines", *, verbose: bool = False) -> None:
    """Turn this process's log output into the console of ``stridecare run``: events and every warning and
    error, as lines (``lines``), warnings and errors only (``quiet``), or one JSON object per line on stdout
    (``json``). ``verbose`` shows every record at the configured level."""
    setup_logging(settings)
    root = logging.getLogger()
    old = getattr(root, "_stridecare_handler", None)
    if old is not None:
        root.removeHandler(old)
    handler: logging.Handler
    if mode == "json":
        handler = _LiveStreamHandler("stdout")
        handler.setFormatter(JsonFormatter())
    else:
        handler = _LiveStreamHandler()
        handler.setFormatter(JsonFormatter() if settings.log_json else ConsoleFormatter(tracebacks=verbose))
    handler.addFilter(ConsoleFilter(mode, verbose))
    handler.addFilter(ScrubFilter())
    root.addHandler(handler)
    root._stridecare_handler = handler  # type: ignore[attr-defined]
    # Events are INFO records: the root must let them through whatever the configured level says.
    root.setLevel(min(logging.INFO, logging.getLevelName(settings.log_level.upper())))
