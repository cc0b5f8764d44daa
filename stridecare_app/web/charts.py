"""Geometry of the server-drawn SVG charts: the load chart of the dashboard and the small line charts of a run.

Each chart is drawn twice, for a desk and for a phone (the page shows one by a CSS media query): an SVG scales
its text with its width, so one drawing cannot have legible labels at both 390 and 1280 px. The sizes below are
chosen so that a label renders at 12 px or more in both.
"""

from __future__ import annotations

import math
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


DESK = Frame(width=860, height=310, left=70, right=14, top=34, bottom=52, font=13, max_labels=10)
# Shown at ≤ 600 px: a 390 px phone draws it ~1.05× (358 px of 340 units), so 13 units are ~13.7 px.
PHONE = Frame(width=340, height=310, left=54, right=8, top=34, bottom=52, font=13, max_labels=4)
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
                "flagged": False,
            }
        )
    for d in data["days"]:
        for i, b in enumerate(bins):
            if b["start"] <= d["day"] <= b["end"]:
                bin_of_day[d["day"]] = i
                break

    def line(key: str) -> str:
        return " ".join(f"{b['cx']},{y(b[key])}" for b in bars)

    markers: list[dict[str, Any]] = []
    stacked: dict[int, int] = {}
    for number, flagged in enumerate(data["flags"], start=1):
        at = bin_of_day.get(flagged["day"])
        if at is None:
            continue
        bar = bars[at]
        bar["flagged"] = True
        level = stacked.get(at, 0)
        stacked[at] = level + 1
        r = frame.font * 0.75
        markers.append(
            {
                "number": number,
                "run_id": flagged["run_id"],
                "day": flagged["day"],
                "names": " ".join(f["name"] for f in flagged["flags"]),
                "title": "; ".join(f"{flag_title(f['name'])}: {f['reason']}" for f in flagged["flags"]),
                "cx": bar["cx"],
                "cy": round(max(frame.top - 4 + r, bar["y"] - r - 3 - level * (2 * r + 2)), 2),
                "r": round(r, 2),
            }
        )
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
        "markers": markers,
        "ticks": [{"value": v, "text": tick_text(v), "y": y(v)} for v in ticks],
        "labels": labels,
        "x_title": {"day": "day", "week": "week (bar: mean per day)", "month": "month (bar: mean per day)"}[unit],
        "y_title": "ref. steps per day",
        "empty": data["totals"]["runs"] == 0,
    }


def line_chart(
    xs: list[float], ys: list[float | None], frame: Frame, *, invert: bool = False, min_span: float = 10.0
) -> dict[str, Any]:
    """A single series over minutes as polyline segments (gaps where a value is missing) with round ticks.

    ``invert`` puts small values at the top (pace: faster is higher); the y axis spans at least ``min_span``,
    so that an even run is a flat line rather than noise blown up to the full height."""
    present = [v for v in ys if v is not None]
    if not xs or not present:
        return {"frame": frame, "segments": [], "ticks": [], "labels": [], "baseline": frame.height - frame.bottom}
    plot_w = frame.width - frame.left - frame.right
    plot_h = frame.height - frame.top - frame.bottom
    lo, hi = min(present), max(present)
    step = _round_step(max(hi - lo, min_span) / 3)
    lo = max(0.0, math.floor(lo / step) * step)
    hi = max(lo + 3 * step, math.ceil(hi / step) * step)
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
    return {"frame": frame, "segments": segments, "ticks": ticks, "labels": labels, "baseline": baseline}


def _round_step(raw: float) -> float:
    """The smallest of 1, 2, 5, 10, 15, 20, 30, 60, 120 … at least ``raw`` (seconds and steps read well)."""
    for step in (1, 2, 5, 10, 15, 20, 30, 60):
        if step >= raw:
            return float(step)
    return float(60 * math.ceil(raw / 60))
