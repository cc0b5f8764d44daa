"""``/feel/{prompt_id}?sig=…``: the athlete answers "How do your feet feel?" from a prompt's one-tap link.

Authorized by the link's signature alone (made with the athlete's own link key, see ``stridecare.links``), like
the done link: a GET only asks (mail scanners open links), the POST records. An unknown prompt answers like a
forged link, so the page tells nobody what exists.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recommender.feedback import UnknownPrompt
from recommender.feel import ASK, CLINICIAN, HIGH, SCORES, WHERE, FeelInputError, check_feel, record_feel, score_text
from stridecare.db.models import Athlete, Prompt
from stridecare.links import athlete_key
from stridecare.runtime import Runtime
from stridecare_app.web.auth import plain
from stridecare_app.web.pages import page

# A form of a score and a place is a few dozen bytes.
MAX_FORM_BYTES = 2048


def _form(sig: str, chosen: int | None) -> str:
    scores = "".join(
        f'<label style="display:inline-block;margin:.2rem .4rem .2rem 0"><input type="radio" name="score" '
        f'value="{s}"{" checked" if s == chosen else ""} required> {s}</label>'
        for s in SCORES
    )
    places = "".join(
        f'<label style="display:inline-block;margin:.2rem .6rem .2rem 0"><input type="radio" name="where" '
        f'value="{key}"> {html.escape(text)}</label>'
        for key, text in WHERE.items()
    )
    return (
        f"<h1>{html.escape(ASK)}</h1>"
        f'<form method="post" action="?sig={html.escape(sig)}" id="feel-form">'
        f"<fieldset><legend>Discomfort, 0 to 10</legend>{scores}</fieldset>"
        f"<fieldset><legend>Where (optional)</legend>{places}</fieldset>"
        '<p><button type="submit">Save</button></p></form>'
        "<p><small>General wellness information, not medical advice.</small></p>"
    )


def routes(rt: Runtime) -> list[Route]:
    """The feel route (added by ``stridecare_app.web.app``)."""

    def key_of(prompt_id: str) -> bytes | None:
        with rt.db.read() as session:
            secret = session.scalar(
                select(Athlete.link_secret)
                .join(Prompt, Prompt.athlete_id == Athlete.id)
                .where(Prompt.id == prompt_id, Prompt.kind == "post_run")
            )
        return athlete_key(rt.link_key, secret) if secret else None

    def record(prompt_id: str, score: str, where: str | None) -> tuple[int, str | None]:
        with rt.db.transaction() as session:
            prompt = session.get(Prompt, prompt_id)
            athlete = session.get(Athlete, prompt.athlete_id) if prompt is not None else None
            if athlete is None:
                raise UnknownPrompt(prompt_id)
            row = record_feel(session, athlete, int(score), where, rt.now(), prompt_id=prompt_id)
            return row.score, row.location

    async def feel(request: Request) -> Response:
        prompt_id = plain(request.path_params["prompt_id"], 64)
        sig = plain(request.query_params.get("sig", ""))
        key = await run_in_threadpool(key_of, prompt_id) if prompt_id and sig else None
        if key is None or not check_feel(key, prompt_id, sig):
            return page("<p>This link is not valid.</p>", 403)
        if request.method == "GET":
            given = request.query_params.get("score", "")
            chosen = int(given) if given.isdigit() and int(given) in SCORES else None
            return page(_form(sig, chosen))
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return page("<p>That form is too large.</p>", 413)
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        score = (fields.get("score") or [""])[0]
        where = (fields.get("where") or [""])[0] or None
        try:
            if not score.strip().isdigit():
                raise FeelInputError("Pick a score from 0 (none) to 10 (worst).")
            saved, place = await run_in_threadpool(record, prompt_id, score, where)
        except FeelInputError as exc:
            return page(f"<p>{html.escape(str(exc))}</p>{_form(sig, None)}", 400)
        except UnknownPrompt:
            return page("<p>That prompt no longer exists.</p>", 404)
        advice = (
            f"<p>At {HIGH} or more your next prompts are gentler: roll-out and mobility only. "
            f"{html.escape(CLINICIAN)}</p>"
            if saved >= HIGH
            else "<p>Thanks — it helps fit the next prompts to how your feet are.</p>"
        )
        return page(f"<h1>Recorded: {html.escape(score_text(saved, place))}</h1>{advice}")

    return [Route("/feel/{prompt_id}", feel, methods=["GET", "POST"])]
