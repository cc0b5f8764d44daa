"""The decode-attempt guard's rows, step by step: written before a read, taken over (counted once more) when the
reader that wrote it died, left alone while a live reader holds it, refused after two deaths, gone at the end;
and the count of unfinished reads from the import log."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from ingest import service
from ingest.store import RETRY
from stridecare.db.athletes import ensure_athlete
from stridecare.db.models import DecodeAttempt, ImportedFile
from stridecare.runtime import Runtime

NOW = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)
DIGEST = "cd" * 32


def _row(rt: Runtime) -> tuple[int, str, datetime, str] | None:
    with rt.db.read() as s:
        row = s.get(DecodeAttempt, DIGEST)
        return None if row is None else (row.attempts, row.owner, row.started_at, row.path)


def test_an_attempt_is_written_taken_over_after_a_death_and_ended(rt: Runtime) -> None:
    assert service.begin_attempt(rt.db, DIGEST, Path("/inbox/a.fit"), NOW, stale_after_s=600)
    assert _row(rt) == (1, service._owner(), NOW, "/inbox/a.fit")
    # Held by this live process and not stale: left as it is (another thread is reading the same content).
    assert service.begin_attempt(rt.db, DIGEST, Path("/inbox/a.fit"), NOW + timedelta(seconds=5), stale_after_s=600)
    assert _row(rt) == (1, service._owner(), NOW, "/inbox/a.fit")
    # Stale: its reader is taken for dead, and the attempt is counted again, now ours.
    later = NOW + timedelta(hours=1)
    assert service.begin_attempt(rt.db, DIGEST, Path("/inbox/b.fit"), later, stale_after_s=600)
    assert _row(rt) == (2, service._owner(), later, "/inbox/a.fit")
    # A second death: not read again now.
    assert not service.begin_attempt(rt.db, DIGEST, Path("/inbox/a.fit"), later + timedelta(hours=1), 600)
    service.end_attempt(rt.db, DIGEST)
    assert _row(rt) is None


def test_a_dead_readers_row_is_taken_over_at_once(rt: Runtime) -> None:
    # Our pid with another token: an earlier life of this process, dead whatever the time.
    earlier = f"{socket.gethostname()}:{os.getpid()}:0123456789ab"
    with rt.db.transaction() as s:
        s.add(DecodeAttempt(content_hash=DIGEST, path="/x.fit", owner=earlier, started_at=NOW, attempts=1))
    assert service.begin_attempt(rt.db, DIGEST, Path("/x.fit"), NOW + timedelta(seconds=1), stale_after_s=600)
    assert _row(rt) == (2, service._owner(), NOW + timedelta(seconds=1), "/x.fit")


def test_unfinished_reads_are_the_most_any_import_log_counts_for_the_content(rt: Runtime) -> None:
    assert service.unfinished_reads(rt.db, DIGEST) == 0
    with rt.db.transaction() as s:
        for name, status, attempts in (("a", RETRY, 2), ("b", RETRY, 3), ("c", "rejected", 4)):
            athlete = ensure_athlete(s, name, rt.settings)
            s.add(
                ImportedFile(
                    athlete_id=athlete.id,
                    content_hash=DIGEST,
                    path=f"/{name}.fit",
                    size=1,
                    status=status,
                    source="fit",
                    attempts=attempts,
                )
            )
    assert service.unfinished_reads(rt.db, DIGEST) == 3
    assert service.unfinished_reads(rt.db, "ef" * 32) == 0
    with rt.db.read() as s:
        assert s.scalar(service.unfinished_query(DIGEST)) == 3
        assert len(list(s.scalars(select(ImportedFile.id)))) == 3
