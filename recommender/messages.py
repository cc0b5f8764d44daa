"""Turning a prompt into the message a channel sends: every kind (post-run, weekly, digest, shoe reminder).

The outbox (``delivery/outbox.py``) only claims, sends and records; it is handed :func:`build_message`. Every
message is rendered for the athlete's time zone, carries a notification form (one line and a link, for push)
besides its full text, and an unsubscribe link on the channels that declare one (``unsubscribe_link``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session

from delivery.outbox import relay_pending as _relay_pending
from delivery.render import notification_line, render_prompt, routable, run_day_text
from recommender.digest import digest_summary, render_digest
from recommender.feel import ASK, WHERE, score_links
from recommender.routines import WELLNESS_DISCLAIMER, balance_level, routine
from recommender.shoes import render_shoe_reminder
from stridecare.db.models import Athlete, Delivery, Prompt
from stridecare.links import athlete_key, dashboard_url, done_url, unsubscribe_url
from stridecare.plugins import OutgoingMessage, channel_classes, channel_options
from stridecare.runtime import Runtime


def _unsubscribe(rt: Runtime, delivery: Delivery, athlete: Athlete) -> str | None:
    """The one-click unsubscribe link, for a channel whose messages carry one (email)."""
    channel = channel_classes().get(delivery.channel)
    if not getattr(channel, "unsubscribe_link", False):
        return None
    link_key = athlete_key(rt.link_key, athlete.link_secret)
    return unsubscribe_url(rt.settings.effective_public_url, link_key, athlete.id)


def _recipient(channel_name: str, athlete: Athlete) -> str | None:
    """The channel's address for the athlete when it is not a secret (an email address; never a push URL)."""
    channel = channel_classes().get(channel_name)
    key = getattr(channel, "address_key", "")
    if not key or key in getattr(channel, "secret_keys", ()):
        return None
    value = channel_options(athlete, channel_name).get(key)
    return str(value) if value else None


def run_page_url(base: str, athlete: Athlete, run_id: int) -> str:
    """The run's page on the athlete's dashboard, with the private token (works from a phone)."""
    return (
        f"{base.rstrip('/')}/dashboard/{quote(athlete.name, safe='')}/runs/{run_id}"
        f"?t={quote(athlete.dashboard_token, safe='')}"
    )


def build_message(
    rt: Runtime, session: Session, delivery: Delivery, prompt: Prompt, athlete: Athlete
) -> OutgoingMessage:
    """Render ``prompt`` for ``delivery``'s channel, in the athlete's time zone."""
    base = rt.settings.effective_public_url
    if prompt.kind in ("digest", "shoe"):
        return _build_other(rt, delivery, prompt, athlete)
    level = int(prompt.facts.get("balance_level", athlete.balance_level))
    routines: list[dict[str, Any]] = []
    for key in prompt.routines:
        r = routine(key)
        item = {"key": r.key, "title": r.title, "instructions": r.instructions, "dose": r.dose}
        if key == "balance":
            lvl = balance_level(level)
            item["title"] = f"{r.title} ({lvl.title})"
            item["instructions"] = lvl.instructions
        routines.append(item)
    link_key = athlete_key(rt.link_key, athlete.link_secret)
    unsub = _unsubscribe(rt, delivery, athlete)
    done = done_url(base, link_key, prompt.id)
    run = prompt.facts.get("run")
    run_id = run.get("id") if isinstance(run, dict) else None
    link = (
        run_page_url(base, athlete, run_id)
        if isinstance(run_id, int)
        else dashboard_url(base, athlete.name, athlete.dashboard_token)
    )
    rendered = render_prompt(
        prompt_id=prompt.id,
        athlete_name=athlete.display_name or athlete.name,
        kind=prompt.kind,  # type: ignore[arg-type]
        routines=routines,
        reasons=prompt.reasons,
        flags=prompt.facts.get("flags", []),
        run=run,
        done_url=done,
        unsubscribe_url=unsub,
        created_at=prompt.created_at,
        disclaimer=WELLNESS_DISCLAIMER,
        figures=prompt.facts.get("figures"),
        timezone=athlete.timezone,
        held_until=prompt.due_at if prompt.due_at > prompt.created_at else None,
        feel=_feel(base, link_key, prompt),
    )
    return _message(
        delivery,
        prompt,
        athlete,
        (rendered.subject, rendered.text, rendered.html, rendered.payload),
        unsubscribe_url=unsub,
        done_url=done,
        summary=_with_feel_ask(prompt, routines, run_day_text(run, athlete.timezone)),
        link_url=link,
    )


# The push line's question; the page it links to (the run's) carries the one-tap scores.
_PUSH_ASK = " · How do your feet feel, 0–10? Tap to score"


def _feel(base: str, link_key: bytes, prompt: Prompt) -> dict[str, Any] | None:
    """The one-tap 0–10 foot-discomfort question every post-run prompt offers (signed links, per athlete)."""
    if prompt.kind != "post_run":
        return None
    return {"question": ASK, "links": score_links(base, link_key, prompt.id), "where": list(WHERE.values())}


def _with_feel_ask(prompt: Prompt, routines: list[dict[str, Any]], day: str | None) -> str:
    """The notification line, ending with the feel question on a post-run prompt (kept whole: the rest is cut)."""
    if prompt.kind != "post_run":
        return notification_line(routines, prompt.reasons, day)
    return notification_line(routines, prompt.reasons, day, limit=240 - len(_PUSH_ASK)) + _PUSH_ASK


def _build_other(rt: Runtime, delivery: Delivery, prompt: Prompt, athlete: Athlete) -> OutgoingMessage:
    """Prompts without routines (weekly digest, shoe reminder) have their own renderers and no "done" link."""
    base = rt.settings.effective_public_url
    unsub = _unsubscribe(rt, delivery, athlete)
    name = athlete.display_name or athlete.name
    dashboard = dashboard_url(base, athlete.name, athlete.dashboard_token)
    images: tuple[tuple[str, bytes, str], ...] = ()
    if prompt.kind == "digest":
        subject, text, html, payload, images = render_digest(
            prompt_id=prompt.id,
            athlete_name=name,
            facts=prompt.facts,
            unsubscribe_url=unsub,
            dashboard_url=dashboard,
            created_at=prompt.created_at,
            timezone=athlete.timezone,
            # Only a channel that shows inline images (email) gets the chart; drawing it for others is wasted.
            chart=bool(getattr(channel_classes().get(delivery.channel), "carries_images", False)),
        )
        summary = digest_summary(prompt.facts)
    else:
        subject, text, html, payload = render_shoe_reminder(
            prompt_id=prompt.id,
            athlete_name=name,
            facts=prompt.facts,
            unsubscribe_url=unsub,
            created_at=prompt.created_at,
        )
        summary = subject.split(": ", 1)[-1]
    return _message(
        delivery,
        prompt,
        athlete,
        (subject, text, html, payload),
        unsubscribe_url=unsub,
        inline_images=images,
        summary=summary,
        link_url=dashboard,
    )


def _message(
    delivery: Delivery,
    prompt: Prompt,
    athlete: Athlete,
    content: tuple[str, str, str, dict[str, Any]],
    *,
    unsubscribe_url: str | None,
    done_url: str | None = None,
    inline_images: tuple[tuple[str, bytes, str], ...] = (),
    summary: str = "",
    link_url: str | None = None,
) -> OutgoingMessage:
    """The message for ``delivery``: subject, text, HTML, a webhook payload that names the athlete, and the
    notification form (``summary`` and ``link_url``)."""
    subject, text, html, payload = content
    return OutgoingMessage(
        prompt_id=prompt.id,
        delivery_id=delivery.id,
        message_id=delivery.message_id,
        athlete_name=athlete.name,
        recipient=_recipient(delivery.channel, athlete),
        subject=subject,
        text=text,
        html=html,
        payload=routable(payload, athlete.name, athlete.display_name),
        unsubscribe_url=unsubscribe_url,
        done_url=done_url,
        created_at=prompt.created_at,
        inline_images=inline_images,
        summary=summary,
        link_url=link_url,
    )


def relay_pending(rt: Runtime, limit: int = 200) -> int:
    """Send every due delivery in this process, rendered by :func:`build_message`; returns attempts made."""
    return _relay_pending(rt, build_message, limit)
