"""The retry schedule for deliveries, shared by every channel (the Svix / Standard Webhooks schedule).

Attempts happen now, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after the previous failure: eight
attempts over about 28 hours, then the delivery gives up. A peer's ``Retry-After`` can only push an attempt
later, never earlier, and is capped so a hostile or confused peer cannot park a delivery for months.
"""

from __future__ import annotations

import math

# Delay before attempt n+1, indexed by the number of attempts already made.
SCHEDULE_S: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MAX_ATTEMPTS = len(SCHEDULE_S)
# Longer than any step of the schedule, short enough that the prompt is still worth sending.
MAX_RETRY_AFTER_S = 24 * 3600.0


def next_attempt_delay(attempts_made: int, retry_after_s: float | None = None) -> float | None:
    """Seconds to wait before the next attempt, or None when the delivery should give up.

    ``attempts_made`` counts attempts already made (0 before the first, which goes out at once). When the peer
    sent ``Retry-After`` (``retry_after_s``), the larger of the two delays wins, capped at one day.
    """
    if attempts_made < 0:
        raise ValueError(f"attempts_made must be >= 0, got {attempts_made}")
    if attempts_made >= MAX_ATTEMPTS:
        return None
    delay = SCHEDULE_S[attempts_made]
    if retry_after_s is not None and math.isfinite(retry_after_s) and retry_after_s > delay:
        delay = min(retry_after_s, MAX_RETRY_AFTER_S)
    return delay
