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


class LeaderScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler, gated by a SQL lease renewed on every tick."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leader = False
        super().__init__(*args, **kwargs)

    def _lease_ttl(self) -> float:
        return max(3 * float(self.max_interval), 15.0)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        rt = runtime_of(self.app)
        # Wall time here, not the simulation clock: the lease guards real processes in real time.
        try:
            held = leases.acquire(rt.db, LEASE, self._owner, datetime.now(UTC), self._lease_ttl())
        except Exception:
            # A database restart must not end the beat: stand by and try again shortly.
            log.warning("beat %s: cannot reach the database for the lease; retrying", self._owner, exc_info=True)
            held = False
        if held != self._leader:
            log.info("beat %s: %s", self._owner, "leading" if held else "standing by (another beat leads)")
            self._leader = held
        if not held:
            return min(float(self.max_interval), 5.0)
        result: float = super().tick(*args, **kwargs)
        return min(result, self._lease_ttl() / 3)

    def close(self) -> None:
        if self._leader:
            leases.release(runtime_of(self.app).db, LEASE, self._owner)
        super().close()
