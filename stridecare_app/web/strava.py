"""Strava's web endpoints: the OAuth connect page and callback, and the push subscription's callback.

Connecting needs the athlete's own authority: ``/strava/connect?t=TOKEN`` takes a signed, expiring,
single-use link made for one athlete (``stridecare strava connect --link NAME`` prints it, the admin's
home page offers it through :func:`connect_link`). Its GET only asks (link previews and mail scanners open
links); the POST spends the link and sends the browser to Strava with a signed ``state`` that is also kept in
a cookie. ``/strava/callback`` checks both and the accepted scope, and the state is spent before the code is
exchanged. Every refusal, an unknown athlete included, gets the same answer: no endpoint tells which names
exist. ``/strava/webhook`` answers Strava's validation GET (verify token compared in constant time) and takes
events by POST (bodies capped by :mod:`stridecare_app.web.limits`): it stores the event and answers 200 at
once, with no API call; a worker processes it. Every database touch runs off the event loop.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ingest.strava.errors import InvalidEvent, StravaError, StravaStateError
from ingest.strava.events import parse_event, store_event, subscription_matches
from ingest.strava.oauth import (
    STATE_TTL,
    authorization_url,
    check_connect_token,
    exchange_code,
    make_connect_token,
    make_state,
)
from stridecare.db.models import Athlete
from stridecare.runtime import Runtime
from stridecare.settings import Settings
from stridecare_app.web.limits import MAX_EVENT_BYTES
from stridecare_app.web.pages import Enqueue, page

log = logging.getLogger(__name__)

STATE_COOKIE = "stridecare_strava_state"
MAX_CHALLENGE_CHARS = 256
MAX_TOKEN_CHARS = 200
# The shape of a connect link's token and of an OAuth state (ingest.strava.oauth: id.issued.nonce.signature),
# with an id and a time that fit the database and a clock: anything else is refused before it is looked at.
_SIGNED_TOKEN = re.compile(r"[1-9][0-9]{0,17}\.[0-9]{1,11}\.[A-Za-z0-9_-]{1,40}\.[A-Za-z0-9_-]{1,64}")
_REFUSED = (
    "<h1>Link not valid</h1><p>This connect link is not valid, has expired or was already used. "
    "Ask for a new one (<code>stridecare strava connect --link NAME</code>).</p>"
)


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
                # deferred: start-up time of the web app (Celery, loaded by the first event it hands on)
                from workers.app import make_app
                from workers.strava_tasks import STRAVA_EVENT_TASK

                self._task = make_app(self._settings).tasks[STRAVA_EVENT_TASK]
            task = self._task
        task.apply_async(args=[event_id])


def connect_link(rt: Runtime, athlete_id: int) -> str:
    """A signed, expiring, single-use link with which the athlete connects their own Strava account."""
    with rt.db.read() as session:
        athlete = session.get(Athlete, athlete_id)
        if athlete is None:
            raise StravaStateError(f"no athlete {athlete_id}")
        token = make_connect_token(rt.settings, athlete, rt.now())
    return f"{rt.settings.effective_public_url}/strava/connect?t={quote(token, safe='')}"


def callback_url(settings: Settings) -> str:
    """Where Strava sends the browser back after the athlete approved (or declined)."""
    return settings.effective_public_url + "/strava/callback"


def routes(rt: Runtime, enqueue: Enqueue | None = None) -> list[BaseRoute]:
    """The Strava routes for ``rt``; events are enqueued with ``enqueue`` (default: the Celery task)."""
    send: Enqueue = enqueue if enqueue is not None else CeleryEnqueue(rt.settings)
    secure_cookie = rt.settings.effective_public_url.startswith("https://")

    def check_link(token: str, spend: bool) -> str:
        """Verify (and with ``spend`` use up) a connect link; the OAuth state for its athlete."""
        if not spend:
            with rt.db.read() as session:  # a look takes no write lock
                athlete_id = check_connect_token(session, rt.settings, token, rt.now(), spend=False)
        else:
            with rt.db.transaction() as session:
                athlete_id = check_connect_token(session, rt.settings, token, rt.now(), spend=True)
        return make_state(rt.settings, athlete_id, rt.now())

    async def connect(request: Request) -> Response:
        token = request.query_params.get("t", "")
        if not _SIGNED_TOKEN.fullmatch(token):  # never a 500 from odd digits, a huge id or a non-ASCII signature
            return page(_REFUSED, 403)
        try:
            state = await run_in_threadpool(check_link, token, request.method == "POST")
            url = authorization_url(rt.settings, callback_url(rt.settings), state)
        except StravaStateError:
            return page(_REFUSED, 403)
        except StravaError as err:
            return page(f"<p>{html.escape(str(err))}</p>", 503)
        if request.method == "GET":
            # Link previews and mail scanners open links: a GET only asks, the POST spends the link.
            return page(
                "<h1>Connect Strava</h1><p>Connect your Strava account to stridecare? New runs then arrive by "
                "themselves and your history is imported.</p>"
                f'<form method="post" action="?t={html.escape(quote(token, safe=""))}">'
                '<button type="submit">Continue to Strava</button></form>'
            )
        response = RedirectResponse(url, status_code=303)
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
        if not code or not state or len(code) > MAX_TOKEN_CHARS or not _SIGNED_TOKEN.fullmatch(state):
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
        # The app's BodyLimit stops the read at MAX_EVENT_BYTES (413); this bounds the body even without it.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_EVENT_BYTES:
                return JSONResponse({"error": "too large"}, status_code=413, headers={"Connection": "close"})
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            event = parse_event(json.loads(body))
        except (ValueError, RecursionError, InvalidEvent) as err:
            return JSONResponse({"error": str(err) if isinstance(err, InvalidEvent) else "bad json"}, 400)
        if not subscription_matches(rt.settings, event):
            # Unsigned events: one for another subscription is not ours to act on. 200, so nobody retries,
            # and the same answer as for the right id, so the answer does not tell an outsider which id is ours.
            log.info("Strava event for unknown subscription %s ignored", event["subscription_id"])
            return JSONResponse({"status": "ok"})
        await run_in_threadpool(store_and_enqueue, event)
        return JSONResponse({"status": "ok"})

    return [
        Route("/strava/connect", connect, methods=["GET", "POST"]),
        Route("/strava/callback", callback, methods=["GET"]),
        Route("/strava/webhook", validate, methods=["GET"]),
        Route("/strava/webhook", receive, methods=["POST"]),
    ]
