"""Geometry of the server-drawn SVG charts: the load chart of the dashboard and the small line charts of a run.

Each chart is drawn twice, for a desk and for a phone (the page shows one by a CSS media query): an SVG scales
its text with its width, so one drawing cannot have legible labels at both 390 and 1280 px. The sizes below are
chosen so that a label renders at 12 px or more in both.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from recommender.run_detail import flag_title


@dataclass(frozen=True, slots=True)
class Frame:
    """A chart's canvas in SVG user units; ``font`` is the label size, ``max_labels`` how many x labels fit."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float
    font: float
    max_labels: int


# ``top`` holds the axis title and, under it, the lane of flag markers (see :func:`flag_markers`).
DESK = Frame(width=860, height=330, left=70, right=14, top=56, bottom=52, font=13, max_labels=10)
# Shown at ≤ 600 px: a 390 px phone draws it ~1.05× (358 px of 340 units), so 13 units are ~13.7 px.
PHONE = Frame(width=340, height=330, left=54, right=8, top=56, bottom=52, font=13, max_labels=4)
DESK_SMALL = Frame(width=560, height=200, left=60, right=12, top=16, bottom=44, font=13, max_labels=6)
PHONE_SMALL = Frame(width=340, height=210, left=54, right=8, top=14, bottom=44, font=13, max_labels=4)


def nice_ticks(value: float, count: int = 4) -> list[float]:
    """Round axis ticks from 0 up to at least ``value``: steps of 1, 2, 2.5 or 5 × 10ⁿ, whole numbers only."""
    if value <= 0 or not math.isfinite(value):
        value = 1.0
    raw = value / count
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * magnitude
        if step >= raw:
            break
    step = max(1.0, step)  # never a fractional tick: loads are counted in whole reference steps
    n = max(1, math.ceil(value / step - 1e-9))
    return [round(step * k, 6) for k in range(n + 1)]


def tick_text(value: float) -> str:
    """``12,500`` for axis labels."""
    return f"{value:,.0f}"


def _label_for(start: str, unit: str) -> str:
    day = date.fromisoformat(start)
    if unit == "month":
        return f"{day:%b %Y}"  # ranges by month span years: "May" alone would be ambiguous
    return f"{day.day} {day:%b}"


def load_chart(data: dict[str, Any], frame: Frame) -> dict[str, Any]:
    """SVG geometry for the load chart: one bar per bin, acute and chronic polylines, numbered flag markers."""
    bins: list[dict[str, Any]] = data["bins"]
    unit: str = data["bin"]
    n = max(1, len(bins))
    plot_w = frame.width - frame.left - frame.right
    plot_h = frame.height - frame.top - frame.bottom
    peak = max([0.0, *(max(b["per_day"], b["acute"], b["chronic"]) for b in bins)])
    ticks = nice_ticks(peak if peak > 0 else 1000.0)
    top = ticks[-1]
    slot = plot_w / n
    baseline = frame.top + plot_h

    def y(value: float) -> float:
        return round(baseline - (value / top) * plot_h, 2)

    bars: list[dict[str, Any]] = []
    bin_of_day: dict[str, int] = {}
    for i, b in enumerate(bins):
        x = frame.left + i * slot
        height = round(plot_h * b["per_day"] / top, 2)
        bars.append(
            {
                **b,
                "x": round(x + slot * 0.12, 2),
                "y": round(baseline - height, 2),
                "width": round(max(0.8, slot * 0.76), 2),
                "height": height,
                "cx": round(x + slot / 2, 2),
                # The whole column of the bar takes a tap: a day's bar on a phone is a few pixels wide.
                "hit_x": round(x, 2),
                "hit_width": round(slot, 2),
                "flagged": False,
                "flag_numbers": [],
            }
        )
    # The bin of each flagged day: bins are in order and do not overlap, so the last one starting on or before
    # the day (a search, not a walk over every day and bin: a range of years has thousands of days).
    starts = [b["start"] for b in bins]
    for flagged in data["flags"]:
        found = bisect_right(starts, flagged["day"]) - 1
        if found >= 0 and flagged["day"] <= bins[found]["end"]:
            bin_of_day[flagged["day"]] = found

    def line(key: str) -> str:
        return " ".join(f"{b['cx']},{y(b[key])}" for b in bars)

    placed: list[dict[str, Any]] = []
    for number, flagged in enumerate(data["flags"], start=1):
        at = bin_of_day.get(flagged["day"])
        if at is None:
            continue
        bars[at]["flagged"] = True
        bars[at]["flag_numbers"].append(number)
        placed.append({**flagged, "number": number, "cx": bars[at]["cx"]})
    for bar in bars:
        bar["tip"] = bar_tip(bar, unit, frame)
    every = max(1, math.ceil(len(bars) / frame.max_labels))
    if unit == "day":
        mondays = [i for i, b in enumerate(bars) if date.fromisoformat(b["start"]).weekday() == 0]
        weeks_per_label = max(1, math.ceil(len(mondays) / frame.max_labels))
        positions = mondays[::weeks_per_label] or [0]
    else:
        positions = list(range(0, len(bars), every))
    labels = [{"x": bars[i]["cx"], "text": _label_for(bars[i]["start"], unit)} for i in positions]
    return {
        "frame": frame,
        "right": frame.width - frame.right,
        "baseline": baseline,
        "mid_y": round(frame.top + plot_h / 2, 2),
        "mid_x": round(frame.left + plot_w / 2, 2),
        "bars": bars,
        "acute": line("acute"),
        "chronic": line("chronic"),
        "markers": flag_markers(placed, frame),
        "plot_top": frame.top,
        "plot_height": plot_h,
        "ticks": [{"value": v, "text": tick_text(v), "y": y(v)} for v in ticks],
        "labels": labels,
        "x_title": {"day": "day", "week": "week (bar: mean per day)", "month": "month (bar: mean per day)"}[unit],
        "y_title": "ref. steps per day",
        "empty": data["totals"]["runs"] == 0,
    }


def _text_width(text: str, font: float) -> float:
    """A generous estimate of the drawn width of ``text`` (system sans-serif digits are ~0.55 em wide)."""
    return len(text) * font * 0.6


def tip_box(lines: list[str], anchor_x: float, frame: Frame, y: float) -> dict[str, Any]:
    """A label box of ``lines`` centred on ``anchor_x``, kept inside the plot: what a tap on a bar or a point
    shows."""
    pad = frame.font * 0.5
    width = max(_text_width(line, frame.font) for line in lines) + 2 * pad
    width = min(width, frame.width - 2)
    height = len(lines) * frame.font * 1.3 + pad
    # Inside the plot when it fits there (the axis labels stay readable), else inside the drawing.
    lo, hi = (
        (frame.left, frame.width - frame.right)
        if width <= frame.width - frame.left - frame.right
        else (1.0, frame.width - 1)
    )
    x = min(max(anchor_x - width / 2, lo), hi - width)
    return {
        "x": round(x, 2),
        "y": round(y, 2),
        "width": round(width, 2),
        "height": round(height, 2),
        "lines": [
            {"text": line, "x": round(x + pad, 2), "y": round(y + pad / 2 + frame.font * (1.3 * k + 1.0), 2)}
            for k, line in enumerate(lines)
        ],
    }


def bar_tip(bar: dict[str, Any], unit: str, frame: Frame) -> dict[str, Any]:
    """The values of one bar as the chart shows them on a tap (or a hover, or keyboard focus)."""
    day = date.fromisoformat(bar["start"])
    when = (
        f"{day.day} {day:%b %Y}"
        if unit == "day"
        else (f"week of {day.day} {day:%b %Y}" if unit == "week" else f"{day:%B %Y}")
    )
    load = f"{bar['load']:,.0f} ref. steps"
    if bar["days"] > 1:
        load += f", {bar['per_day']:,.0f}/day"
    lines = [when, load, f"acute {bar['acute']:,.0f}, chronic {bar['chronic']:,.0f} /day"]
    if bar["flag_numbers"]:
        lines.append("flag " + ", ".join(str(n) for n in bar["flag_numbers"]) + " (see the list below)")
    return tip_box(lines, bar["cx"], frame, frame.top + 2)


def flag_markers(placed: list[dict[str, Any]], frame: Frame) -> list[dict[str, Any]]:
    """The flag markers of a load chart, in a lane above the plot, never overlapping.

    Each flagged run has a number (its place in the list under the chart). Markers that would touch are merged
    into one labelled with the range of numbers (``3–5``); merging repeats until no two touch, so a year of
    weekly bars or years of monthly ones draw a readable row however many runs were flagged. A merged marker
    sits over the middle of its runs and links to the first of them in the list."""
    r = frame.font * 0.75
    gap = 3.0
    lo, hi = frame.left, frame.width - frame.right

    def shaped(members: list[dict[str, Any]]) -> dict[str, Any]:
        first, last = members[0]["number"], members[-1]["number"]
        label = str(first) if first == last else f"{first}–{last}"
        width = max(2 * r, _text_width(label, frame.font) + frame.font * 0.5)
        centre = (members[0]["cx"] + members[-1]["cx"]) / 2
        centre = min(max(centre, lo + width / 2), hi - width / 2)
        return {"members": members, "label": label, "width": width, "cx": centre}

    clusters: list[dict[str, Any]] = []
    for marker in sorted(placed, key=lambda m: (m["cx"], m["number"])):
        clusters.append(shaped([marker]))
        while len(clusters) > 1:
            a, b = clusters[-2], clusters[-1]
            if b["cx"] - a["cx"] >= (a["width"] + b["width"]) / 2 + gap:
                break
            clusters[-2:] = [shaped(a["members"] + b["members"])]
    cy = frame.top - r - 4
    out: list[dict[str, Any]] = []
    for c in clusters:
        members = c["members"]
        lines = [f"{m['number']}. {m['day']}: " + "; ".join(flag_title(f["name"]) for f in m["flags"]) for m in members]
        out.append(
            {
                "number": members[0]["number"],
                "label": c["label"],
                "count": len(members),
                "run_ids": " ".join(str(m["run_id"]) for m in members),
                "run_id": members[0]["run_id"] if len(members) == 1 else "",
                "day": members[0]["day"],
                "names": " ".join(sorted({f["name"] for m in members for f in m["flags"]})),
                "title": " / ".join(lines),
                "cx": round(c["cx"], 2),
                "x": round(c["cx"] - c["width"] / 2, 2),
                "width": round(c["width"], 2),
                "cy": round(cy, 2),
                "r": round(r, 2),
            }
        )
    return out


def line_chart(
    xs: list[float],
    ys: list[float | None],
    frame: Frame,
    *,
    invert: bool = False,
    min_span: float = 10.0,
    value_text: Callable[[float], str] = "{:.0f}".format,
) -> dict[str, Any]:
    """A single series over minutes as polyline segments (gaps where a value is missing) with round ticks.

    ``invert`` puts small values at the top (pace: faster is higher); the y axis spans at least ``min_span``,
    so that an even run is a flat line rather than noise blown up to the full height. Each point has a tap
    target (its column of the plot) and a label of ``value_text(value)`` at its minute."""
    present = [v for v in ys if v is not None]
    if not xs or not present:
        return {
            "frame": frame,
            "segments": [],
            "ticks": [],
            "labels": [],
            "points": [],
            "baseline": frame.height - frame.bottom,
        }
    plot_w = frame.width - frame.left - frame.right
    plot_h = frame.height - frame.top - frame.bottom
    lo, hi = min(present), max(present)
    step = _round_step(max(hi - lo, min_span) / 3)
    low, high = lo, hi
    lo = max(0.0, math.floor(lo / step) * step)
    hi = max(lo + 3 * step, math.ceil(hi / step) * step)
    # A line lying on the x axis is hidden by it (an even 170 spm on a 170 tick): one more step below it.
    if invert and high >= hi:
        hi += step
    elif not invert and low <= lo and lo >= step:
        lo -= step
    span_x = max(xs[-1] - xs[0], 1e-6)
    baseline = frame.top + plot_h

    def px(x: float) -> float:
        return round(frame.left + (x - xs[0]) / span_x * plot_w, 2)

    def py(v: float) -> float:
        share = (v - lo) / (hi - lo)
        return round(frame.top + share * plot_h if invert else baseline - share * plot_h, 2)

    segments: list[str] = []
    current: list[str] = []
    for x, v in zip(xs, ys, strict=True):
        if v is None:
            if len(current) > 1:
                segments.append(" ".join(current))
            current = []
            continue
        current.append(f"{px(x)},{py(v)}")
    if len(current) > 1:
        segments.append(" ".join(current))
    ticks = []
    value = lo
    while value <= hi + 1e-9:
        ticks.append({"value": value, "y": py(value)})
        value += step
    minutes = nice_ticks(xs[-1], count=min(frame.max_labels, 5))
    labels = [{"x": px(m), "text": f"{m:.0f}"} for m in minutes if m <= xs[-1] + 1e-6]
    return {
        "frame": frame,
        "segments": segments,
        "ticks": ticks,
        "labels": labels,
        "points": _points(xs, ys, px, py, frame, value_text),
        "baseline": baseline,
        "plot_height": plot_h,
    }


def _points(
    xs: list[float],
    ys: list[float | None],
    px: Callable[[float], float],
    py: Callable[[float], float],
    frame: Frame,
    value_text: Callable[[float], str],
) -> list[dict[str, Any]]:
    """The tap targets of a line chart: each point owns the column half-way to its neighbours."""
    shown = [(px(x), py(v), x, v) for x, v in zip(xs, ys, strict=True) if v is not None]
    # The last point of a series repeats the one before at the end of the time axis: one target for both.
    deduped = shown[:-1] if len(shown) > 1 and shown[-1][3] == shown[-2][3] else shown
    mid = frame.top + (frame.height - frame.top - frame.bottom) / 2
    points: list[dict[str, Any]] = []
    for k, (cx, cy, minute, v) in enumerate(deduped):
        left = frame.left if k == 0 else (deduped[k - 1][0] + cx) / 2
        right = frame.width - frame.right if k == len(deduped) - 1 else (cx + deduped[k + 1][0]) / 2
        # The label goes where the line is not: under the point's half of the plot, or above it.
        tip_y = frame.top + 2 if cy > mid else mid + 2
        points.append(
            {
                "cx": cx,
                "cy": cy,
                "hit_x": round(left, 2),
                "hit_width": round(max(right - left, 0.5), 2),
                "tip": tip_box([f"{value_text(v)} at {minute:.1f} min"], cx, frame, tip_y),
            }
        )
    return points


def _round_step(raw: float) -> float:
    """The smallest of 1, 2, 5, 10, 15, 20, 30, 60, 120 … at least ``raw`` (seconds and steps read well)."""
    for step in (1, 2, 5, 10, 15, 20, 30, 60):
        if step >= raw:
            return float(step)
    return float(60 * math.ceil(raw / 60))
