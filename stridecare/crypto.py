"""Secrets at rest and signed links.

Tokens and webhook secrets are encrypted with Fernet under a MultiFernet key ring (newest key first), so keys
can be rotated: ``rotate`` re-encrypts a value under the newest key. Links in prompts ("done", "unsubscribe")
carry an HMAC so that nobody can forge them for another athlete.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from stridecare.settings import Settings


class SecretsError(Exception):
    """A value cannot be decrypted with any configured key."""


def _key_file(settings: Settings) -> Path:
    return settings.data_home / "secret.keys"


def _read_or_create_local_keys(settings: Settings) -> list[str]:
    """The embedded default keeps its generated keys in the data home, readable by the owner only."""
    path = _key_file(settings)
    if path.exists():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return [key]


def fernet_keys(settings: Settings) -> list[str]:
    """The key ring, newest first: from ``STRIDECARE_ENCRYPTION_KEYS`` or the data home's key file."""
    if settings.encryption_keys:
        return [k.get_secret_value() for k in settings.encryption_keys]
    return _read_or_create_local_keys(settings)


class Vault:
    """Encrypts and decrypts secrets for storage."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretsError("no encryption key configured")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        """A vault over the configured key ring."""
        return cls(fernet_keys(settings))

    def encrypt(self, plaintext: str) -> str:
        """Encrypt under the newest key."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt with whichever key of the ring encrypted it."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretsError("stored secret cannot be decrypted with the configured keys") from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt ``token`` under the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretsError("stored secret cannot be decrypted with the configured keys") from exc


def signing_key(settings: Settings) -> bytes:
    """The key for signed links: ``STRIDECARE_SECRET_KEY``, or one derived from the local key ring."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    return hashlib.sha256(b"stridecare-links|" + fernet_keys(settings)[-1].encode()).digest()


def sign(key: bytes, *parts: str) -> str:
    """A URL-safe HMAC-SHA256 over ``parts``."""
    mac = hmac.new(key, "|".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode().rstrip("=")


def verify(key: bytes, signature: str, *parts: str) -> bool:
    """Constant-time check of a signature made by :func:`sign`."""
    return hmac.compare_digest(sign(key, *parts), signature)


def new_webhook_secret() -> str:
    """A Standard Webhooks secret (``whsec_`` + base64 of 24 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
