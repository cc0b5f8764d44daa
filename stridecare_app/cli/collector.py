"""The garbage collector around a command's start.

Starting a command builds several hundred thousand long-lived objects (modules, classes, SQLAlchemy's and
pydantic's schemas) and almost no garbage. Left on, the collector walks them again and again while they are
built, and once more at exit: about a quarter of the CPU of a short command such as ``stridecare runs``.

So the entry point holds the collector off (:func:`hold`), and the command's work begins with :func:`release`:
what the start built is frozen out of every later collection (the one at exit included), and the collector
runs as usual from there on. A long-running command (``run``, ``watch``, ``web``) reads its settings before it
starts serving, so it never serves with the collector held. Called in-process (a test's runner), the command
line was never held and nothing is frozen.
"""

from __future__ import annotations

import gc

_held = False


def hold() -> None:
    """Hold the collector off until :func:`release`; only the console-script entry point calls this."""
    global _held
    gc.disable()
    _held = True


def release() -> None:
    """Freeze what the start built and collect from here on; nothing when not held (or already released)."""
    global _held
    if not _held:
        return
    _held = False
    gc.freeze()
    gc.enable()
