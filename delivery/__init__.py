"""Delivery channels for rendered prompts: console log, email (SMTP) and signed outgoing webhooks.

Each channel implements :class:`stridecare.plugins.Channel` and is registered as an entry point in
``pyproject.toml``; the outbox relay constructs it as ``Cls(settings)`` and calls ``send`` once per attempt.
"""
