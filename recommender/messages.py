"""Turning a prompt into the message a channel sends: every kind (post-run, weekly, digest, shoe reminder).

The outbox (``delivery/outbox.py``) only claims, sends and records; it is handed :func:`build_message`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from delivery.outbox import relay_pending as _relay_pending
from delivery.render import render_prompt, routable
from recommender.digest import render_digest
from recommender.routines import WELLNESS_DISCLAIMER, balance_level, routine
from recommender.shoes import render_shoe_reminder
from stridecare.db.models import Athlete, Delivery, Prompt
from stridecare.links import athlete_key, dashboard_url, done_url, unsubscribe_url
from stridecare.plugins import OutgoingMessage
from stridecare.runtime import Runtime


def build_message(
    rt: Runtime, session: Session, delivery: Delivery, prompt: Prompt, athlete: Athlete
) -> OutgoingMessage:
    """Render ``prompt`` for ``delivery``'s channel."""
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
    unsub = unsubscribe_url(base, link_key, athlete.id) if delivery.channel == "email" else None
    done = done_url(base, link_key, prompt.id)
    rendered = render_prompt(
        prompt_id=prompt.id,
        athlete_name=athlete.display_name or athlete.name,
        kind=prompt.kind,  # type: ignore[arg-type]
        routines=routines,
        reasons=prompt.reasons,
        flags=prompt.facts.get("flags", []),
        run=prompt.facts.get("run"),
        done_url=done,
        unsubscribe_url=unsub,
        created_at=prompt.created_at,
        disclaimer=WELLNESS_DISCLAIMER,
        figures=prompt.facts.get("figures"),
    )
    return _message(
        delivery,
        prompt,
        athlete,
        (rendered.subject, rendered.text, rendered.html, rendered.payload),
        unsubscribe_url=unsub,
        done_url=done,
    )


def _build_other(rt: Runtime, delivery: Delivery, prompt: Prompt, athlete: Athlete) -> OutgoingMessage:
    """Prompts without routines (weekly digest, shoe reminder) have their own renderers and no "done" link."""
    base = rt.settings.effective_public_url
    link_key = athlete_key(rt.link_key, athlete.link_secret)
    unsub = unsubscribe_url(base, link_key, athlete.id) if delivery.channel == "email" else None
    name = athlete.display_name or athlete.name
    images: tuple[tuple[str, bytes, str], ...] = ()
    if prompt.kind == "digest":
        subject, text, html, payload, images = render_digest(
            prompt_id=prompt.id,
            athlete_name=name,
            facts=prompt.facts,
            unsubscribe_url=unsub,
            dashboard_url=dashboard_url(base, athlete.name, athlete.dashboard_token),
            created_at=prompt.created_at,
        )
    else:
        subject, text, html, payload = render_shoe_reminder(
            prompt_id=prompt.id,
            athlete_name=name,
            facts=prompt.facts,
            unsubscribe_url=unsub,
            created_at=prompt.created_at,
        )
    return _message(
        delivery, prompt, athlete, (subject, text, html, payload), unsubscribe_url=unsub, inline_images=images
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
) -> OutgoingMessage:
    """The message for ``delivery``: subject, text, HTML and a webhook payload that names the athlete."""
    subject, text, html, payload = content
    return OutgoingMessage(
        prompt_id=prompt.id,
        delivery_id=delivery.id,
        message_id=delivery.message_id,
        athlete_name=athlete.name,
        recipient=athlete.email,
        subject=subject,
        text=text,
        html=html,
        payload=routable(payload, athlete.name, athlete.display_name),
        unsubscribe_url=unsubscribe_url,
        done_url=done_url,
        created_at=prompt.created_at,
        inline_images=inline_images,
    )


def relay_pending(rt: Runtime, limit: int = 200) -> int:
    """Send every due delivery in this process, rendered by :func:`build_message`; returns attempts made."""
    return _relay_pending(rt, build_message, limit)
