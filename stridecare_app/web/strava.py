"""Strava's web endpoints: the OAuth connect page and callback, and the push subscription's callback.

Connecting needs the athlete's own authority: ``/strava/connect?t=TOKEN`` takes a signed, expiring,
single-use link made for one athlete (``stridecare strava connect --link NAME`` prints it, the admin's
home page offers it through :func:`connect_link`). Its GET only asks (link previews and mail scanners open
links); the POST spends the link and sends the browser to Strava with a signed ``state`` that is also kept in
a cookie. ``/strava/callback`` checks both and the accepted scope, and the state is spent before the code is
exchanged. Every refusal, an unknown athlete included, gets the same answer: no endpoint tells which names
exist. ``/strava/webhook`` answers Strava's validation GET (verify token compared in constant time) and takes
events by POST (bodies capped by :mod:`stridecare_app.web.limits`): it appends the event and answers 200 once
it is committed, with no API call and no broker message of its own. Events that arrive together share one
commit (:class:`stridecare.db.group_commit.GroupCommit`), and each commit that stored a new event tells the
workers to look (one ``stridecare.strava_drain`` nudge, at most one per :data:`NUDGE_INTERVAL_S`): the events
table is the queue. Every database touch runs off the event loop.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ingest.strava.errors import InvalidEvent, StravaError, StravaStateError
from ingest.strava.events import StoredEvent, append_events, parse_event, subscription_matches
from ingest.strava.oauth import (
    STATE_TTL,
    authorization_url,
    check_connect_token,
    exchange_code,
    make_connect_token,
    make_state,
)
from stridecare.db.group_commit import GroupCommit
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


# The workers are told to look at most this often: a nudge asked for meanwhile is sent when the interval ends, so
# the last events of a burst are never left without one. A drain takes every event due when it runs.
NUDGE_INTERVAL_S = 0.1


class CeleryNudge:
    """Tells the workers that events wait: sends ``stridecare.strava_drain`` on the broker of ``settings``, from
    a thread of its own (a commit never waits for the broker) and at most once per :data:`NUDGE_INTERVAL_S`.

    The Celery app is built for these settings on first use and the task is taken from it, not from Celery's
    "current app": that one is thread-local. A nudge lost with a broker that is down, or with the process, is
    made up by the beat's tick, which asks for a drain whenever an event is due.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __call__(self, _last_event_id: int) -> None:
        """Ask for a drain (the id of the batch's newest event is not needed: a drain takes all that are due)."""
        self._wanted.set()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="strava-nudge", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        # deferred: start-up time of the web app (Celery, loaded by the first event it hands on)
        from workers.app import make_app
        from workers.strava_tasks import STRAVA_DRAIN_TASK

        task = make_app(self._settings).tasks[STRAVA_DRAIN_TASK]
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                task.apply_async()
            except Exception as err:  # the broker is down: the tick asks for the drain instead
                log.warning("Strava events stored but no drain asked for (%s)", type(err).__name__)
            time.sleep(NUDGE_INTERVAL_S)


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
    """The Strava routes for ``rt``. After each commit that stored new events, ``enqueue`` is called once with
    the newest one's id (default: :class:`CeleryNudge`, the drain task's nudge)."""
    send: Enqueue = enqueue if enqueue is not None else CeleryNudge(rt.settings)

    def write(conn: Connection, events: Sequence[dict[str, Any]]) -> Sequence[StoredEvent]:
        return append_events(conn, events, rt.now())

    def committed(stored: Sequence[StoredEvent]) -> None:
        # Before the callers are answered, so that whoever got a 200 may count on the nudge having been asked.
        new = [s.id for s in stored if s.created]
        if not new:
            return  # Strava's retries of events already stored (and drained, or left to the tick)
        try:
            send(max(new))
        except Exception as err:  # the broker is down: the tick asks for a drain while any event is due
            log.warning(
                "Strava events %s..%s stored but no drain asked for (%s)", min(new), max(new), type(err).__name__
            )

    appender: GroupCommit[dict[str, Any], StoredEvent] = GroupCommit(
        rt.db, write, after_commit=committed, name="strava-events"
    )
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
        # Answered once the event is committed (with whatever arrived alongside it): a 200 is never lost.
        await appender.append(event)
        return JSONResponse({"status": "ok"})

    return [
        Route("/strava/connect", connect, methods=["GET", "POST"]),
        Route("/strava/callback", callback, methods=["GET"]),
        Route("/strava/webhook", validate, methods=["GET"]),
        Route("/strava/webhook", receive, methods=["POST"]),
    ]
