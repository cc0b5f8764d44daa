"""Strava's web endpoints: the OAuth connect redirect and callback, and the push subscription's callback.

``/strava/connect?athlete=NAME`` sends the browser to Strava with a signed ``state`` that is also kept in a
cookie; ``/strava/callback`` checks both and the accepted scope before the code is exchanged.
``/strava/webhook`` answers Strava's validation GET (verify token compared in constant time) and takes events
by POST: it stores the event and answers 200 at once, with no API call; a worker processes it.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ingest.strava.events import InvalidEvent, parse_event, store_event, subscription_matches
from ingest.strava.oauth import (
    STATE_TTL,
    StravaError,
    authorization_url,
    exchange_code,
    make_state,
)
from stridecare.db.athletes import UnknownAthlete, get_athlete
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.web.app import page

log = logging.getLogger(__name__)

STATE_COOKIE = "stridecare_strava_state"
# Strava's events are a few hundred bytes; anything much larger is not from Strava.
MAX_EVENT_BYTES = 16 * 1024
MAX_CHALLENGE_CHARS = 256

Enqueue = Callable[[int], Any]


class CeleryEnqueue:
    """Enqueues ``stridecare.strava_event`` with an event id on the broker of ``settings``.

    The Celery app is built for these settings on first use and the task is taken from it, not from Celery's
    "current app": that one is thread-local, and the handlers' threadpool threads would otherwise fall back to
    Celery's default app and broker.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._task: Any = None
        self._lock = threading.Lock()

    def __call__(self, event_id: int) -> None:
        """Send the task (ids only: arguments end up in broker and worker logs)."""
        with self._lock:
            if self._task is None:
                from workers.app import make_app
                from workers.strava_tasks import STRAVA_EVENT_TASK

                self._task = make_app(self._settings).tasks[STRAVA_EVENT_TASK]
            task = self._task
        task.apply_async(args=[event_id])


def callback_url(settings: Settings) -> str:
    """Where Strava sends the browser back after the athlete approved (or declined)."""
    return settings.effective_public_url + "/strava/callback"


def routes(rt: Runtime, enqueue: Enqueue | None = None) -> list[BaseRoute]:
    """The Strava routes for ``rt``; events are enqueued with ``enqueue`` (default: the Celery task)."""
    send: Enqueue = enqueue if enqueue is not None else CeleryEnqueue(rt.settings)
    secure_cookie = rt.settings.effective_public_url.startswith("https://")

    async def connect(request: Request) -> Response:
        name = request.query_params.get("athlete") or rt.settings.default_athlete

        def start() -> str:
            with rt.db.sessions() as session:
                athlete_id = get_athlete(session, name).id
            return make_state(rt.settings, athlete_id, rt.now())

        try:
            state = await run_in_threadpool(start)
            url = authorization_url(rt.settings, callback_url(rt.settings), state)
        except UnknownAthlete:
            return page(f"<p>No athlete named {html.escape(name)}.</p>", 404)
        except StravaError as err:
            return page(f"<p>{html.escape(str(err))}</p>", 503)
        response = RedirectResponse(url, status_code=302)
        # The state is also signed, but the cookie ties it to this browser: a link with someone else's state
        # cannot connect their Strava account to this athlete (login CSRF).
        response.set_cookie(
            STATE_COOKIE,
            state,
            max_age=int(STATE_TTL.total_seconds()),
            path="/strava",
            httponly=True,
            samesite="lax",
            secure=secure_cookie,
        )
        return response

    async def callback(request: Request) -> Response:
        params = request.query_params
        if params.get("error"):
            return page("<h1>Not connected</h1><p>Strava access was not granted.</p>", 400)
        code, state = params.get("code"), params.get("state")
        if not code or not state:
            return page("<p>Strava did not send a code; start again.</p>", 400)
        cookie = request.cookies.get(STATE_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), state.encode()):
            return page("<p>This connection was not started in this browser; start again.</p>", 400)
        try:
            connected = await run_in_threadpool(
                lambda: exchange_code(
                    rt.db,
                    rt.settings,
                    code=code,
                    state=state,
                    accepted_scope=params.get("scope"),
                    now=rt.now(),
                )
            )
        except StravaError as err:
            # The oauth module's messages never carry tokens or the code.
            response = page(f"<h1>Not connected</h1><p>{html.escape(str(err))}</p>", 400)
        else:
            response = page(
                "<h1>Strava connected</h1><p>New runs arrive automatically; your history is imported in "
                f"the background (Strava athlete {connected.strava_athlete_id}).</p>"
            )
        response.delete_cookie(STATE_COOKIE, path="/strava")
        return response

    async def validate(request: Request) -> Response:
        params = request.query_params
        expected = rt.settings.strava_verify_token
        token = params.get("hub.verify_token", "")
        challenge = params.get("hub.challenge", "")
        ok = (
            expected is not None
            and params.get("hub.mode") == "subscribe"
            and hmac.compare_digest(token.encode(), expected.get_secret_value().encode())
            and 0 < len(challenge) <= MAX_CHALLENGE_CHARS
        )
        if not ok:
            log.warning("Strava subscription validation refused (wrong verify token or mode)")
            return JSONResponse({"error": "forbidden"}, status_code=403)
        return JSONResponse({"hub.challenge": challenge})

    def store_and_enqueue(event: dict[str, Any]) -> None:
        # One threadpool hop for both: under load each hop back to the event loop costs more than the work.
        stored = store_event(rt, event)
        if not stored.created:
            return  # Strava's retry of an event already stored (and enqueued, or left to the sweep)
        try:
            send(stored.id)  # after the commit: the worker finds the row
        except Exception as err:  # the broker is down: the periodic sweep enqueues it later
            log.warning("Strava event %s stored but not enqueued (%s)", stored.id, type(err).__name__)

    async def receive(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_EVENT_BYTES:
            return JSONResponse({"error": "too large"}, status_code=413)
        try:
            event = parse_event(json.loads(body))
        except (ValueError, RecursionError, InvalidEvent) as err:
            return JSONResponse({"error": str(err) if isinstance(err, InvalidEvent) else "bad json"}, 400)
        if not subscription_matches(rt.settings, event):
            # Unsigned events: one for another subscription is not ours to act on. 200, so nobody retries.
            log.info("Strava event for unknown subscription %s ignored", event["subscription_id"])
            return JSONResponse({"status": "ignored"})
        await run_in_threadpool(store_and_enqueue, event)
        return JSONResponse({"status": "ok"})

    return [
        Route("/strava/connect", connect, methods=["GET"]),
        Route("/strava/callback", callback, methods=["GET"]),
        Route("/strava/webhook", validate, methods=["GET"]),
        Route("/strava/webhook", receive, methods=["POST"]),
    ]
