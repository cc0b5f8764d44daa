"""Athlete handles: the one check for every way a name enters (command line, inbox settings, web, exports).

A handle names folders and files (export folders, inbox mappings) and appears in URLs, so it is kept to what
is safe in all of them: 1 to 64 characters of lower-case letters, digits, ``.``, ``_`` and ``-``, starting
with a letter or digit. That rules out path separators and ``..``, so a handle joined to a folder never
leaves it, and the length matches the database column, so a long name is refused with a sentence instead of
a database error. A valid handle no athlete has is :class:`UnknownAthlete`, with the one message every look-up
gives (through the ORM, ``stridecare.db.athletes``, or through Core, ``stridecare.db.run_list``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_HANDLE_CHARS = 64
_HANDLE = re.compile(rf"[a-z0-9][a-z0-9_.-]{{0,{MAX_HANDLE_CHARS - 1}}}")


class InvalidHandle(ValueError):
    """A name that is not a valid athlete handle; the message says why in plain words."""


def is_handle(name: str) -> bool:
    """True when ``name`` is a valid athlete handle."""
    return bool(_HANDLE.fullmatch(name))


def check_handle(name: str) -> str:
    """``name`` when it is a valid handle; raises :class:`InvalidHandle` with a readable reason otherwise."""
    if is_handle(name):
        return name
    if not name:
        raise InvalidHandle("an athlete handle cannot be empty")
    shown = name if len(name) <= 40 else name[:37] + "..."
    if len(name) > MAX_HANDLE_CHARS:
        raise InvalidHandle(f"athlete handle {shown!r} is too long: at most {MAX_HANDLE_CHARS} characters")
    raise InvalidHandle(
        f"athlete handle {shown!r} is not allowed: use lower-case letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


class UnknownAthlete(LookupError):
    """No athlete has that handle."""


def unknown_athlete(name: str, known: Iterable[str]) -> UnknownAthlete:
    """The error for a handle no athlete has, naming the ``known`` handles (in the order given)."""
    listed = ", ".join(known) or "none yet"
    return UnknownAthlete(f"no athlete named {name!r} (known: {listed}); add one with `stridecare athlete add`")
