"""Request bodies bounded while they are read: nothing buffers more than a route's cap.

:class:`BodyLimit` wraps the ASGI ``receive`` channel. A request whose ``Content-Length`` already exceeds the
cap is answered 413 without reading a byte; a chunked (or lying) body is counted as it arrives and the read
that passes the cap raises :class:`BodyTooLarge`, an ``HTTPException`` that Starlette turns into a 413. The
server then closes the connection, so a client streaming a gigabyte costs the process one chunk of memory.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The web app takes small forms and Strava's events; nothing it accepts is larger.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# Strava's events are a few hundred bytes; anything much larger is not from Strava.
MAX_EVENT_BYTES = 16 * 1024


class BodyTooLarge(HTTPException):
    """The request body passed its route's cap (answered 413)."""

    def __init__(self, limit: int) -> None:
        # Closing is what stops the client's upload: the rest of the body is never read.
        super().__init__(413, f"request body larger than {limit} bytes", headers={"Connection": "close"})


class BodyLimit:
    """ASGI middleware capping every request body; ``limits`` maps path prefixes to tighter caps."""

    def __init__(
        self, app: ASGIApp, default: int = DEFAULT_MAX_BODY_BYTES, limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = default
        # Longest prefix first, so that a more specific route's cap wins.
        self.limits = sorted((limits or {}).items(), key=lambda item: -len(item[0]))

    def cap_for(self, path: str) -> int:
        """The body cap of ``path``."""
        for prefix, cap in self.limits:
            if path.startswith(prefix):
                return cap
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with a counting ``receive``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            response = PlainTextResponse(
                f"request body larger than {cap} bytes", status_code=413, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge(cap)
            return message

        await self.app(scope, limited, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
