"""The runtime context a process builds once from its settings: database, key vault, clock."""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from stridecare import clock
from stridecare.db.engine import Database
from stridecare.db.migrate import upgrade
from stridecare.settings import Settings

if TYPE_CHECKING:
    from stridecare.crypto import Vault


@dataclass(eq=False)  # identity, not value: runtimes are tracked in a weak set
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
        rt = cls(settings, db)
        _opened.add(rt)
        return rt

    @property
    def vault(self) -> Vault:
        """Encryption for tokens and secrets at rest."""
        if self._vault is None:
            from stridecare.crypto import Vault  # deferred: start-up time (cryptography; a read needs no key)

            self._vault = Vault.from_settings(self.settings)
        return self._vault

    @property
    def link_key(self) -> bytes:
        """The key that signs links in prompts."""
        from stridecare.crypto import signing_key  # deferred: start-up time (cryptography; a read needs no key)

        return signing_key(self.settings)

    def now(self) -> datetime:
        """The current time (the simulation clock when one is configured)."""
        return clock.now(self.settings)

    def close(self) -> None:
        """Release database connections."""
        self.db.dispose()


# Every runtime opened in this process, so a forked child can drop the connections it inherited.
_opened: weakref.WeakSet[Runtime] = weakref.WeakSet()


def reset_after_fork() -> None:
    """Drop inherited connections in a forked child (pool worker, embedded beat); the child opens its own.

    SQLite and PostgreSQL connections must never be shared across a fork: SQLite reports "locking protocol"
    and PostgreSQL mixes up protocol streams.
    """
    for rt in list(_opened):
        rt.db.engine.dispose(close=False)


os.register_at_fork(after_in_child=reset_after_fork)
