"""The shared figures: one name, one unit and one way of writing each number, on every screen.

The command line, the dashboard, the prompt, the digest, the webhook payload and the export all show some of the
same numbers; a reader who compares two of them must never find two different figures under one name (design,
section 4). So each shared figure has here its key (the JSON name, the same everywhere), its label (the words a
person reads), its unit, and its rounding; every surface takes the value through :func:`figure_values` (rounded
the same way, so equal figures are equal numbers) and the words through :func:`figure_text`.

* Acute and chronic load are exponentially weighted averages of *daily* load: per day ("acute load 1,310
  ref. steps/day").
* A rolling sum is called what it is: "last 7 days: 9,170 ref. steps" (the local days ending with the day shown).
* The load unit is the reference step ("ref. steps"): steps at 2.5 body weights that would do the same damage.

Pure: plain numbers in, plain values and text out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LOAD_UNIT = "ref. steps"
LOAD_UNIT_LONG = "reference steps"
PER_DAY = f"{LOAD_UNIT}/day"
PER_WEEK = f"{LOAD_UNIT}/week"

Kind = Literal["average", "sum", "ratio", "load"]


@dataclass(frozen=True, slots=True)
class FigureSpec:
    """How one shared figure is named, measured and written."""

    key: str
    label: str
    unit: str
    kind: Kind
    digits: int = 0


ACUTE_LOAD = FigureSpec("acute_load", "acute load", PER_DAY, "average")
CHRONIC_LOAD = FigureSpec("chronic_load", "chronic load", PER_DAY, "average")
ACWR = FigureSpec("acwr", "acute:chronic ratio", "×", "ratio", digits=2)
LAST_7_DAYS = FigureSpec("load_last_7_days", "last 7 days", LOAD_UNIT, "sum")
LAST_28_DAYS = FigureSpec("load_last_28_days", "last 28 days", LOAD_UNIT, "sum")
WEEKLY_AVERAGE_28 = FigureSpec("weekly_average_last_28_days", "weekly average of the last 28 days", PER_WEEK, "average")
# What a week is compared with in a reason: the 28 days before the run's day, never the run itself.
WEEKLY_AVERAGE_BEFORE = FigureSpec(
    "weekly_average_4_weeks_before", "weekly average of the 4 weeks before", PER_WEEK, "average"
)
RUN_LOAD = FigureSpec("run_load", "load", LOAD_UNIT, "load")

SPECS: dict[str, FigureSpec] = {
    s.key: s
    for s in (
        ACUTE_LOAD,
        CHRONIC_LOAD,
        ACWR,
        LAST_7_DAYS,
        LAST_28_DAYS,
        WEEKLY_AVERAGE_28,
        WEEKLY_AVERAGE_BEFORE,
        RUN_LOAD,
    )
}
# What JSON consumers read next to the figures: the unit of each key.
UNITS: dict[str, str] = {key: spec.unit for key, spec in SPECS.items()}


def spec(key: str) -> FigureSpec:
    """The spec of the shared figure ``key``; raises KeyError for a name that is not shared."""
    return SPECS[key]


def figure_value(key: str, value: float | None) -> float | int | None:
    """``value`` rounded as figure ``key`` is always shown (loads: whole reference steps; ratios: 2 digits)."""
    if value is None:
        return None
    digits = SPECS[key].digits
    return round(float(value)) if digits == 0 else round(float(value), digits)


def figure_values(**values: float | None) -> dict[str, float | int | None]:
    """The given figures by their shared keys, rounded: ``figure_values(acute_load=1310.4)``."""
    return {key: figure_value(key, value) for key, value in values.items()}


def number_text(key: str, value: float | None) -> str:
    """The number alone, as figure ``key`` writes it ("9,170", "1.07"); "–" for none."""
    shown = figure_value(key, value)
    if shown is None:
        return "–"
    digits = SPECS[key].digits
    return f"{shown:,.{digits}f}"


def with_unit(key: str, value: float | None) -> str:
    """Number and unit ("9,170 ref. steps", "1,310 ref. steps/day", "1.07×")."""
    s = SPECS[key]
    if s.kind == "ratio":
        return f"{number_text(key, value)}{s.unit}"
    return f"{number_text(key, value)} {s.unit}"


def figure_text(key: str, value: float | None) -> str:
    """Label, number and unit: "acute load 1,310 ref. steps/day"; sums as "last 7 days: 9,170 ref. steps"."""
    s = SPECS[key]
    separator = ": " if s.kind == "sum" else " "
    return f"{s.label}{separator}{with_unit(key, value)}"


@dataclass(frozen=True, slots=True)
class LoadFigures:
    """The load figures of one local day: the averages at that day and the rolling sums ending with it."""

    acute_load: float
    chronic_load: float
    acwr: float | None
    load_last_7_days: float
    load_last_28_days: float

    def values(self) -> dict[str, float | int | None]:
        """The figures by shared key, rounded as shown."""
        return figure_values(
            acute_load=self.acute_load,
            chronic_load=self.chronic_load,
            acwr=self.acwr,
            load_last_7_days=self.load_last_7_days,
            load_last_28_days=self.load_last_28_days,
        )

    def texts(self) -> dict[str, str]:
        """The figures as a person reads them, by shared key."""
        return {key: figure_text(key, value) for key, value in self.values().items() if value is not None}


__all__ = [
    "ACUTE_LOAD",
    "ACWR",
    "CHRONIC_LOAD",
    "LAST_7_DAYS",
    "LAST_28_DAYS",
    "LOAD_UNIT",
    "LOAD_UNIT_LONG",
    "PER_DAY",
    "PER_WEEK",
    "RUN_LOAD",
    "SPECS",
    "UNITS",
    "WEEKLY_AVERAGE_28",
    "WEEKLY_AVERAGE_BEFORE",
    "FigureSpec",
    "LoadFigures",
    "figure_text",
    "figure_value",
    "figure_values",
    "number_text",
    "spec",
    "with_unit",
]
