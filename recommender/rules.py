"""Pure decision rules: which routines to prompt after a run, and when the scheduled prompts are due.

Every function takes the facts it needs and returns a value; the worker layer reads the database, calls these,
and stores the decision (``Prompt.routines``, ``reasons``, ``rule``, ``facts``). Times are timezone-aware;
local days are the athlete's.

Definitions the design leaves open:

* Fast run: average speed (distance / timer) at or above the athlete's 80th percentile of the previous
  90 days' runs *and* at least 5 % above their median. The percentile adapts to each athlete; the 5 %
  margin keeps an athlete whose runs are all alike from having a "fast" run every fifth day. It needs five
  earlier runs.
* Easy day (for toe isolation): the run is neither long nor fast and raised no spike flag.
* Toe isolation: at most three per ISO week, never on consecutive days (strength work wants a day between)
  and never on the day after a spike flag.
* Emphasised toe spread: the last 7 days' load above 1.2 × the weekly average of the 28 days *before* the run's
  day (their sum / 4). The run is never part of what it is compared with: measured against an average that
  includes it, a first run after a month off would read "4.00× your weekly average". When those 28 days hold
  no load at all, there is nothing to compare with and the reason says so instead of giving a ratio (and still
  emphasises: feet back after four weeks off). It needs 28 days of history, like the ACWR, because a short
  history makes the average meaningless.
* Toe isolation's reason counts isolation sessions this week, and says so ("isolation session 2 of up
  to 3 this week"): a count of runs it is not.
* Ratios are compared as the reason shows them (two decimals, ``stridecare.domain.flags.shown``): nothing
  displayed as "1.20×" fires at "above 1.2".
* Each reason appears once in a decision; the run's flags are carried in ``Decision.flags`` only.
* Downhill roll-out: needs three earlier runs with an altitude track and a non-zero median.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from recommender.figures import WEEKLY_AVERAGE_BEFORE, figure_text, figure_values, with_unit
from recommender.quiet_hours import first_free_instant
from recommender.routines import (
    BALANCE,
    MAX_BALANCE_LEVEL,
    ROLL_OUT,
    ROUTINE_ORDER,
    ROUTINES,
    TOE_EXTENSION,
    TOE_ISOLATION,
    TOE_SPREAD,
    balance_level,
)
from stridecare.domain.flags import SPIKE_FLAGS, Flag, km, ratio_text, shown
from stridecare.domain.long_run import LongRunDecision, percentile

RULES_VERSION = "v1"
TRAIL_SPORTS = frozenset({"trail_running"})
TRAIL_SUB_SPORTS = frozenset({"trail", "mountain"})


@dataclass(frozen=True, slots=True)
class RuleConstants:
    """Thresholds of the routine rules (docs/routines.md), with the design's defaults."""

    downhill_ratio: float = 1.2
    downhill_min_timer_min: float = 30.0
    fast_percentile: float = 80.0
    fast_min_ratio_to_median: float = 1.05
    fast_min_runs: int = 5
    spread_emphasis_ratio: float = 1.2
    emphasis_min_history_days: int = 28
    min_history_runs: int = 3
    toe_isolation_per_week: int = 3
    balance_sessions_to_progress: int = 3


DEFAULT_RULES = RuleConstants()


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the rules need of the run just finished. ``downhill_impact`` is None without an altitude track."""

    start_time: datetime
    end_time: datetime
    timer_s: float
    distance_m: float
    load: float
    long_run: LongRunDecision
    downhill_impact: float | None = None
    flags: Sequence[Flag] = ()
    sport: str = "running"
    sub_sport: str | None = None

    @property
    def avg_speed_mps(self) -> float:
        """Distance over timer time; 0 for a run without timer time."""
        return self.distance_m / self.timer_s if self.timer_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class HistoryFacts:
    """The athlete's recent past, as the caller reads it from the database (this run excluded unless noted).

    ``recent_downhill_impacts`` and ``recent_speeds_mps``: one value per run of the previous 90 days
    (downhill only for runs with an altitude track). ``load_7d`` / ``load_28d``: sums of daily load over
    the 7 and 28 local days ending on the run's day, *this run included*. ``load_28d_before``: the sum over
    the 28 local days before the run's day (its day excluded), the weeks ``load_7d`` is compared with;
    None when unknown (the toe spread is then not emphasised). ``history_days``: days since the
    first day of history, that day being 1. ``last_spike_day``: local day of the latest earlier run with a
    spike flag. ``toe_isolation_days``: local days on which toe isolation was already prompted (at least
    this ISO week and the day before).
    """

    recent_downhill_impacts: Sequence[float] = ()
    recent_speeds_mps: Sequence[float] = ()
    load_7d: float = 0.0
    load_28d: float = 0.0
    load_28d_before: float | None = None
    history_days: int = 0
    last_spike_day: date | None = None
    toe_isolation_days: Collection[date] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """What to prompt and why. ``routines`` in display order; ``reasons`` in plain language with numbers;
    ``rule`` names the rules that fired (stored as ``Prompt.rule``); ``facts`` the numbers they used.

    ``flags`` are the run's caution flags for the prompt to mention ("consider …"); ``emphasis`` lists
    routines to highlight; ``balance_level`` is the level to show when ``balance`` is among the routines.
    """

    routines: list[str]
    reasons: list[str]
    rule: str
    facts: dict[str, object]
    local_day: date | None = None
    flags: list[Flag] = field(default_factory=list)
    emphasis: list[str] = field(default_factory=list)
    balance_level: int = 0


# -- helpers ------------------------------------------------------------------


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")


def _pace(speed_mps: float) -> str:
    if speed_mps <= 0:
        return "-"
    # Half up, as people round a pace: round() would show 312.5 s as 5:12.
    seconds = int(1000 / speed_mps + 0.5)
    return f"{seconds // 60}:{seconds % 60:02d}/km"


def _dose(key: str) -> str:
    return ROUTINES[key].dose


def iso_week_key(day: date) -> str:
    """``"2025-W13"``: the dedupe key of a weekly prompt."""
    iso = day.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def is_trail(sport: str, sub_sport: str | None) -> bool:
    """True for trail runs (FIT ``sub_sport`` trail, Strava ``TrailRun`` mapped to ``trail_running``)."""
    return sport in TRAIL_SPORTS or (sub_sport is not None and sub_sport.lower() in TRAIL_SUB_SPORTS)


def fast_threshold_mps(recent_speeds_mps: Sequence[float], *, constants: RuleConstants = DEFAULT_RULES) -> float | None:
    """The speed from which a run counts as fast for this athlete, or None without enough history."""
    speeds = [v for v in recent_speeds_mps if v > 0]
    if len(speeds) < constants.fast_min_runs:
        return None
    return max(
        percentile(speeds, constants.fast_percentile),
        constants.fast_min_ratio_to_median * statistics.median(speeds),
    )


def downhill_median(
    recent_downhill_impacts: Sequence[float], *, constants: RuleConstants = DEFAULT_RULES
) -> float | None:
    """The athlete's median downhill impact, or None with fewer than three runs or a median of 0."""
    if len(recent_downhill_impacts) < constants.min_history_runs:
        return None
    median = float(statistics.median(recent_downhill_impacts))
    return median if median > 0 else None


# -- toe isolation and balance progression ------------------------------------------------------------------


def toe_isolation_due(
    today: date,
    given_days: Iterable[date],
    *,
    last_spike_day: date | None = None,
    hard_day: bool = False,
    constants: RuleConstants = DEFAULT_RULES,
) -> bool:
    """Whether toe isolation may be prompted on local day ``today`` (an easy-run day or a rest day).

    False on a hard day (long, fast or spike run today), on the day of or after a spike flag, when three
    sessions were already prompted this ISO week, or when one was prompted today or yesterday.
    """
    if hard_day:
        return False
    if last_spike_day is not None and last_spike_day <= today <= last_spike_day + timedelta(days=1):
        return False
    days = set(given_days)
    if today in days or today - timedelta(days=1) in days:
        return False
    week = today.isocalendar()[:2]
    this_week = sum(1 for d in days if d.isocalendar()[:2] == week)
    return this_week < constants.toe_isolation_per_week


def next_balance_level(current_level: int, completed_at_level: int, *, constants: RuleConstants = DEFAULT_RULES) -> int:
    """The level after ``completed_at_level`` completed sessions at ``current_level``: one up after three."""
    level = min(max(current_level, 0), MAX_BALANCE_LEVEL)
    if completed_at_level >= constants.balance_sessions_to_progress:
        return min(level + 1, MAX_BALANCE_LEVEL)
    return level


def balance_level_from_completions(completed_levels: Iterable[int], *, constants: RuleConstants = DEFAULT_RULES) -> int:
    """The current level replayed from completed sessions' levels, oldest first (``Completion.level``).

    Only sessions done at the level in force count towards the next step; a late report of an easier level
    does not.
    """
    level = 0
    count = 0
    for done in completed_levels:
        if done != level:
            continue
        count += 1
        if count >= constants.balance_sessions_to_progress and level < MAX_BALANCE_LEVEL:
            level += 1
            count = 0
    return level


# -- post-run ------------------------------------------------------------------


def post_run_decision(
    run: RunFacts,
    history: HistoryFacts,
    *,
    tz: str | ZoneInfo,
    given_today: Collection[str] = (),
    balance_level_now: int = 0,
    constants: RuleConstants = DEFAULT_RULES,
) -> Decision:
    """Routines to prompt after ``run`` (docs/routines.md triggers).

    ``given_today`` are routines already prompted on the run's local end day: none is prompted twice on one
    local day. The decision carries the run's flags so the prompt can suggest ("consider …"); an empty
    ``routines`` means send nothing. Freshness is the caller's check (:func:`is_fresh`) before calling.
    """
    _aware(run.end_time, "RunFacts.end_time")
    day = run.end_time.astimezone(_zone(tz)).date()
    triggers: dict[str, list[tuple[str, str]]] = {}
    facts: dict[str, object] = {
        "distance_m": run.distance_m,
        "timer_s": run.timer_s,
        "load": run.load,
        "long_run": run.long_run.is_long,
        "long_rule": run.long_run.rule,
        "flags": [f.name for f in run.flags],
    }

    def add(key: str, trigger: str, reason: str) -> None:
        triggers.setdefault(key, []).append((trigger, reason))

    long_run = run.long_run.is_long
    if long_run:
        add(ROLL_OUT, "long", f"{run.long_run.reason} → roll out both soles, {_dose(ROLL_OUT)}")

    median_dh = downhill_median(history.recent_downhill_impacts, constants=constants)
    if (
        median_dh is not None
        and run.downhill_impact is not None
        and run.timer_s >= constants.downhill_min_timer_min * 60
    ):
        ratio = shown(run.downhill_impact / median_dh)
        facts.update(downhill_impact=run.downhill_impact, downhill_median=median_dh, downhill_ratio=ratio)
        if ratio >= constants.downhill_ratio:
            add(
                ROLL_OUT,
                "downhill",
                f"downhill running: impact {run.downhill_impact:.0f}, "
                f"{ratio_text(ratio)} your usual ({median_dh:.0f}) "
                f"→ roll out both soles, {_dose(ROLL_OUT)}",
            )

    threshold = fast_threshold_mps(history.recent_speeds_mps, constants=constants)
    speed = run.avg_speed_mps
    fast = threshold is not None and speed >= threshold
    if threshold is not None:
        facts.update(avg_speed_mps=speed, fast_threshold_mps=threshold, fast=fast)
    if long_run:
        add(TOE_EXTENSION, "long", f"long run → big-toe extension, {_dose(TOE_EXTENSION)}")
    if fast and threshold is not None:
        add(
            TOE_EXTENSION,
            "fast",
            f"fast run: {_pace(speed)}, quicker than your usual fast pace ({_pace(threshold)}) → big-toe "
            f"extension, {_dose(TOE_EXTENSION)}",
        )

    add(TOE_SPREAD, "every_run", f"after every run → toe spread, {_dose(TOE_SPREAD)}")
    emphasis: list[str] = []
    # The rolling sums as of this run, under the names and rounding every other screen uses.
    facts["figures"] = figure_values(load_last_7_days=history.load_7d, load_last_28_days=history.load_28d)
    before = history.load_28d_before
    if history.history_days >= constants.emphasis_min_history_days and before is not None and history.load_7d > 0:
        weekly_avg = before / 4
        if weekly_avg <= 0:
            # Nothing in the four weeks before: a ratio to nothing means nothing, so the reason says what it is.
            facts.update(load_7d=history.load_7d, load_28d_before_weekly_avg=0.0, load_7d_ratio=None)
            emphasis.append(TOE_SPREAD)
            add(
                TOE_SPREAD,
                "back_after_break",
                "back after four weeks or more without a run: no recent weeks to compare this week's load with "
                "→ take your time over the toe spread",
            )
        else:
            ratio = shown(history.load_7d / weekly_avg)
            facts.update(load_7d=history.load_7d, load_28d_before_weekly_avg=weekly_avg, load_7d_ratio=ratio)
            if ratio > constants.spread_emphasis_ratio:
                emphasis.append(TOE_SPREAD)
                add(
                    TOE_SPREAD,
                    "load_7d",
                    f"{figure_text('load_last_7_days', history.load_7d)}, {ratio_text(ratio)} your "
                    f"{WEEKLY_AVERAGE_BEFORE.label} ({with_unit(WEEKLY_AVERAGE_BEFORE.key, weekly_avg)}) "
                    "→ take your time over the toe spread",
                )

    level = balance_level(balance_level_now)
    if is_trail(run.sport, run.sub_sport):
        add(BALANCE, "trail", f"trail run → single-leg balance ({level.title}), {_dose(BALANCE)}")

    spiked = any(f.name in SPIKE_FLAGS for f in run.flags)
    easy = not long_run and not fast and not spiked
    facts["easy"] = easy
    if toe_isolation_due(
        day,
        history.toe_isolation_days,
        last_spike_day=history.last_spike_day,
        hard_day=not easy,
        constants=constants,
    ):
        week = day.isocalendar()[:2]
        n = 1 + sum(1 for d in set(history.toe_isolation_days) if d.isocalendar()[:2] == week)
        add(
            TOE_ISOLATION,
            "easy_day",
            f"easy run ({km(run.distance_m)}) → big-toe isolation, {_dose(TOE_ISOLATION)} "
            f"(isolation session {n} of up to {constants.toe_isolation_per_week} this week)",
        )

    skipped = sorted(k for k in triggers if k in given_today)
    if skipped:
        facts["already_today"] = skipped
    routines = [k for k in ROUTINE_ORDER if k in triggers and k not in given_today]
    # Each reason once: the flags travel apart (``Decision.flags``, shown under their own heading), so their
    # reasons are not repeated here, and a flag raised twice is one flag.
    reasons = list(dict.fromkeys(reason for k in routines for _, reason in triggers[k]))
    flags = list({f.name: f for f in run.flags}.values())
    rule = f"post_run.{RULES_VERSION} " + " ".join(f"{k}={'+'.join(t for t, _ in triggers[k])}" for k in routines)
    return Decision(
        routines=routines,
        reasons=reasons,
        rule=rule.strip(),
        facts=facts,
        local_day=day,
        flags=flags,
        emphasis=[k for k in emphasis if k in routines],
        balance_level=level.level,
    )


# -- weekly balance ------------------------------------------------------------------


def _parse_hhmm(value: str) -> time:
    hours, _, minutes = value.partition(":")
    return time(int(hours), int(minutes or 0))


def _local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    # A wall time in a spring-forward gap is read with the offset before the change (PEP 495, fold=0), which
    # lands just after the gap; an ambiguous one takes its first occurrence.
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def weekly_balance_due(
    now_utc: datetime,
    tz: str | ZoneInfo,
    weekday: int,
    local_time: str,
    last_sent_week: str | None,
) -> datetime | None:
    """The UTC instant this ISO week's balance prompt was due, if it is due now and not yet sent; else None.

    ``weekday`` Monday=0 … Sunday=6 and ``local_time`` ``"HH:MM"`` are the athlete's choice;
    ``last_sent_week`` is the :func:`iso_week_key` of the last weekly prompt sent. Pass the result through
    :func:`defer_for_quiet_hours`; the week key of ``now`` is the prompt's dedupe key.
    """
    _aware(now_utc, "now_utc")
    zone = _zone(tz)
    today = now_utc.astimezone(zone).date()
    if last_sent_week == iso_week_key(today):
        return None
    scheduled_day = today - timedelta(days=today.weekday()) + timedelta(days=weekday % 7)
    due = _local_to_utc(scheduled_day, _parse_hhmm(local_time), zone)
    return due if now_utc >= due else None


def weekly_prompts_begun(today: date, first_run_day: date | None) -> bool:
    """True once the athlete has a run in the ISO week of ``today`` or an earlier one.

    Weekly prompts (balance, digest) begin with the athlete's first week with a run: an athlete named in the
    settings, or added a minute ago, is not told about a week in which they never ran."""
    if first_run_day is None:
        return False
    return first_run_day - timedelta(days=first_run_day.weekday()) <= today - timedelta(days=today.weekday())


def weekly_balance_decision(
    current_level: int,
    completed_at_level: int,
    *,
    given_today: Collection[str] = (),
    constants: RuleConstants = DEFAULT_RULES,
) -> Decision:
    """The weekly balance prompt, at the level reached after ``completed_at_level`` sessions at this one.

    Returns an empty decision when balance was already prompted today (after a trail run, say). Store the new
    ``balance_level`` on the athlete when it differs from ``current_level``.
    """
    new_level = next_balance_level(current_level, completed_at_level, constants=constants)
    level = balance_level(new_level)
    facts: dict[str, object] = {
        "previous_level": current_level,
        "completed_at_level": completed_at_level,
        "balance_level": new_level,
    }
    if BALANCE in given_today:
        facts["already_today"] = [BALANCE]
        return Decision([], [], f"weekly_balance.{RULES_VERSION}", facts, balance_level=new_level)
    reason = f"weekly balance → single-leg balance ({level.title}), {_dose(BALANCE)}"
    if new_level > current_level:
        previous = balance_level(current_level)
        reason = (
            f"{completed_at_level} sessions done {previous.title} → moving up to {level.title}: single-leg "
            f"balance, {_dose(BALANCE)}"
        )
    return Decision(
        [BALANCE],
        [reason],
        f"weekly_balance.{RULES_VERSION} level={level.key}",
        facts,
        balance_level=new_level,
    )


# -- quiet hours and freshness ------------------------------------------------------------------


def in_quiet_hours(local: time, quiet_start: time, quiet_end: time) -> bool:
    """Whether wall time ``local`` falls in ``[quiet_start, quiet_end)``, a window that may cross midnight."""
    if quiet_start == quiet_end:
        return False
    if quiet_start < quiet_end:
        return quiet_start <= local < quiet_end
    return local >= quiet_start or local < quiet_end


def defer_for_quiet_hours(
    due_utc: datetime,
    tz: str | ZoneInfo,
    quiet_start: str | None = "22:00",
    quiet_end: str | None = "07:00",
) -> datetime:
    """``due_utc`` moved to the first instant after it outside the athlete's quiet hours when it falls inside
    them; never earlier.

    The window is in local wall time and may cross midnight; across DST changes it is exact (a repeated hour
    is quiet twice, a window ending in a skipped hour ends at the jump): see ``recommender.quiet_hours``. A
    prompt is never dropped, only deferred. No window (either bound None or both equal) returns ``due_utc``
    unchanged.
    """
    _aware(due_utc, "due_utc")
    if quiet_start is None or quiet_end is None:
        return due_utc.astimezone(UTC)
    return first_free_instant(due_utc, _zone(tz), _parse_hhmm(quiet_start), _parse_hhmm(quiet_end))


def is_fresh(run_end_utc: datetime, now_utc: datetime, window_hours: float = 24.0) -> bool:
    """Whether a run is recent enough for a post-run prompt; history imports older than the window get none.

    A run ending in the future (device clock ahead) counts as fresh.
    """
    _aware(run_end_utc, "run_end_utc")
    _aware(now_utc, "now_utc")
    return now_utc - run_end_utc <= timedelta(hours=window_hours)


def run_end(start_time: datetime, elapsed_s: float) -> datetime:
    """When a run ended: its start plus elapsed (not timer) time."""
    _aware(start_time, "start_time")
    return start_time + timedelta(seconds=max(0.0, elapsed_s))
