"""Where a run came from, kept with the run so that it can be rebuilt from its source (``stridecare recompute``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Origin:
    """The source record of a file or an account's activity.

    ``kind`` names the way in: ``inbox`` (a dropped or imported file), ``export`` (a member of a Strava export
    zip), ``strava`` (the API), or a connector's name (``intervals``, ``garmin``, an out-of-tree one).
    ``account`` is the connector account's key and ``item_id`` the provider's activity id, where there are such.
    """

    kind: str
    account: str | None = None
    item_id: str | None = None


INBOX = Origin("inbox")
