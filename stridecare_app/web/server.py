"""Running the web app with uvicorn, in the foreground or beside the embedded worker."""

from __future__ import annotations

import threading

import uvicorn

from stridecare.runtime import Runtime


def _server(rt: Runtime, host: str | None, port: int | None) -> uvicorn.Server:
    from stridecare_app.web.app import create_app

    config = uvicorn.Config(
        create_app(rt),
        host=host or rt.settings.web_host,
        port=port or rt.settings.web_port,
        log_level=rt.settings.log_level.lower(),
        access_log=False,
        lifespan="off",
    )
    return uvicorn.Server(config)


def serve(rt: Runtime, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted."""
    _server(rt, host, port).run()


def serve_in_thread(rt: Runtime, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    """Serve from a daemon thread (the embedded runner); returns the server so callers can stop it."""
    server = _server(rt, host, port)
    threading.Thread(target=server.run, name="stridecare-web", daemon=True).start()
    return server
