"""Add to the home screen: the web app manifest and its icons, so a phone keeps the dashboard like an app.

The icons are drawn here (a white footprint on the dashboard's blue), SVG as text and PNG encoded with zlib
at first request: no binary files in the repository, nothing fetched from elsewhere. The manifest and icons
hold nothing private and need no login (a browser fetches a manifest without cookies). ``start`` names the
page the installed app opens: the athlete's dashboard with their secret link, which the page itself passes,
so the app opens straight on it; only a path on this site is taken.
"""

from __future__ import annotations

import json
import struct
import zlib
from functools import cache

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

NAME = "stridecare"
THEME = "#1f6feb"
BACKGROUND = "#ffffff"
ICON_SIZES: tuple[int, ...] = (192, 512)
MANIFEST_PATH = "/manifest.webmanifest"
MAX_START_CHARS = 400

# The footprint in a 0–1 square: the sole as an ellipse, five toes as circles ((cx, cy, rx, ry)).
_SHAPES: tuple[tuple[float, float, float, float], ...] = (
    (0.50, 0.62, 0.17, 0.25),
    (0.37, 0.29, 0.075, 0.075),
    (0.50, 0.25, 0.06, 0.06),
    (0.61, 0.27, 0.052, 0.052),
    (0.70, 0.32, 0.045, 0.045),
    (0.77, 0.39, 0.04, 0.04),
)


def icon_svg() -> str:
    """The icon as SVG (any size; also the browser tab's icon)."""
    parts = "".join(
        f'<ellipse cx="{cx * 100:g}" cy="{cy * 100:g}" rx="{rx * 100:g}" ry="{ry * 100:g}" fill="#fff"/>'
        for cx, cy, rx, ry in _SHAPES
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
        f'<rect width="100" height="100" rx="18" fill="{THEME}"/>{parts}</svg>'
    )


def _rgb(hex_colour: str) -> bytes:
    return bytes.fromhex(hex_colour.lstrip("#"))


@cache
def icon_png(size: int) -> bytes:
    """The icon as a ``size`` × ``size`` PNG (full bleed, so a launcher's mask may round it: "maskable")."""
    blue, white = _rgb(THEME), b"\xff\xff\xff"
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter: none
        fy = (y + 0.5) / size
        # Per row, the spans each shape covers; a pixel is white when inside any of them.
        spans = []
        for cx, cy, rx, ry in _SHAPES:
            dy = (fy - cy) / ry
            if dy * dy < 1:
                half = rx * (1 - dy * dy) ** 0.5
                spans.append((cx - half, cx + half))
        for x in range(size):
            fx = (x + 0.5) / size
            rows += white if any(a <= fx <= b for a, b in spans) else blue

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def start_path(value: str | None) -> str:
    """``value`` when it is a path on this site (``/dashboard/…``), else ``/``: never another origin."""
    if not value or len(value) > MAX_START_CHARS or not value.startswith("/") or value.startswith("//"):
        return "/"
    if any(c in value for c in "\\\r\n\t ") or any(ord(c) < 32 for c in value):
        return "/"
    return value


def manifest(start: str = "/") -> dict[str, object]:
    """The web app manifest opening on ``start``."""
    icons: list[dict[str, str]] = [
        {"src": f"/icon-{n}.png", "sizes": f"{n}x{n}", "type": "image/png", "purpose": "any maskable"}
        for n in ICON_SIZES
    ]
    icons.append({"src": "/icon.svg", "sizes": "any", "type": "image/svg+xml"})
    return {
        "name": "stridecare — foot care for runners",
        "short_name": NAME,
        "description": "Foot load, flags and the routine that fits after every run.",
        "id": "/",
        "start_url": start_path(start),
        "scope": "/",
        "display": "standalone",
        "background_color": BACKGROUND,
        "theme_color": THEME,
        "icons": icons,
    }


_CACHE = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}


def routes() -> list[Route]:
    """The manifest and icon routes (public: they hold nothing private)."""

    async def manifest_route(request: Request) -> Response:
        body = json.dumps(manifest(request.query_params.get("start", "/")), ensure_ascii=False)
        # The start page may carry the athlete's secret link: no cache keeps it.
        return Response(body, media_type="application/manifest+json", headers={"Cache-Control": "no-store"})

    async def svg_route(_: Request) -> Response:
        return Response(icon_svg(), media_type="image/svg+xml", headers=_CACHE)

    def png_route(size: int) -> Route:
        async def png(_: Request) -> Response:
            # Drawn once per size, off the event loop.
            return Response(await run_in_threadpool(icon_png, size), media_type="image/png", headers=_CACHE)

        return Route(f"/icon-{size}.png", png, methods=["GET"])

    return [
        Route(MANIFEST_PATH, manifest_route, methods=["GET"]),
        Route("/icon.svg", svg_route, methods=["GET"]),
        Route("/apple-touch-icon.png", png_route(180).endpoint, methods=["GET"]),
        *(png_route(n) for n in ICON_SIZES),
    ]
