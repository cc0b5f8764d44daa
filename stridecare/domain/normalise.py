"""The one step every source takes from what it read to a normalised ``ParsedRun``.

A source (FIT, GPX, TCX, Strava, a plugin) reads a session's identity, times and its own totals, and builds
its samples; steps, their origin and cadence (``steps.count_steps``) and ascent and descent
(``terrain.ascent_descent``) then come from the same functions for all of them, with the model constants the
application built from its settings. So the same stream gives the same steps and descent whatever file or
service it arrived in.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TypedDict, Unpack

from stridecare.domain.run import CadenceSource, ParsedRun, Samples
from stridecare.domain.steps import CadenceConstants, count_steps, impossible_step_length
from stridecare.domain.terrain import ascent_descent


class RunHeader(TypedDict):
    """What a source read of a session besides its stream and the figures derived from it."""

    source: str
    source_key: str
    sport: str
    sub_sport: str | None
    start_time: datetime
    utc_offset_s: int | None
    elapsed_s: float
    timer_s: float
    distance_m: float


class RunDetails(TypedDict, total=False):
    """What some sources record of a session and others do not."""

    device: str | None
    device_total_strides: float | None
    name: str | None
    gear_id: str | None
    avg_heart_rate_bpm: float | None
    max_heart_rate_bpm: float | None


def normalised_run(
    samples: Samples,
    constants: CadenceConstants,
    header: RunHeader,
    *,
    session_steps: float | None = None,
    source_ascent_m: float | None = None,
    source_descent_m: float | None = None,
    **details: Unpack[RunDetails],
) -> ParsedRun:
    """The run of ``header``, ``details`` and ``samples``, with steps and climb by the model's rules.

    ``session_steps`` is the source's own step count (a FIT session's strides × 2, a summary's average cadence
    × time), used when the stream has no cadence; ``source_ascent_m`` and ``source_descent_m`` are its own
    climb totals, used when the stream has no altitude.
    """
    steps, cadence_source, avg_spm = count_steps(
        samples,
        distance_m=header["distance_m"],
        timer_s=header["timer_s"],
        session_steps=session_steps,
        constants=constants,
    )
    step_note = None
    if cadence_source is not CadenceSource.ESTIMATED and (
        why := impossible_step_length(steps, header["distance_m"], header["sport"])
    ):
        # The recorded cadence cannot be what the feet did: it is dropped, from the samples too (the load model
        # reads them), and the steps estimated from distance and speed as for a run without cadence.
        samples = replace(samples, cadence_spm=[None] * len(samples))
        steps, cadence_source, avg_spm = count_steps(
            samples, distance_m=header["distance_m"], timer_s=header["timer_s"], constants=constants
        )
        step_note = f"{why}: steps estimated from distance and speed ({steps:,.0f})"
    ascent, descent = ascent_descent(
        samples.altitude_m, source_ascent_m=source_ascent_m, source_descent_m=source_descent_m
    )
    return ParsedRun(
        **header,
        **details,
        ascent_m=ascent,
        descent_m=descent,
        steps=steps,
        avg_cadence_spm=avg_spm,
        cadence_source=cadence_source,
        samples=samples,
        step_note=step_note,
    )
