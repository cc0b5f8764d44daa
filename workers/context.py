"""The runtime a Celery app's tasks run against: passed in by the process that made the app, never a global.

Tasks are thin (``workers/tasks.py``): each finds its runtime through ``runtime_of(self.app)`` and hands it to
one plain function, which is what tests call directly.
"""

from __future__ import annotations

import threading

from celery import Celery

from stridecare.runtime import Runtime
from stridecare.settings import Settings, load_settings

_open_lock = threading.Lock()


def runtime_of(celery: Celery) -> Runtime:
    """The runtime ``celery``'s tasks use: the one it was made with, or one opened once from its settings."""
    with _open_lock:
        rt: Runtime | None = getattr(celery, "stridecare_runtime", None)
        if rt is None:
            settings: Settings = getattr(celery, "stridecare_settings", None) or load_settings()
            rt = Runtime.open(settings)
            celery.stridecare_runtime = rt
        return rt
