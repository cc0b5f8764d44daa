"""A beat scheduler that only schedules while it holds the "beat" lease, so a second beat started by mistake
(or a failover beat) stays idle until the first one stops renewing."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from celery.beat import PersistentScheduler

from stridecare.db import leases
from workers.context import runtime_of

log = logging.getLogger(__name__)

LEASE = "beat"
LEASE_TTL_S = 30.0
"""How long a lease outlives its last renewal: a beat killed without a goodbye is replaced within this (plus one
standby poll). The leader renews at least every third of it, whatever Celery's own loop interval is."""
STANDBY_POLL_S = 5.0


class LeaderScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler, gated by a SQL lease renewed on every tick."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leader = False
        self._in_lease = False
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        rt = runtime_of(self.app)
        self._in_lease = True
        # Wall time here, not the simulation clock: the lease guards real processes in real time.
        try:
            held = leases.acquire(rt.db, LEASE, self._owner, datetime.now(UTC), LEASE_TTL_S)
        except Exception:
            # A database restart must not end the beat: stand by and try again shortly.
            log.warning("beat %s: cannot reach the database for the lease; retrying", self._owner, exc_info=True)
            held = False
        finally:
            self._in_lease = False
        if held != self._leader:
            log.info("beat %s: %s", self._owner, "leading" if held else "standing by (another beat leads)")
            self._leader = held
        if not held:
            return min(float(self.max_interval), STANDBY_POLL_S)
        result: float = super().tick(*args, **kwargs)
        return min(result, LEASE_TTL_S / 3)

    def close(self) -> None:
        """Give the lease back (once) and close Celery's schedule file."""
        # Celery's SIGTERM handler calls close() from inside whatever the beat is doing. Inside the lease's own
        # transaction a release would wait for the row lock that transaction holds, and on PostgreSQL wait forever;
        # the handler's SystemExit unwinds that transaction and Celery calls close() again, which releases.
        if self._leader and not self._in_lease:
            try:
                leases.release(runtime_of(self.app).db, LEASE, self._owner)
                self._leader = False
                log.info("beat %s: lease given back", self._owner)
            except Exception:
                log.warning("beat %s: could not give the lease back; it expires by itself", self._owner, exc_info=True)
        super().close()
