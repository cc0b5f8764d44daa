"""Terrain figures from an altitude stream, shared by every source (FIT, GPX, TCX, Strava).

One policy for all of them, so that the same session gives the same ascent and descent whichever source
carried it: the figures come from the altitude stream when the run has one, and the source's own totals
(a FIT session's ``total_ascent``, Strava's ``total_elevation_gain``) only stand in when it has none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Barometric altimeters jitter by about ±0.3 m and GPS altitude by a few metres sample to sample; a climb or
# drop counts only once the altitude has turned by this much, so noise on flat ground adds nothing.
CLIMB_THRESHOLD_M = 3.0


def climb(
    altitudes: Sequence[float | None], threshold_m: float = CLIMB_THRESHOLD_M
) -> tuple[float | None, float | None]:
    """Ascent and descent of an altitude stream, ignoring turns smaller than ``threshold_m`` (sensor noise).

    Hysteresis on turning points: a leg up or down counts from the last confirmed turning point to its own
    extreme, once the altitude has turned back by ``threshold_m`` (or at the end of the stream), so a steady
    climb counts in full and jitter smaller than the threshold counts nothing. Missing and non-finite values
    are skipped; ``(None, None)`` when fewer than two remain.
    """
    points = [a for a in altitudes if a is not None and math.isfinite(a)]
    if len(points) < 2:
        return None, None
    ascent = descent = 0.0
    turn = extreme = points[0]
    direction = 0  # +1 climbing, -1 descending, 0 not yet decided
    for a in points[1:]:
        if direction == 0:
            if abs(a - turn) >= threshold_m:
                direction, extreme = (1 if a > turn else -1), a
        elif direction == 1:
            if a > extreme:
                extreme = a
            elif extreme - a >= threshold_m:
                ascent += extreme - turn
                turn, extreme, direction = extreme, a, -1
        elif a < extreme:
            extreme = a
        elif a - extreme >= threshold_m:
            descent += turn - extreme
            turn, extreme, direction = extreme, a, 1
    if direction == 1:
        ascent += extreme - turn
    elif direction == -1:
        descent += turn - extreme
    return ascent, descent


def ascent_descent(
    altitudes: Sequence[float | None],
    *,
    source_ascent_m: float | None = None,
    source_descent_m: float | None = None,
) -> tuple[float | None, float | None]:
    """A run's ascent and descent: from its altitude stream (:func:`climb`), else the source's own totals."""
    ascent, descent = climb(altitudes)
    if ascent is None and descent is None:
        return _finite(source_ascent_m), _finite(source_descent_m)
    return ascent, descent


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
