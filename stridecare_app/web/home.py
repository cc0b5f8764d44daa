"""``GET /``: the installation at a glance — the coach's roster (every athlete ordered by what needs attention,
``?group=`` to filter, :mod:`recommender.roster`), then athletes' inbox folders, last runs and prompts, health,
and a "Connect Strava" button per athlete (for up to :data:`CARDS_MAX` athletes: a big roster filters by group).

The admin's page: it needs the admin session (:mod:`stridecare_app.web.auth`), whoever connects and from
wherever; without one it sends the browser to ``/login``. The connect links on it are each athlete's authority
to link a Strava account, so nobody else ever sees them. (The ``Host`` check for every route is auth's
``HostGuard``.)
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ingest.connectors.ledger import account_states
from ingest.strava.ratelimit import app_status
from recommender.overview import health, overview
from recommender.roster import groups, roster
from stridecare.runtime import Runtime
from stridecare_app.web.auth import csrf_token, is_admin
from stridecare_app.web.pages import environment, html_response
from stridecare_app.web.strava import connect_link

log = logging.getLogger(__name__)

# Above this many athletes (of the group shown) the page keeps to the roster: each card costs a few queries.
CARDS_MAX = 30


def _connect_links(rt: Runtime, athletes: list[dict[str, Any]]) -> dict[int, str]:
    """A fresh signed connect link per athlete (none when Strava is not configured)."""
    if not rt.settings.strava_client_id:
        return {}
    links: dict[int, str] = {}
    for athlete in athletes:
        try:
            links[athlete["id"]] = connect_link(rt, athlete["id"])
        except Exception as exc:  # one athlete's link failing must not take the page down
            log.warning("no Strava connect link for %s: %s", athlete["name"], exc.__class__.__name__)
    return links


def render_home(data: dict[str, Any], connect: dict[int, str], csrf: str = "") -> str:
    """The home page for :func:`recommender.overview.overview`'s result with ``roster``, ``groups`` and ``group``
    added (``csrf``: the log-out form's token)."""
    data.setdefault("roster", [])
    data.setdefault("groups", [])
    data.setdefault("group", None)
    data.setdefault("cards_hidden", 0)
    return environment().get_template("home.html.j2").render(data=data, connect=connect, csrf=csrf)


def routes(rt: Runtime) -> list[Route]:
    """The home route (picked up by ``stridecare_app.web.app._page_routes``)."""

    def _load(csrf: str, group: str | None) -> str:
        with rt.db.read() as session:  # a page view takes no write lock
            now = rt.now()
            rows = roster(session, now, group)
            if len(rows) <= CARDS_MAX:
                data = overview(session, rt.settings, now)
                shown = {r["name"] for r in rows}
                data["athletes"] = [a for a in data["athletes"] if a["name"] in shown]
            else:
                data = {
                    "athletes": [],
                    "orphan_inboxes": [],
                    "health": health(session, rt.settings, now),
                    "strava_configured": bool(rt.settings.strava_client_id),
                }
                data["cards_hidden"] = len(rows)
            data["roster"], data["groups"], data["group"] = rows, groups(session), group
            data["strava_app"] = app_status(session) if rt.settings.strava_client_id else None
        accounts: dict[str, list[Any]] = {}  # connector accounts by athlete, as `stridecare sources` shows them
        for state in account_states(rt.db):
            accounts.setdefault(state.athlete, []).append(state)
        data["accounts"] = accounts
        return render_home(data, _connect_links(rt, data["athletes"]), csrf)

    async def home(request: Request) -> Response:
        if not await is_admin(request, rt):
            return RedirectResponse("/login", status_code=303)
        group = " ".join(request.query_params.get("group", "").split())[:64] or None
        return html_response(200, await run_in_threadpool(_load, csrf_token(request), group))

    return [Route("/", home, methods=["GET"])]
