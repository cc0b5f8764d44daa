"""Web clients for tests: a browser on this machine, and one logged in as the admin through a real login link."""

from __future__ import annotations

import html
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from stridecare.runtime import Runtime
from stridecare_app.web.auth import login_url
from stridecare_app.web.server import uvicorn_config

# A name the Host check accepts (a loopback name); the default "testserver" is refused with 421.
BASE_URL = "http://127.0.0.1:8080"
PEER = ("127.0.0.1", 50000)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def browser(app: Starlette, *, peer: tuple[str, int] = PEER, base_url: str = BASE_URL, **kwargs: Any) -> TestClient:
    """A client without a session (by default from loopback, which opens nothing by itself)."""
    return TestClient(app, client=peer, base_url=base_url, **kwargs)


def csrf_of(page: str) -> str:
    """The CSRF token of the first form on ``page``."""
    found = _CSRF.search(page)
    assert found, page[:500]
    return html.unescape(found.group(1))


def log_in(client: TestClient, rt: Runtime) -> TestClient:
    """Log ``client`` in as the admin the way a person does: open a fresh login link, press "Log in"."""
    link = login_url(rt.settings, rt.now())
    path = link.removeprefix(rt.settings.effective_public_url)
    asked = client.get(path)
    assert asked.status_code == 200, asked.text[:300]
    token = re.search(r'name="t" value="([^"]+)"', asked.text)
    assert token
    done = client.post(
        "/login", data={"csrf": csrf_of(asked.text), "t": html.unescape(token.group(1))}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == "/", done.text[:300]
    return client


def admin(app: Starlette, rt: Runtime, **kwargs: Any) -> TestClient:
    """A client with a live admin session."""
    return log_in(browser(app, **kwargs), rt)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: Starlette, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve ``app`` with uvicorn at a free port (yielded) for the block, configured as ``stridecare web`` is."""
    server = uvicorn.Server(uvicorn_config(app, host, 0, "warning"))
    thread = threading.Thread(target=server.run, name="test-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
