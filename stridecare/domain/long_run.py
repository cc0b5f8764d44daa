"""Long-run classification (docs/foot-load-model.md, section 6).

Long when the timer shows at least 90 min; or at least 45 min and either the distance is at least 1.10× the
longest run of the previous 30 days or the time is at least the athlete's 90th percentile of run durations
over 12 weeks. Windows are local days ending with the run's own day (earlier runs only), as for the flags;
the distance ratio is compared as shown (two decimals). Each relative rule needs three runs in its own
window; without them only the absolute rule applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from stridecare.domain.flags import Zone, km, ratio_text, runs_in_days, shown
from stridecare.domain.history import RunSummary
from stridecare.domain.load import DEFAULT_CONSTANTS, LoadConstants

RULE_ABSOLUTE = "absolute_duration"
RULE_DISTANCE = "distance_vs_longest"
RULE_PERCENTILE = "duration_percentile"
RULE_NONE = "not_long"


@dataclass(frozen=True, slots=True)
class LongRunDecision:
    """Whether a run is long, which rule decided, a plain-language reason and the numbers behind it."""

    is_long: bool
    rule: str
    reason: str
    facts: Mapping[str, float] = field(default_factory=dict)


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * min(max(pct, 0.0), 100.0) / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def classify_long_run(
    timer_s: float,
    distance_m: float,
    start_time: datetime,
    previous_runs: Sequence[RunSummary],
    *,
    tz: Zone = "UTC",
    constants: LoadConstants = DEFAULT_CONSTANTS,
) -> LongRunDecision:
    """Decide whether a run is long; ``previous_runs`` are the athlete's runs that started before it."""
    facts: dict[str, float] = {"timer_s": timer_s, "distance_m": distance_m}
    if timer_s >= constants.long_run_absolute_min * 60:
        return LongRunDecision(
            True,
            RULE_ABSOLUTE,
            f"long run: {_minutes(timer_s)}, at least {constants.long_run_absolute_min:.0f} min",
            facts,
        )
    if timer_s < constants.long_run_relative_min * 60:
        return LongRunDecision(False, RULE_NONE, f"{_minutes(timer_s)} is not a long run", facts)

    recent = runs_in_days(previous_runs, start_time, constants.spike_window_days, tz)
    if len(recent) >= constants.min_history_runs:
        longest = max(r.distance_m for r in recent)
        facts["longest_m"] = longest
        ratio = shown(distance_m / longest) if longest > 0 else 0.0
        if longest > 0 and ratio >= constants.long_run_distance_ratio:
            facts["ratio"] = ratio
            return LongRunDecision(
                True,
                RULE_DISTANCE,
                f"long run: {km(distance_m)}, {ratio_text(ratio)} your longest of the last "
                f"{constants.spike_window_days} days ({km(longest)})",
                facts,
            )

    weeks = runs_in_days(previous_runs, start_time, constants.long_run_percentile_weeks * 7, tz)
    if len(weeks) >= constants.min_history_runs:
        p = percentile([r.timer_s for r in weeks], constants.long_run_percentile)
        facts["duration_percentile_s"] = p
        if timer_s >= p:
            return LongRunDecision(
                True,
                RULE_PERCENTILE,
                f"long run: {_minutes(timer_s)}, among your longest "
                f"{100 - constants.long_run_percentile:.0f} % of runs in "
                f"{constants.long_run_percentile_weeks} weeks (from {_minutes(p)})",
                facts,
            )
    return LongRunDecision(False, RULE_NONE, f"{_minutes(timer_s)}, {km(distance_m)} is not a long run", facts)
