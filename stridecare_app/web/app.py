"""The Starlette application. Handlers are thin: they check input and call plain functions."""

from __future__ import annotations

import html
from urllib.parse import urlsplit

from sqlalchemy import select, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from recommender.feedback import UnknownPrompt, record_done
from stridecare.db.models import Athlete, Prompt, utcnow
from stridecare.links import athlete_key, check_done, check_unsubscribe
from stridecare.plugins import channel_options, patch_channel_options
from stridecare.runtime import Runtime
from stridecare_app.web import auth, dashboard, feel_page, home, manifest, metrics, run_page, strava
from stridecare_app.web.auth import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    HostGuard,
    TrustedProxies,
    db_id,
    host_name,
    plain,
    session_secret,
)
from stridecare_app.web.limits import DEFAULT_MAX_BODY_BYTES, MAX_EVENT_BYTES, BodyLimit
from stridecare_app.web.pages import Enqueue, page


def create_app(rt: Runtime, enqueue: Enqueue | None = None) -> Starlette:
    """Build the web app around ``rt``; Strava events go to ``enqueue`` (default: the Celery task).

    Tests pass their own ``enqueue`` (a recorder, a broker that is down) instead of patching the module. Who may
    see what is :mod:`stridecare_app.web.auth`'s: its middleware wraps every route.
    """

    def ping() -> None:
        with rt.db.read() as session:
            session.execute(text("SELECT 1"))

    async def healthz(_: Request) -> Response:
        try:
            # Off the event loop: a query is blocking I/O even when it waits for no lock.
            await run_in_threadpool(ping)
        except Exception as exc:
            return JSONResponse({"status": "error", "database": exc.__class__.__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    def link_key_of(athlete_id: int | None = None, prompt_id: str | None = None) -> bytes | None:
        """The signing key of the athlete's links (by id or by one of their prompts); None when unknown."""
        with rt.db.read() as session:
            query = select(Athlete.link_secret)
            if prompt_id is not None:
                query = query.join(Prompt, Prompt.athlete_id == Athlete.id).where(Prompt.id == prompt_id)
            else:
                query = query.where(Athlete.id == athlete_id)
            secret = session.scalar(query)
        return athlete_key(rt.link_key, secret) if secret else None

    def record(prompt_id: str) -> None:
        with rt.db.transaction() as session:
            record_done(session, prompt_id, rt.now())

    def unsubscribe_now(athlete_id: int) -> None:
        with rt.db.transaction() as session:
            # Locked: the channels' settings are one JSON value that `athlete set` may be writing meanwhile.
            athlete = session.get(Athlete, athlete_id, with_for_update=True)
            if athlete is not None and not channel_options(athlete, "email").get("unsubscribed_at"):
                patch_channel_options(athlete, "email", unsubscribed_at=utcnow())

    async def done(request: Request) -> Response:
        prompt_id = plain(request.path_params["prompt_id"], 64)
        sig = plain(request.query_params.get("sig", ""))
        key = await run_in_threadpool(link_key_of, None, prompt_id) if prompt_id and sig else None
        # An unknown prompt answers like a forged link: the answer tells nothing about what exists.
        if key is None or not check_done(key, prompt_id, sig):
            return page("<p>This link is not valid.</p>", 403)
        if request.method == "GET":
            # Mail scanners open links: a GET only asks, the POST records.
            return page(
                "<h1>Nice work</h1><p>Record this routine as done?</p>"
                f'<form method="post" action="?sig={html.escape(sig)}"><button type="submit">'
                "Yes, done</button></form>"
            )
        try:
            await run_in_threadpool(record, prompt_id)
        except UnknownPrompt:
            return page("<p>That prompt no longer exists.</p>", 404)
        return page("<h1>Recorded</h1><p>Thanks — your feet will thank you too.</p>")

    async def unsubscribe(request: Request) -> Response:
        athlete_id = db_id(request.path_params["athlete_id"])
        list_name = plain(request.path_params["list_name"], 64)
        sig = plain(request.query_params.get("sig", ""))
        # Every refusal alike, a malformed or unknown id included: the answer tells nothing about who exists.
        key = await run_in_threadpool(link_key_of, athlete_id) if athlete_id and list_name and sig else None
        if athlete_id is None or key is None or not check_unsubscribe(key, athlete_id, list_name, sig):
            return PlainTextResponse("invalid link", status_code=403)
        if request.method == "GET":
            return page(
                "<p>Stop receiving stridecare emails?</p>"
                f'<form method="post" action="?sig={html.escape(sig)}"><button>Unsubscribe</button></form>'
            )
        # RFC 8058: a cookieless POST that answers directly, with no redirect.
        await run_in_threadpool(unsubscribe_now, athlete_id)
        return PlainTextResponse("unsubscribed")

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/done/{prompt_id}", done, methods=["GET", "POST"]),
        Route("/unsubscribe/{athlete_id}/{list_name}", unsubscribe, methods=["GET", "POST"]),
    ]
    routes += _page_routes(rt, enqueue)
    app = Starlette(routes=routes, middleware=middleware(rt))
    app.state.runtime = rt
    return app


def middleware(rt: Runtime) -> list[Middleware]:
    """Outermost first: the Host check, the trusted proxies' headers, body caps, the signed session cookie."""
    settings = rt.settings
    proxies = TrustedProxies(settings.trusted_proxies)
    public_host = host_name(urlsplit(settings.effective_public_url).netloc) or "localhost"
    stack = [Middleware(HostGuard, public_host=public_host, proxies=proxies)]
    if proxies:
        stack.append(Middleware(ProxyHeadersMiddleware, trusted_hosts=proxies.uvicorn_list()))
    # Every body is bounded while it is read; Strava's events are a few hundred bytes.
    stack.append(Middleware(BodyLimit, default=DEFAULT_MAX_BODY_BYTES, limits={"/strava/webhook": MAX_EVENT_BYTES}))
    stack.append(
        Middleware(
            SessionMiddleware,
            secret_key=session_secret(settings),
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE_S,
            same_site="strict",
            https_only=settings.effective_public_url.startswith("https://"),
        )
    )
    return stack


def _page_routes(rt: Runtime, enqueue: Enqueue | None) -> list[BaseRoute]:
    """The routes of the page modules (Strava, metrics, dashboard and run pages, home page, login)."""
    return [
        *strava.routes(rt, enqueue),
        *metrics.routes(rt),
        *dashboard.routes(rt),
        run_page.run_route(rt),
        *home.routes(rt),
        *auth.routes(rt),
        *feel_page.routes(rt),
        *manifest.routes(),
    ]
