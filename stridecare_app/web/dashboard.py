"""``GET /dashboard/{athlete}?range=6w|6m|1y|all``: the athlete's load chart, flags with their reasons, the runs
of the range (each linking to its page, see ``run_page``), weekly volume, shoes and routine adherence.

Server-rendered HTML with inline SVG charts: no scripts, no build step, no external assets. Each chart is drawn
for a desk and for a phone (``charts``), and the page shows one by CSS, so labels stay at 12 px or more at
390 px. Flag reasons are text on the page (the chart's numbered markers link to them), never hover-only. A reader
who came with the secret link finds it carried on every link of the page.

Access (see :mod:`stridecare_app.web.auth`): the admin session opens every athlete's pages; anyone else needs
the athlete's secret link token (``?t=<dashboard_token>``), compared in constant time. Where the request comes
from counts for nothing. Without the session an unknown athlete and a missing or wrong token get the same
answer (403, same body), so the page tells nobody which names exist; the admin gets 404 for an unknown name.
The page is sent with ``no-store`` and ``no-referrer`` so that the token in its address is neither cached nor
passed on to other sites.
"""

from __future__ import annotations

import hmac
from datetime import date
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recommender import feel
from recommender.dashboard_data import RANGES, dashboard_data
from stridecare.db.models import Athlete
from stridecare.handles import is_handle
from stridecare.runtime import Runtime
from stridecare_app.web.auth import is_admin
from stridecare_app.web.charts import DESK, PHONE, load_chart
from stridecare_app.web.manifest import MANIFEST_PATH
from stridecare_app.web.pages import environment, html_response


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of the link token (no early exit that would leak a matching prefix)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def with_token(path: str, token: str, **params: str) -> str:
    """``path`` with its query: ``params`` and, for a reader who came with the secret link, the token again."""
    query = {**params, **({"t": token} if token else {})}
    return f"{path}?{urlencode(query)}" if query else path


def render_dashboard(data: dict[str, Any], token: str = "", home: bool = False) -> str:
    """The dashboard page for ``dashboard_data``'s result; links carry ``token`` when the reader used one."""
    base = f"/dashboard/{quote(data['athlete'], safe='')}"

    def range_url(key: str) -> str:
        return with_token(base, token, range=key)

    def run_url(run_id: int) -> str:
        return with_token(f"{base}/runs/{run_id}", token)

    return (
        environment()
        .get_template("dashboard.html.j2")
        .render(
            data=data,
            desk=load_chart(data, DESK),
            phone=load_chart(data, PHONE),
            range_url=range_url,
            run_url=run_url,
            home_url="/" if home else None,
            # Kept on a phone's home screen, the app opens on this dashboard, with the secret link when used.
            manifest_url=f"{MANIFEST_PATH}?{urlencode({'start': with_token(base, token)})}",
        )
    )


# Longer than any dashboard token: a longer one is no token.
MAX_TOKEN_CHARS = 128


def authorized_athlete(session: Session, name: str, token: str, admin: bool) -> tuple[int, Athlete | None]:
    """The athlete ``name`` if this reader may see them: ``(200, athlete)``, else ``(403 or 404, None)``.

    Without the admin session an unknown name answers exactly as a wrong token does (403)."""
    athlete = None
    if is_handle(name):  # anything else names nobody (and a NUL byte would upset PostgreSQL)
        athlete = session.scalar(select(Athlete).where(Athlete.name == name))
    if admin:
        return (200, athlete) if athlete is not None else (404, None)
    if athlete is None or not token or len(token) > MAX_TOKEN_CHARS:
        return 403, None
    if not token_matches(token, athlete.dashboard_token):
        return 403, None
    return 200, athlete


# One answer for "no such athlete" and "not yours to see" (see authorized_athlete).
FORBIDDEN = '<p>This page needs its secret link, or the admin\'s login (<a href="/login">log in</a>).</p>'
_ERRORS = {404: "<p>No such athlete.</p>", 403: FORBIDDEN}


def routes(rt: Runtime) -> list[Route]:
    """The dashboard route for the web app (picked up by ``stridecare_app.web.app._page_routes``)."""

    def _load(name: str, token: str, admin: bool, range_key: str | None) -> tuple[int, str]:
        with rt.db.read() as session:
            status, athlete = authorized_athlete(session, name, token, admin)
            if athlete is None:
                return status, _ERRORS[status]
            data = dashboard_data(session, rt.settings, athlete, rt.now(), range_key=range_key)
            flag_days = [date.fromisoformat(f["day"]) for f in data["flags"]]
            data["feel"] = feel.strip(
                session, athlete.id, date.fromisoformat(data["first_day"]), date.fromisoformat(data["today"]), flag_days
            )
        # The admin's links need no token: one in the address would only be copied along.
        return 200, render_dashboard(data, "" if admin else token, home=admin)

    async def dashboard(request: Request) -> Response:
        name = request.path_params["athlete_name"]
        token = request.query_params.get("t", "")
        range_key = request.query_params.get("range") or None
        if range_key is not None and range_key not in RANGES:
            return html_response(400, "<p>Unknown range: use 6w, 6m, 1y or all.</p>")
        admin = await is_admin(request, rt)
        status, body = await run_in_threadpool(_load, name, token, admin, range_key)
        return html_response(status, body)

    return [Route("/dashboard/{athlete_name}", dashboard, methods=["GET"])]
