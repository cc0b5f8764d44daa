"""One run as its page shows it: pace, cadence, heart rate, steps by gait, its load and how that compares with
the athlete's recent runs, its flags with their reasons, and the prompt it got — or why it got none.

Plain JSON-able values, read from the database only; the web layer draws them.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, raiseload

from recommender.routines import ROUTINES
from recommender.shoes import run_shoe
from recommender.silence import why_no_prompt
from stridecare.db.models import Athlete, DailyLoad, Prompt, Run, RunLoad, Shoe
from stridecare.db.samples import unpack_samples
from stridecare.domain.history import local_day
from stridecare.settings import Settings

COMPARE_DAYS = 28  # the load of a run is compared with the runs of the four weeks before it
SERIES_POINTS = 120  # a phone is ~360 px wide: more points draw nothing more
# Below 1 m/s (3.6 km/h, a pace of 16:40 /km) a runner is standing, not running or walking: a stop at a crossing
# with the watch running. Such samples are left out of the pace and cadence charts.
STOPPED_BELOW_MPS = 1.0
STOP_MIN_S = 5.0  # a shorter dip is the speed sensor's noise, not a stop: the line goes on
SAMPLE_GAP_S = 60.0  # smart recording may write a steady stretch as one sample a minute; more is a gap

FLAG_TITLES = {
    "spike_caution": "Single-run spike",
    "spike_high": "Big single-run spike",
    "ramp": "Two-week ramp",
    "monotony": "Monotony",
    "acwr_high": "Acute:chronic ratio high",
}


# One explanation per kind of flag, shown once under a list of flagged runs: each run's line keeps its numbers only.
FLAG_EXPLANATIONS = {
    "spike_caution": "A run clearly longer than your longest of the last 30 days. Consider keeping the next runs easy.",
    "spike_high": "A run about twice your longest of the last 30 days or more. Consider a few easy days next and "
    "building distance in smaller steps.",
    "ramp": "The distance of the last two weeks well above the two weeks before. Consider holding this volume for a "
    "while before adding more.",
    "monotony": "Every day of the last week about the same load (mean ÷ spread of daily load). Consider making one "
    "day clearly easier or a rest day.",
    "acwr_high": "Your acute load (ref. steps/day, weighted over about 7 days) well above your chronic load "
    "(weighted over about 28 days). Information, not a forecast: consider an easier day if your feet feel tired.",
}
_ADVICE = re.compile(r"(?:;\s*consider\b|\.\s*This is information\b).*$", re.DOTALL)
_UNITS_ASIDE = re.compile(r" \(ref\. steps/day, weighted over about \d+ days\)")


def flag_summary(reason: str) -> str:
    """A flag's reason without its advice, the numbers only (the advice is in :data:`FLAG_EXPLANATIONS`, once)."""
    short = _UNITS_ASIDE.sub("", _ADVICE.sub("", reason)).strip().rstrip(".;,")
    return short[:1].upper() + short[1:] if short else reason


def flag_explanation(name: str) -> str:
    """What a flag of kind ``name`` means and what to consider, the same for every run that raised it."""
    return FLAG_EXPLANATIONS.get(name, "")


def flag_title(name: str) -> str:
    """The reader's name of a flag (``spike_caution`` → "Single-run spike")."""
    return FLAG_TITLES.get(name, name.replace("_", " ").capitalize())


def routine_title(key: str) -> str:
    """The title of a routine as prompts show it."""
    routine = ROUTINES.get(key)
    return routine.title if routine is not None else key.replace("_", " ")


def pace_text(seconds_per_km: float | None) -> str | None:
    """``5:12 /km`` from seconds per kilometre; None when unknown."""
    if seconds_per_km is None or seconds_per_km <= 0:
        return None
    total = round(seconds_per_km)
    return f"{total // 60}:{total % 60:02d} /km"


def _series(run: Run) -> dict[str, Any]:
    """Pace (s/km) and cadence (spm) over moving minutes, thinned to about :data:`SERIES_POINTS` points.

    Stops are taken out (:func:`moving_stretches`): the x axis counts moving time only, a stop breaks the line
    (a ``None`` point where it was), and ``stops`` / ``stopped_s`` say how much was left out."""
    empty: dict[str, Any] = {"t_min": [], "pace_s_per_km": [], "cadence_spm": [], "stops": 0, "stopped_s": 0.0}
    if run.samples is None:
        return empty
    samples = unpack_samples(run.samples.data)
    stretches, stopped_s = moving_stretches(samples.t, samples.speed_mps, samples.timer_running)
    moving = sum(len(s) for s in stretches)
    if not moving:
        return {**empty, "stops": len(stretches), "stopped_s": round(stopped_s)}
    step = max(1, moving // SERIES_POINTS)
    t_min: list[float] = []
    pace: list[float | None] = []
    cadence: list[float | None] = []
    clock = 0.0  # moving seconds before the current sample
    for number, stretch in enumerate(stretches):
        if number:
            # A stop: the line breaks here rather than joining across it.
            t_min.append(round(clock / 60, 2))
            pace.append(None)
            cadence.append(None)
        for start in range(0, len(stretch), step):
            window = stretch[start : start + step]
            speeds = [s for i, _ in window if (s := samples.speed_mps[i]) is not None]
            cads = [c for i, _ in window if (c := samples.cadence_spm[i]) is not None and c > 0]
            t_min.append(round(clock / 60, 2))
            pace.append(round(1000 / statistics.fmean(speeds), 1) if speeds else None)
            cadence.append(round(statistics.fmean(cads), 1) if cads else None)
            clock += sum(dt for _, dt in window)
    t_min.append(round(clock / 60, 2))
    pace.append(pace[-1])
    cadence.append(cadence[-1])
    return {
        "t_min": t_min,
        "pace_s_per_km": pace,
        "cadence_spm": cadence,
        "stops": len(stretches) - 1,
        "stopped_s": round(stopped_s),
    }


def moving_stretches(
    t: Sequence[float], speed_mps: Sequence[float | None], timer_running: Sequence[bool]
) -> tuple[list[list[tuple[int, float]]], float]:
    """The moving samples of a run as stretches between stops, each sample with the seconds it stands for,
    and the seconds left out.

    A sample is stopped when the watch was paused before it or its speed is below :data:`STOPPED_BELOW_MPS`
    (standing at a crossing with the watch running; a walk break stays in). A pause of the watch always splits
    a stretch; a slow dip shorter than :data:`STOP_MIN_S` does not. A moving sample stands for the time since
    the one before, at most :data:`SAMPLE_GAP_S` (a gap in recording is not moving time)."""
    stretches: list[list[tuple[int, float]]] = [[]]
    stopped_s = 0.0
    pending = 0.0  # seconds of the stop in progress
    paused = False  # the stop in progress includes a pause of the watch: a stop whatever its length
    for i in range(len(t)):
        gap = max(t[i] - t[i - 1], 0.0) if i else 0.0
        speed = speed_mps[i]
        if not timer_running[i]:
            # The watch was paused before this sample (FIT readers mark the sample after a pause).
            pending += gap
            paused = True
            continue
        if speed is None or speed < STOPPED_BELOW_MPS:
            pending += min(gap, SAMPLE_GAP_S)
            continue
        if (paused or pending >= STOP_MIN_S) and stretches[-1]:
            stretches.append([])
        stopped_s += pending
        pending, paused = 0.0, False
        stretches[-1].append((i, min(gap, SAMPLE_GAP_S)))
    stopped_s += pending
    return [s for s in stretches if s] or [], stopped_s


def _comparison(session: Session, athlete: Athlete, run: Run) -> dict[str, Any]:
    """How this run's load compares with the primary runs of the :data:`COMPARE_DAYS` days before it."""
    since = run.start_time - timedelta(days=COMPARE_DAYS)
    # The loads alone, one query (a run not planned yet has no load row and is left out).
    earlier = list(
        session.scalars(
            select(RunLoad.load)
            .join(Run, Run.id == RunLoad.run_id)
            .where(
                Run.athlete_id == athlete.id,
                Run.duplicate_of_id.is_(None),
                Run.start_time >= since,
                Run.start_time < run.start_time,
            )
        )
    )
    if run.load is None or not earlier:
        return {"runs": len(earlier), "median": None, "ratio": None, "rank": None, "text": None}
    median = statistics.median(earlier)
    ratio = run.load.load / median if median > 0 else None
    higher = sum(1 for v in earlier if v < run.load.load)
    if ratio is None:
        text = None
    elif 0.9 <= ratio <= 1.1:
        text = f"about your usual: the median of your {len(earlier)} runs in the {COMPARE_DAYS} days before"
    else:
        more = "more" if ratio > 1 else "less"
        text = (
            f"{abs(ratio - 1) * 100:.0f} % {more} than the median of your {len(earlier)} runs in the "
            f"{COMPARE_DAYS} days before ({median:,.0f} ref. steps)"
        )
    return {
        "runs": len(earlier),
        "median": round(median, 1),
        "ratio": round(ratio, 3) if ratio is not None else None,
        "above": higher,
        "text": text,
    }


def run_detail(session: Session, settings: Settings, athlete: Athlete, run_id: int) -> dict[str, Any] | None:
    """Everything the page of run ``run_id`` shows, or None when the athlete has no such run."""
    # The run with its load and samples in one query; any other relationship read by accident raises.
    run = session.get(Run, run_id, options=[joinedload(Run.load), joinedload(Run.samples), raiseload("*")])
    if run is None or run.athlete_id != athlete.id:
        return None
    tz = athlete.timezone
    day = local_day(run.start_time, tz)
    load = run.load
    km = run.distance_m / 1000
    pace = run.timer_s / km if km > 0.05 else None
    prompts = list(
        session.scalars(
            select(Prompt).where(Prompt.athlete_id == athlete.id, Prompt.run_id == run.id).order_by(Prompt.created_at)
        )
    )
    daily = session.scalar(select(DailyLoad).where(DailyLoad.athlete_id == athlete.id, DailyLoad.day == day))
    shoe = session.get(Shoe, run.shoe_id) if run.shoe_id is not None else None
    facts = load.facts if load is not None else {}
    reasons: dict[str, str] = facts.get("flag_reasons", {})
    levels: dict[str, str] = facts.get("flag_levels", {})
    walking = float(load.walking_steps) if load is not None else 0.0
    running = float(load.running_steps) if load is not None else 0.0
    return {
        "id": run.id,
        "athlete": athlete.name,
        "display_name": athlete.display_name or athlete.name,
        "day": day.isoformat(),
        "start_local": run.start_time.astimezone(ZoneInfo(tz)).strftime("%H:%M"),
        "name": run.name,
        "sport": run.sport,
        "source": run.source,
        "device": run.device,
        "distance_km": round(km, 2),
        "timer_s": round(run.timer_s),
        "elapsed_s": round(run.elapsed_s),
        "pace": pace_text(pace),
        "ascent_m": round(run.ascent_m) if run.ascent_m is not None else None,
        "descent_m": round(run.descent_m) if run.descent_m is not None else None,
        "cadence_spm": round(run.avg_cadence_spm) if run.avg_cadence_spm else None,
        "cadence_source": run.cadence_source,
        # Heart rate as the source recorded it for the session; None (shown as such) where it had none.
        "heart_rate_bpm": None if run.avg_heart_rate_bpm is None else round(run.avg_heart_rate_bpm),
        "max_heart_rate_bpm": None if run.max_heart_rate_bpm is None else round(run.max_heart_rate_bpm),
        "steps": round(run.steps),
        "walking_steps": round(walking) if walking or running else None,
        "running_steps": round(running) if walking or running else None,
        "load": round(load.load, 1) if load is not None else None,
        "load_per_km": round(load.load / km, 1) if load is not None and km > 0.05 else None,
        "long_run": bool(load.long_run) if load is not None else False,
        "long_run_reason": facts.get("long_run_reason") or None,
        "comparison": _comparison(session, athlete, run),
        "day_acute": round(daily.acute, 1) if daily is not None else None,
        "day_chronic": round(daily.chronic, 1) if daily is not None else None,
        "flags": [
            {
                "name": name,
                "title": flag_title(name),
                "level": levels.get(name, "caution"),
                "reason": reasons.get(name, name),
                "summary": flag_summary(reasons.get(name, name)),
                "explanation": flag_explanation(name),
            }
            for name in (load.flags if load is not None else [])
        ],
        "prompts": [
            {
                "id": p.id,
                "kind": p.kind,
                "routines": [{"key": r, "title": routine_title(r)} for r in p.routines],
                "reasons": list(p.reasons),
                "done": p.done_at is not None,
            }
            for p in prompts
        ],
        "no_prompt_reason": None if prompts else why_no_prompt(session, settings, run),
        "shoe": shoe.name if shoe is not None else None,
        "shoe_pair": run_shoe(session, athlete, run.shoe_id),  # the pair's distance, load and thresholds to date
        "duplicate_of": run.duplicate_of_id,
        "series": _series(run),
    }
