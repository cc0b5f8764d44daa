"""Athletes' channel settings for tests, in the stored form that ``stridecare.plugins`` reads."""

from __future__ import annotations

from typing import Any

from stridecare.crypto import Vault


def channel_settings(
    vault: Vault | None = None,
    *,
    email: str | None = None,
    webhook: str | None = None,
    webhook_secret: str | None = None,
    console: bool = True,
    push: str | None = None,
) -> dict[str, Any]:
    """The ``channel_settings`` value of an athlete with these channels (secrets encrypted with ``vault``)."""
    out: dict[str, Any] = {"console": {"enabled": console}}
    if email is not None:
        out["email"] = {"address": email}
    if webhook is not None:
        out["webhook"] = {"url": webhook}
        if webhook_secret is not None:
            assert vault is not None, "a webhook secret is stored encrypted: pass the vault"
            out["webhook"]["secret"] = vault.encrypt(webhook_secret)
    if push is not None:
        assert vault is not None, "a push URL is stored encrypted: pass the vault"
        out["push"] = {"url": vault.encrypt(push)}
    return out
