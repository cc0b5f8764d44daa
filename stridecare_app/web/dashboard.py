"""``GET /dashboard/{athlete}``: the athlete's load chart, weekly volume, recent runs and routine adherence.

Server-rendered HTML with an inline SVG chart: no scripts, no build step, no external assets.

Access. The web app listens on 127.0.0.1 by default, and a request from this machine is allowed as is. Any
other request needs the athlete's secret link token (``?t=<dashboard_token>``), compared in constant time.
A request that carries proxy headers (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) is treated as remote
even when its TCP peer is loopback, because a reverse proxy on this machine would otherwise make every visitor
look local. Unknown athletes answer 404, a missing or wrong token 403. The page is sent with ``no-store`` and
``no-referrer`` so that the token in its address is neither cached nor passed on to other sites.
"""

from __future__ import annotations

import hmac
import ipaddress
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from recommender.dashboard_data import dashboard_data
from stridecare.db.models import Athlete
from stridecare.runtime import Runtime

_TEMPLATES = Path(__file__).with_name("templates")
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
}

# Chart geometry (SVG user units); the SVG scales to the page width through its viewBox.
WIDTH, HEIGHT = 840.0, 260.0
LEFT, RIGHT, TOP, BOTTOM = 44.0, 12.0, 18.0, 28.0


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def is_loopback_request(request: Request) -> bool:
    """True when the TCP peer is loopback and no proxy says it forwarded the request for someone else."""
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of the link token (no early exit that would leak a matching prefix)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _nice_max(value: float) -> float:
    """A round upper bound for the y axis (1, 2, 2.5, 5 × 10ⁿ)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def chart_model(data: dict[str, Any]) -> dict[str, Any]:
    """SVG geometry for the daily load chart: one bar per day, acute and chronic polylines, flag markers."""
    days: list[dict[str, Any]] = data["days"]
    n = max(1, len(days))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max([1.0, *(max(d["load"], d["acute"], d["chronic"]) for d in days)]))
    slot = plot_w / n

    def y(value: float) -> float:
        return round(TOP + plot_h - (value / top) * plot_h, 2)

    bars = []
    index_of: dict[str, int] = {}
    for i, d in enumerate(days):
        index_of[d["day"]] = i
        x = LEFT + i * slot
        height = round(plot_h * d["load"] / top, 2)
        bars.append(
            {
                **d,
                "x": round(x + slot * 0.15, 2),
                "y": round(TOP + plot_h - height, 2),
                "width": round(slot * 0.7, 2),
                "height": height,
                "cx": round(x + slot / 2, 2),
                "flagged": False,
            }
        )

    def line(key: str) -> str:
        return " ".join(f"{b['cx']},{y(b[key])}" for b in bars)

    markers = []
    for flagged in data["flags"]:
        at = index_of.get(flagged["day"])
        if at is None:
            continue
        bar = bars[at]
        bar["flagged"] = True
        markers.append(
            {
                "run_id": flagged["run_id"],
                "day": flagged["day"],
                "names": " ".join(f["name"] for f in flagged["flags"]),
                "title": "; ".join(f"{f['name']}: {f['reason']}" for f in flagged["flags"]),
                "cx": bar["cx"],
                "cy": round(max(TOP - 8, bar["y"] - 9), 2),
            }
        )
    ticks = [{"value": round(top * k / 4, 1), "y": y(top * k / 4)} for k in range(5)]
    labels = []
    for i, b in enumerate(bars):
        day = date.fromisoformat(b["day"])
        if day.weekday() == 0 or i == 0:
            labels.append({"x": b["cx"], "text": f"{day.day} {day:%b}"})
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "baseline": TOP + plot_h,
        "bars": bars,
        "acute": line("acute"),
        "chronic": line("chronic"),
        "markers": markers,
        "ticks": ticks,
        "labels": labels,
    }


def _clock(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}" if hours else f"0:{rest // 60:02d}"


def render_dashboard(data: dict[str, Any]) -> str:
    """The dashboard page for ``dashboard_data``'s result."""
    return _environment().get_template("dashboard.html.j2").render(data=data, chart=chart_model(data), clock=_clock)


def routes(rt: Runtime) -> list[Route]:
    """The dashboard route for the web app (picked up by ``stridecare_app.web.app._optional_routes``)."""

    def _load(name: str, token: str, loopback: bool) -> tuple[int, str]:
        with rt.db.transaction() as session:
            athlete = session.scalar(select(Athlete).where(Athlete.name == name))
            if athlete is None:
                return 404, "<p>No such athlete.</p>"
            if not loopback and not (token and token_matches(token, athlete.dashboard_token)):
                return 403, "<p>This dashboard needs its secret link.</p>"
            data = dashboard_data(session, rt.settings, athlete, rt.now())
        return 200, render_dashboard(data)

    async def dashboard(request: Request) -> Response:
        name = request.path_params["athlete_name"]
        token = request.query_params.get("t", "")
        status, body = await run_in_threadpool(_load, name, token, is_loopback_request(request))
        if status != 200:
            body = f'<!doctype html><html lang="en"><meta charset="utf-8"><title>stridecare</title>{body}</html>'
        return HTMLResponse(body, status_code=status, headers=_SECURITY_HEADERS)

    return [Route("/dashboard/{athlete_name}", dashboard, methods=["GET"])]
