"""The web app's listening socket, bound before anything starts: a module of its own, with nothing but the
standard library, so that ``stridecare run`` finds a taken port before it loads the web app, and ``--no-web``
never loads it."""

from __future__ import annotations

import errno
import socket


class PortTaken(Exception):
    """The web app's address cannot be listened on; the message says which and what to do."""


def listen(host: str, port: int) -> socket.socket:
    """The web app's listening socket, bound before anything is announced: a port another program holds is said
    at once and plainly, instead of a login link that would open that other program. ``PortTaken`` otherwise."""
    # As uvicorn binds when it makes the socket itself: an IPv6 address has a colon; a name ("localhost") is
    # taken as IPv4, so that a proxy pointed at 127.0.0.1 finds it.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        why = (error.strerror or str(error)).lower()
        if error.errno == errno.EADDRINUSE:
            hint = "another program, or another stridecare, holds it; set STRIDECARE_WEB_PORT to a free port"
        elif error.errno == errno.EACCES:
            hint = "ports below 1024 need privileges; set STRIDECARE_WEB_PORT to 1024 or above"
        else:
            hint = "STRIDECARE_WEB_HOST must be an address of this machine (127.0.0.1, 0.0.0.0, ::)"
        raise PortTaken(
            f"cannot serve the web app on {host}:{port}: {why} ({hint}, or start without the web app: --no-web)"
        ) from error
    return sock
