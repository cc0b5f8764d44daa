"""Terrain figures from an altitude stream, shared by every file source."""

from __future__ import annotations


def climb(altitudes: list[float | None], threshold_m: float = 3.0) -> tuple[float | None, float | None]:
    """Ascent and descent from an altitude stream, ignoring wiggles below ``threshold_m`` (sensor noise)."""
    points = [a for a in altitudes if a is not None]
    if len(points) < 2:
        return None, None
    ascent = descent = 0.0
    ref = points[0]
    for a in points[1:]:
        if a - ref >= threshold_m:
            ascent += a - ref
            ref = a
        elif ref - a >= threshold_m:
            descent += ref - a
            ref = a
    return ascent, descent
