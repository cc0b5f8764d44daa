"""Running the web app with uvicorn, in the foreground or beside the embedded worker."""

from __future__ import annotations

import socket
import sys
import threading

import uvicorn
from starlette.types import ASGIApp

from stridecare.runtime import Runtime
from stridecare_app.web.app import create_app
from stridecare_app.web.auth import LOGIN_LINK_TTL, login_url
from stridecare_app.web.listen import listen


def uvicorn_config(app: ASGIApp, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """How the web app is served (tests serve with the same)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        lifespan="off",
        # uvicorn would believe X-Forwarded-* from 127.0.0.1 by default; the app believes them only from
        # STRIDECARE_TRUSTED_PROXIES (web.auth).
        proxy_headers=False,
        server_header=False,
    )


def _server(rt: Runtime, host: str | None, port: int | None, log_level: str | None = None) -> uvicorn.Server:
    config = uvicorn_config(
        create_app(rt), host or rt.settings.web_host, port or rt.settings.web_port, log_level or rt.settings.log_level
    )
    return uvicorn.Server(config)


def announce_login(rt: Runtime) -> None:
    """Print a one-time admin login link on stderr (the console of whoever started the server)."""
    minutes = int(LOGIN_LINK_TTL.total_seconds() // 60)
    sys.stderr.write(
        f"stridecare: log in at {login_url(rt.settings, rt.now())}\n"
        f"stridecare: (one-time link, valid {minutes} minutes; `stridecare admin link` prints a new one)\n"
    )
    sys.stderr.flush()


def serve(rt: Runtime, host: str | None = None, port: int | None = None) -> None:
    """Print a login link, then serve until interrupted (``PortTaken`` before the link when the port is)."""
    server = _server(rt, host, port)
    sock = listen(server.config.host, server.config.port)
    announce_login(rt)
    server.run(sockets=[sock])


def serve_in_thread(rt: Runtime, sock: socket.socket) -> uvicorn.Server:
    """Serve on ``sock`` (from :func:`listen`, which chose the address) from a daemon thread (the embedded
    runner); returns the server so callers can stop it. Its console is for what happens to runs: uvicorn's
    start-up lines stay out of it (warnings still show)."""
    server = _server(rt, None, None, "warning")
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="stridecare-web", daemon=True).start()
    return server
