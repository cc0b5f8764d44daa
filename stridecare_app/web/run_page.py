"""``GET /dashboard/{athlete}/runs/{run_id}``: one run — pace, cadence, heart rate, steps by gait, its load and how
it compares, its flags, and the prompt it got with its reasons, or why it got none.

The same access rules as the dashboard (the admin session, or the athlete's secret link token), the same headers.
A run id that is no database id (other scripts' digits, more than 64 bits) is an unknown run, never an error.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recommender import feel
from recommender.run_detail import STOPPED_BELOW_MPS, run_detail
from stridecare.db.models import Athlete
from stridecare.links import athlete_key
from stridecare.runtime import Runtime
from stridecare_app.web.auth import db_id, is_admin
from stridecare_app.web.charts import DESK_SMALL, PHONE_SMALL, line_chart
from stridecare_app.web.dashboard import FORBIDDEN, authorized_athlete, with_token
from stridecare_app.web.pages import environment, html_response

# An athlete this reader may not see answers as on the dashboard, whatever the run id.
_ERRORS = {404: "<p>No such run.</p>", 403: FORBIDDEN}


def _pace_tick(seconds: float) -> str:
    total = round(seconds)
    return f"{total // 60}:{total % 60:02d}"


def _pace_label(seconds: float) -> str:
    return f"{_pace_tick(seconds)} /km"


def _cadence_label(spm: float) -> str:
    return f"{spm:.0f} spm"


def render_run(detail: dict[str, Any], token: str = "") -> str:
    """The page of one run from :func:`recommender.run_detail.run_detail`'s result."""
    series = detail["series"]
    charts: dict[str, dict[str, Any]] = {}
    # At least a minute per km of pace and 20 spm of cadence on the axis: an even run draws a flat line.
    for key, values, invert, span, text in (
        ("pace", series["pace_s_per_km"], True, 60.0, _pace_label),
        ("cadence", series["cadence_spm"], False, 20.0, _cadence_label),
    ):
        charts[key] = {
            frame_key: line_chart(series["t_min"], values, frame, invert=invert, min_span=span, value_text=text)
            for frame_key, frame in (("desk", DESK_SMALL), ("phone", PHONE_SMALL))
        }
    back = with_token(f"/dashboard/{quote(detail['athlete'], safe='')}", token)
    return (
        environment()
        .get_template("run.html.j2")
        .render(
            run=detail,
            charts=charts,
            back_url=back,
            pace_tick=_pace_tick,
            stopped_text=_pace_tick(series.get("stopped_s", 0)),
            stopped_below_kmh=f"{STOPPED_BELOW_MPS * 3.6:.1f}",
        )
    )


def _feel(session: Session, rt: Runtime, athlete: Athlete, run_id: int, detail: dict[str, Any]) -> dict[str, Any]:
    """The score given after the run, or the one-tap links to give it (the run's post-run prompt's, signed)."""
    row = feel.for_run(session, athlete.id, run_id, date.fromisoformat(detail["day"]))
    if row is not None:
        return {"text": feel.score_text(row.score, row.location), "high": row.score >= feel.HIGH, "links": []}
    prompt = next((p for p in detail.get("prompts", []) if p.get("kind") == "post_run"), None)
    if prompt is None:
        return {"text": None, "high": False, "links": []}
    key = athlete_key(rt.link_key, athlete.link_secret)
    return {"text": None, "high": False, "links": feel.score_links(rt.settings.effective_public_url, key, prompt["id"])}


def run_route(rt: Runtime) -> Route:
    """The route of the run page."""

    def _load(name: str, run_id: int | None, token: str, admin: bool) -> tuple[int, str]:
        with rt.db.read() as session:
            status, athlete = authorized_athlete(session, name, token, admin)
            if athlete is None:
                return status, _ERRORS[status]
            detail = run_detail(session, rt.settings, athlete, run_id) if run_id is not None else None
            if detail is not None and run_id is not None:
                detail["feel"] = _feel(session, rt, athlete, run_id, detail)
        if detail is None:
            return 404, _ERRORS[404]
        return 200, render_run(detail, "" if admin else token)

    async def run_page(request: Request) -> Response:
        run_id = db_id(request.path_params["run_id"])
        token = request.query_params.get("t", "")
        admin = await is_admin(request, rt)
        status, body = await run_in_threadpool(_load, request.path_params["athlete_name"], run_id, token, admin)
        return html_response(status, body)

    return Route("/dashboard/{athlete_name}/runs/{run_id}", run_page, methods=["GET"])
