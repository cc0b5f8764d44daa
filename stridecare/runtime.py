"""The runtime context a process builds once from its settings: database, key vault, clock."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import datetime

from stridecare import clock
from stridecare.crypto import Vault, signing_key
from stridecare.db.engine import Database
from stridecare.db.migrate import upgrade
from stridecare.settings import Settings


@dataclass
class Runtime:
    """Settings plus the resources derived from them; passed explicitly to every plain function."""

    settings: Settings
    db: Database
    _vault: Vault | None = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        """Open the database (migrating it to the newest schema unless told not to)."""
        settings.data_home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        if migrate:
            upgrade(db.engine)
        return cls(settings, db)

    @property
    def vault(self) -> Vault:
        """Encryption for tokens and secrets at rest."""
        if self._vault is None:
            self._vault = Vault.from_settings(self.settings)
        return self._vault

    @property
    def link_key(self) -> bytes:
        """The key that signs links in prompts."""
        return signing_key(self.settings)

    def now(self) -> datetime:
        """The current time (the simulation clock when one is configured)."""
        return clock.now(self.settings)

    def close(self) -> None:
        """Release database connections."""
        self.db.dispose()


_lock = threading.Lock()
_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Make ``runtime`` the one this process's Celery tasks use."""
    global _current
    with _lock:
        _current = runtime


def current() -> Runtime:
    """The installed runtime, opened from the environment's settings on first use in a worker process."""
    global _current
    with _lock:
        if _current is None:
            from stridecare.settings import load_settings

            _current = Runtime.open(load_settings())
        return _current


def reset_after_fork() -> None:
    """Drop inherited connections in a forked child (pool worker, embedded beat); the child opens its own.

    SQLite and PostgreSQL connections must never be shared across a fork: SQLite reports "locking protocol"
    and PostgreSQL mixes up protocol streams.
    """
    if _current is not None:
        _current.db.engine.dispose(close=False)


os.register_at_fork(after_in_child=reset_after_fork)
