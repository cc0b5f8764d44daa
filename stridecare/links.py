"""Links that prompts carry: "done", one-click unsubscribe (both signed) and the private dashboard; and the
record of single-use tokens.

A link's signature mixes the service's signing key with the athlete's own ``link_secret``
(:func:`athlete_key`): forgetting an athlete deletes that secret with the row, so the links they were sent die
with them, even for a new athlete who later gets the same id.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from urllib.parse import quote

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stridecare.crypto import sign, verify
from stridecare.db.models import UsedToken


def athlete_key(key: bytes, link_secret: str) -> bytes:
    """The key that signs one athlete's links: the service key bound to the athlete's ``link_secret``."""
    return hashlib.sha256(b"stridecare-athlete-links|" + key + b"|" + link_secret.encode()).digest()


def done_url(base: str, key: bytes, prompt_id: str) -> str:
    """The link that records a prompt as done (``key`` from :func:`athlete_key`)."""
    return f"{base.rstrip('/')}/done/{quote(prompt_id)}?sig={sign(key, 'done', prompt_id)}"


def check_done(key: bytes, prompt_id: str, signature: str) -> bool:
    """True when ``signature`` was made for this prompt's done link."""
    return verify(key, signature, "done", prompt_id)


def unsubscribe_url(base: str, key: bytes, athlete_id: int, list_name: str = "prompts") -> str:
    """The RFC 8058 one-click unsubscribe link, naming recipient and list (``key`` from :func:`athlete_key`)."""
    sig = sign(key, "unsubscribe", str(athlete_id), list_name)
    return f"{base.rstrip('/')}/unsubscribe/{athlete_id}/{quote(list_name)}?sig={sig}"


def check_unsubscribe(key: bytes, athlete_id: int, list_name: str, signature: str) -> bool:
    """True when ``signature`` was made for this athlete's unsubscribe link."""
    return verify(key, signature, "unsubscribe", str(athlete_id), list_name)


def dashboard_url(base: str, athlete_name: str, token: str) -> str:
    """The athlete's secret dashboard link (works from anywhere the web app is reachable)."""
    return f"{base.rstrip('/')}/dashboard/{quote(athlete_name, safe='')}?t={quote(token, safe='')}"


def spend_once(session: Session, kind: str, token: str, expires_at: datetime, now: datetime) -> bool:
    """Record ``token`` as used, in the caller's transaction; False when it was used before.

    Only a digest is stored, kept until the token would have expired anyway (then its signature check refuses
    it), so the table holds no more than one lifetime's worth of tokens.
    """
    session.execute(delete(UsedToken).where(UsedToken.expires_at < now).execution_options(synchronize_session=False))
    digest = hashlib.sha256(f"{kind}|{token}".encode()).hexdigest()
    try:
        with session.begin_nested():
            session.add(UsedToken(digest=digest, kind=kind, expires_at=expires_at))
            session.flush()
    except IntegrityError:
        return False
    return True
