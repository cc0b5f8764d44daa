"""``GET /``: the installation at a glance — athletes, their inbox folders, last runs and prompts, health, and a
"Connect Strava" button per athlete.

Loopback only, like the operator's command line: a request from another machine (or through a proxy, see
:func:`~stridecare_app.web.dashboard.is_loopback_request`) gets 404, so the page does not even say it exists.
The ``Host`` header must name this machine too: a web page elsewhere that rebinds its own name to 127.0.0.1
would otherwise read the page (and the connect links on it) from the runner's own browser.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recommender.overview import overview
from stridecare.runtime import Runtime
from stridecare_app.web.dashboard import environment, html_response, is_loopback_request

log = logging.getLogger(__name__)

_LOCAL_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}


def host_is_local(request: Request, rt: Runtime) -> bool:
    """True when the ``Host`` header names this machine: a loopback name, the web host, or the public URL's."""
    host = request.headers.get("host", "")
    name = urlsplit(f"//{host}").hostname or ""
    allowed = _LOCAL_NAMES | {rt.settings.web_host, urlsplit(rt.settings.effective_public_url).hostname or ""}
    return name in allowed or f"[{name}]" in allowed


def _connect_links(rt: Runtime, athletes: list[dict[str, Any]]) -> dict[int, str]:
    """A fresh signed connect link per athlete (none when Strava is not configured or the route is absent)."""
    if not rt.settings.strava_client_id:
        return {}
    try:
        from stridecare_app.web.strava import connect_link
    except ImportError:
        return {}
    links: dict[int, str] = {}
    for athlete in athletes:
        try:
            links[athlete["id"]] = connect_link(rt, athlete["id"])
        except Exception as exc:  # one athlete's link failing must not take the page down
            log.warning("no Strava connect link for %s: %s", athlete["name"], exc.__class__.__name__)
    return links


def render_home(data: dict[str, Any], connect: dict[int, str]) -> str:
    """The home page for :func:`recommender.overview.overview`'s result."""
    return environment().get_template("home.html.j2").render(data=data, connect=connect)


def routes(rt: Runtime) -> list[Route]:
    """The home route (picked up by ``stridecare_app.web.app._page_routes``)."""

    def _load() -> str:
        with rt.db.read() as session:  # a page view takes no write lock
            data = overview(session, rt.settings, rt.now())
        return render_home(data, _connect_links(rt, data["athletes"]))

    async def home(request: Request) -> Response:
        if not (is_loopback_request(request) and host_is_local(request, rt)):
            return html_response(404, "<p>Not found.</p>")
        return html_response(200, await run_in_threadpool(_load))

    return [Route("/", home, methods=["GET"])]
