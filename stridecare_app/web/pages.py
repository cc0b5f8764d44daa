"""What every page module shares: the plain HTML shell, the Jinja environment of the templates, the response
with the headers that keep a token in the address private, and the hand-off of Strava events to the workers.

The page modules (``auth``, ``dashboard``, ``run_page``, ``home``, ``strava``, ``metrics``) import this one and
``app`` imports them all, so no page module needs ``app`` and none imports another in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from recommender.figures import number_text, spec
from recommender.run_detail import flag_title, pace_text, routine_title

# Hands a stored Strava event's id to the workers (the Celery task by default).
Enqueue = Callable[[int], Any]

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>stridecare</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}}
button{{font-size:1.1rem;padding:.6rem 1.2rem}}</style></head><body>{body}</body></html>"""

_TEMPLATES = Path(__file__).with_name("templates")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data: 'self'; manifest-src 'self'; "
        "frame-ancestors 'none'"
    ),
}


def page(body: str, status: int = 200) -> HTMLResponse:
    """A minimal HTML page around ``body`` (already escaped by the caller)."""
    return HTMLResponse(_PAGE.format(body=body), status_code=status)


def html_response(status: int, body: str) -> HTMLResponse:
    """The page, or a short error page, with the headers that keep a token in the address private."""
    if status != 200:
        body = f'<!doctype html><html lang="en"><meta charset="utf-8"><title>stridecare</title>{body}</html>'
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def clock(seconds: float) -> str:
    """``1:05`` (hours:minutes) of a duration in seconds."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}"


def pace(timer_s: float, distance_m: float) -> str | None:
    """``5:12 /km`` of a run, None for a run too short to have one."""
    return pace_text(timer_s / (distance_m / 1000)) if distance_m > 50 else None


@cache
def environment() -> Environment:
    """The Jinja environment of the web pages (autoescaped, strict), with the filters the templates use."""
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["routine_title"] = routine_title
    env.globals.update(
        flag_title=flag_title, clock=clock, pace=pace, number_text=number_text, figure_label=lambda key: spec(key).label
    )
    return env
