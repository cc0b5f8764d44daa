"""The outbox relay: deliveries written with their prompt, sent by whichever worker claims them first.

A delivery is claimed by an atomic UPDATE (so a redelivered task or a second relay does nothing), sent outside
any transaction, and its outcome recorded afterwards. A worker that dies between sending and recording leaves
a claim that expires; the next relay pass sends again with the same message id, which receivers deduplicate
on (``webhook-id``, ``Message-ID``). Retry times live in ``deliveries.next_attempt_at``, never in broker
countdowns.

Two clocks: ``next_attempt_at`` follows the product clock (the simulation clock when set), while claims use
wall time, because they guard real processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from delivery.backoff import next_attempt_delay
from stridecare.db.models import Athlete, Delivery, DeliveryAttempt, Prompt
from stridecare.plugins import Channel, DeliveryOutcome, OutgoingMessage, channel_classes
from stridecare.runtime import Runtime
from stridecare.settings import Settings

log = logging.getLogger(__name__)

# Turns a claimed delivery into the message its channel sends (``recommender.messages.build_message``); passed
# in, because rendering a prompt needs the recommender, which sits above the outbox.
MessageBuilder = Callable[[Runtime, Session, Delivery, Prompt, Athlete], OutgoingMessage]



def channels_for(settings: Settings, athlete: Athlete) -> list[str]:
    """The channels this athlete receives prompts on, in the order they are tried."""
    names: list[str] = []
    if athlete.email and athlete.email_unsubscribed_at is None and settings.smtp_host:
        names.append("email")
    if athlete.webhook_url and athlete.webhook_disabled_at is None:
        names.append("webhook")
    if athlete.console:
        names.append("console")
    return names


def create_deliveries(session: Session, settings: Settings, athlete: Athlete, prompt: Prompt) -> list[Delivery]:
    """Outbox rows for ``prompt``, in the caller's transaction; unique per prompt and channel."""
    rows = [
        Delivery(
            prompt_id=prompt.id,
            athlete_id=athlete.id,
            channel=name,
            message_id=f"msg_{prompt.id}_{name}",
            next_attempt_at=prompt.due_at,
        )
        for name in channels_for(settings, athlete)
    ]
    session.add_all(rows)
    session.flush()
    return rows


def _wall() -> datetime:
    return datetime.now(UTC)


def due_delivery_ids(rt: Runtime, limit: int = 200) -> list[int]:
    """Deliveries due now and not recently dispatched; marks them dispatched so ticks don't pile up copies."""
    now, wall = rt.now(), _wall()
    with rt.db.transaction() as session:
        ids = list(
            session.scalars(
                select(Delivery.id)
                .where(
                    Delivery.status == "pending",
                    Delivery.next_attempt_at <= now,
                    or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < wall),
                    or_(
                        Delivery.dispatched_at.is_(None),
                        Delivery.dispatched_at < wall - timedelta(seconds=rt.settings.redispatch_after_s),
                    ),
                )
                .order_by(Delivery.next_attempt_at)
                .limit(limit)
            )
        )
        if ids:
            session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(dispatched_at=wall))
    return ids


_channels: dict[tuple[int, str], Channel] = {}


def _channel(settings: Settings, name: str) -> Channel:
    # One instance per settings object and channel: channels may hold connection pools.
    key = (id(settings), name)
    if key not in _channels:
        _channels[key] = channel_classes()[name](settings)
    return _channels[key]


def _claim(session: Session, delivery_id: int, now: datetime, wall: datetime, claim_s: float) -> bool:
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == "pending",
            Delivery.next_attempt_at <= now,
            or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < wall),
        )
        .values(claimed_until=wall + timedelta(seconds=claim_s))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _target(rt: Runtime, delivery: Delivery, athlete: Athlete) -> tuple[str | None, str | None, str | None]:
    """(target, secret, reason-to-cancel) for the delivery's channel, read fresh on every attempt."""
    if delivery.channel == "email":
        if not athlete.email or athlete.email_unsubscribed_at is not None:
            return None, None, "no email address, or unsubscribed"
        return athlete.email, None, None
    if delivery.channel == "webhook":
        if not athlete.webhook_url or athlete.webhook_disabled_at is not None:
            return None, None, "webhook endpoint removed or disabled"
        secret = rt.vault.decrypt(athlete.webhook_secret_enc) if athlete.webhook_secret_enc else None
        return athlete.webhook_url, secret, None
    return str(rt.settings.data_home / "prompts.log"), None, None


def deliver_one(rt: Runtime, delivery_id: int, build: MessageBuilder) -> DeliveryOutcome | None:
    """Claim, send and record one delivery; None when it was not due or someone else has it."""
    now, wall = rt.now(), _wall()
    with rt.db.transaction() as session:
        if not _claim(session, delivery_id, now, wall, rt.settings.delivery_claim_s):
            return None
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        prompt = session.get(Prompt, delivery.prompt_id)
        athlete = session.get(Athlete, delivery.athlete_id)
        assert prompt is not None and athlete is not None
        target, secret, cancel = _target(rt, delivery, athlete)
        if cancel is not None:
            delivery.status, delivery.last_error, delivery.claimed_until = "cancelled", cancel, None
            return DeliveryOutcome(ok=False, detail=cancel, retry=False)
        message = build(rt, session, delivery, prompt, athlete)
        channel_name = delivery.channel
        attempts = delivery.attempts
    try:
        outcome = _channel(rt.settings, channel_name).send(message, target or "", secret)
    except Exception as exc:  # a channel bug must not lose the delivery: record and retry
        log.exception("channel %s failed on delivery %s", channel_name, delivery_id)
        outcome = DeliveryOutcome(ok=False, detail=f"internal error: {exc.__class__.__name__}", retry=True)
    _record(rt, delivery_id, attempts, outcome)
    return outcome


def _record(rt: Runtime, delivery_id: int, attempts_before: int, outcome: DeliveryOutcome) -> None:
    now = rt.now()
    with rt.db.transaction() as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:  # the athlete was forgotten meanwhile
            return
        session.add(
            DeliveryAttempt(
                delivery_id=delivery_id,
                ok=outcome.ok,
                status_code=outcome.status_code,
                detail=outcome.detail[:2000],
            )
        )
        delivery.attempts = attempts_before + 1
        delivery.claimed_until = None
        delivery.dispatched_at = None
        if outcome.ok:
            delivery.status, delivery.sent_at, delivery.last_error = "sent", now, None
            return
        delivery.last_error = outcome.detail[:2000]
        if outcome.disable_target and delivery.channel == "webhook":
            athlete = session.get(Athlete, delivery.athlete_id)
            if athlete is not None:
                athlete.webhook_disabled_at = now
            delivery.status = "failed"
            log.warning("webhook endpoint of athlete %s disabled: %s", delivery.athlete_id, outcome.detail)
            return
        delay = next_attempt_delay(delivery.attempts, outcome.retry_after_s) if outcome.retry else None
        if delay is None:
            delivery.status = "failed"
            log.warning("delivery %s failed for good: %s", delivery_id, outcome.detail)
            return
        delivery.next_attempt_at = now + timedelta(seconds=delay)


def relay_pending(rt: Runtime, build: MessageBuilder, limit: int = 200) -> int:
    """Send every due delivery in this process (the embedded command line and tests); returns attempts made."""
    made = 0
    for delivery_id in due_delivery_ids(rt, limit):
        if deliver_one(rt, delivery_id, build) is not None:
            made += 1
    return made
