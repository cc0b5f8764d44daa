"""An outage (a full disk, a database or broker that is down) reads on the console as one line naming its cause,
not a traceback every few seconds; a bug keeps its traceback, and ``--verbose`` keeps every traceback."""

from __future__ import annotations

import errno
import logging
import sqlite3
import traceback
from pathlib import Path

import pytest
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from stridecare.logging import ConsoleFormatter, outage_cause


def _read_only_write(tmp_path: Path) -> OperationalError:
    """A real SQLite write refused by the machine (a read-only database stands in for a full disk: both are
    ``sqlite3.OperationalError`` under SQLAlchemy's)."""
    path = tmp_path / "queue.db"
    sqlite3.connect(path).executescript("CREATE TABLE t (x INTEGER);")
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
    except OperationalError as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError("the write was not refused")


def _record(error: BaseException, message: str) -> logging.LogRecord:
    try:
        raise error
    except BaseException as raised:
        exc_info = (type(raised), raised, raised.__traceback__)
    return logging.LogRecord("celery.beat", logging.ERROR, __file__, 1, message, None, exc_info)


def _broker_error(tmp_path: Path) -> BrokerError:
    """As kombu re-raises the database's error when a task cannot be queued."""
    try:
        try:
            raise _read_only_write(tmp_path)
        except OperationalError as inner:
            raise BrokerError(str(inner)) from inner
    except BrokerError as outer:
        return outer


def test_an_outage_is_one_line_with_its_cause(tmp_path: Path) -> None:
    stack = "".join(traceback.format_stack())  # Celery's beat appends its stack to the message itself
    record = _record(_broker_error(tmp_path), f"Message Error: Couldn't apply scheduled task tick\n{stack}")
    out = ConsoleFormatter().format(record)
    assert "\n" not in out, out
    assert "Traceback" not in out and "File " not in out
    assert "ERROR celery.beat: Message Error: Couldn't apply scheduled task tick" in out
    assert out.endswith("(OperationalError: attempt to write a readonly database)"), out


def test_verbose_keeps_the_traceback_of_an_outage(tmp_path: Path) -> None:
    out = ConsoleFormatter(tracebacks=True).format(_record(_broker_error(tmp_path), "could not hand a.fit on"))
    assert "Traceback (most recent call last)" in out and "readonly database" in out


@pytest.mark.parametrize("error", [ValueError("bad value"), KeyError("x"), OSError(22, "Invalid argument")])
def test_a_bug_keeps_its_traceback(error: BaseException) -> None:
    assert outage_cause(error) is None
    out = ConsoleFormatter().format(_record(error, "checking files failed"))
    assert "Traceback (most recent call last)" in out


def test_a_full_disk_and_a_refused_connection_are_outages() -> None:
    assert outage_cause(OSError(errno.ENOSPC, "No space left on device")) is not None
    assert outage_cause(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) is not None
