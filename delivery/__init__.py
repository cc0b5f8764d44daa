"""Delivery channels for rendered prompts: console log, email (SMTP), signed outgoing webhooks, push (Apprise) and
MQTT events for Home Assistant, with the outbox that claims, sends and records every delivery.

Each channel implements :class:`stridecare.plugins.Channel` (the built-ins subclass ``SettingsChannel``: their
per-athlete settings live in ``athlete.channel_settings``, one schema per channel) and is registered as an entry
point in ``pyproject.toml``; the outbox relay constructs it as ``Cls(settings)`` and calls ``send`` once per
attempt.
"""
