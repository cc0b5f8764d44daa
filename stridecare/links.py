"""Links that prompts carry: "done", one-click unsubscribe (both signed) and the private dashboard."""

from __future__ import annotations

from urllib.parse import quote

from stridecare.crypto import sign, verify


def done_url(base: str, key: bytes, prompt_id: str) -> str:
    """The link that records a prompt as done."""
    return f"{base.rstrip('/')}/done/{quote(prompt_id)}?sig={sign(key, 'done', prompt_id)}"


def check_done(key: bytes, prompt_id: str, signature: str) -> bool:
    """True when ``signature`` was made for this prompt's done link."""
    return verify(key, signature, "done", prompt_id)


def unsubscribe_url(base: str, key: bytes, athlete_id: int, list_name: str = "prompts") -> str:
    """The RFC 8058 one-click unsubscribe link, naming recipient and list."""
    sig = sign(key, "unsubscribe", str(athlete_id), list_name)
    return f"{base.rstrip('/')}/unsubscribe/{athlete_id}/{quote(list_name)}?sig={sig}"


def check_unsubscribe(key: bytes, athlete_id: int, list_name: str, signature: str) -> bool:
    """True when ``signature`` was made for this athlete's unsubscribe link."""
    return verify(key, signature, "unsubscribe", str(athlete_id), list_name)


def dashboard_url(base: str, athlete_name: str, token: str) -> str:
    """The athlete's secret dashboard link (works from anywhere the web app is reachable)."""
    return f"{base.rstrip('/')}/dashboard/{quote(athlete_name, safe='')}?t={quote(token, safe='')}"
