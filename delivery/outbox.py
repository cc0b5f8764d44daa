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
from stridecare.logging import event
from stridecare.plugins import Channel, DeliveryOutcome, NoTarget, OutgoingMessage, Target, channel_classes
from stridecare.runtime import Runtime
from stridecare.settings import Settings

log = logging.getLogger(__name__)

# Turns a claimed delivery into the message its channel sends (``recommender.messages.build_message``); passed
# in, because rendering a prompt needs the recommender, which sits above the outbox.
MessageBuilder = Callable[[Runtime, Session, Delivery, Prompt, Athlete], OutgoingMessage]


def channels_for(settings: Settings, athlete: Athlete) -> list[str]:
    """The channels this athlete receives prompts on, in the order they are tried: every registered channel
    (built-in or plugin) whose ``wants`` says yes."""
    names: list[str] = []
    for name in channel_classes():
        channel = _channel(settings, name)
        if channel is None:
            continue
        try:
            wanted = channel.wants(athlete)
        except Exception:  # a plugin's bug must not stop the prompt reaching the other channels
            log.exception("channel %s failed to say whether athlete %s wants it", name, athlete.name)
            continue
        if wanted:
            names.append(name)
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


_channels: dict[tuple[int, str], Channel | None] = {}


def _channel(settings: Settings, name: str) -> Channel | None:
    """The channel ``name`` built for ``settings`` (None if it is not registered or cannot be built)."""
    # One instance per settings object and channel: channels may hold connection pools.
    key = (id(settings), name)
    if key not in _channels:
        cls = channel_classes().get(name)
        try:
            _channels[key] = None if cls is None else cls(settings)
        except Exception as exc:  # a misconfigured channel is reported, and the others go on
            log.warning("channel %s cannot start: %s: %s", name, type(exc).__name__, exc)
            _channels[key] = None
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


def _target(rt: Runtime, channel: Channel | None, name: str, athlete: Athlete) -> tuple[Target | None, str | None]:
    """(target, reason-to-cancel) for the delivery's channel, read fresh on every attempt."""
    if channel is None:
        return None, f"channel {name!r} is not installed or cannot start"
    try:
        return channel.target(athlete, rt.vault), None
    except NoTarget as exc:
        return None, exc.reason


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
        channel_name = delivery.channel
        channel = _channel(rt.settings, channel_name)
        target, cancel = _target(rt, channel, channel_name, athlete)
        if cancel is not None or target is None or channel is None:
            reason = cancel or "no target"
            delivery.status, delivery.last_error, delivery.claimed_until = "cancelled", reason, None
            log.warning("%s prompt %s for %s cancelled: %s", channel_name, prompt.id, athlete.name, reason)
            return DeliveryOutcome(ok=False, detail=reason, retry=False)
        message = build(rt, session, delivery, prompt, athlete)
        attempts = delivery.attempts
        athlete_name, prompt_id = athlete.name, prompt.id
    try:
        outcome = channel.send(message, target.address, target.secret)
    except Exception as exc:  # a channel bug must not lose the delivery: record and retry
        log.exception("channel %s failed on delivery %s", channel_name, delivery_id)
        outcome = DeliveryOutcome(ok=False, detail=f"internal error: {exc.__class__.__name__}", retry=True)
    _record(rt, delivery_id, attempts, outcome)
    if outcome.ok:
        event(
            log,
            "delivered",
            f"sent prompt {prompt_id} to {athlete_name} by {channel_name}",
            athlete=athlete_name,
            prompt_id=prompt_id,
            channel=channel_name,
        )
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
        channel = _channel(rt.settings, delivery.channel)
        disable = getattr(channel, "disable", None)
        if outcome.disable_target and callable(disable):
            # Locked: the channel's mark is written into the athlete's one JSON value of channel settings, which
            # a concurrent `athlete set` must neither lose nor overwrite with a stale copy.
            athlete = session.get(Athlete, delivery.athlete_id, with_for_update=True)
            if athlete is not None:
                disable(athlete, now)
            delivery.status = "failed"
            log.warning("%s target of athlete %s disabled: %s", delivery.channel, delivery.athlete_id, outcome.detail)
            return
        delay = next_attempt_delay(delivery.attempts, outcome.retry_after_s) if outcome.retry else None
        if delay is None:
            delivery.status = "failed"
            log.warning("%s delivery %s failed for good: %s", delivery.channel, delivery_id, outcome.detail)
            return
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        log.warning(
            "%s delivery %s failed (attempt %d), next try in %.0f s: %s",
            delivery.channel,
            delivery_id,
            delivery.attempts,
            delay,
            outcome.detail,
        )


def relay_pending(rt: Runtime, build: MessageBuilder, limit: int = 200) -> int:
    """Send every due delivery in this process (the embedded command line and tests); returns attempts made."""
    made = 0
    for delivery_id in due_delivery_ids(rt, limit):
        if deliver_one(rt, delivery_id, build) is not None:
            made += 1
    return made
