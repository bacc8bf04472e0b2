"""The home page at ``/``: the archive's studies and an upload box, for people rather than
programs. A static page and a little JavaScript from the package (no build step); the study
list comes from QIDO-RS and uploads go through STOW-RS, so the page uses nothing a viewer
could not.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent.parent / "static"
VIEWER_URL = web.AppKey("home_viewer_url", str)


async def index(request: web.Request) -> web.Response:
    """index.html with the viewer's URL filled in ("" when no viewer is served)."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{viewer}}", html.escape(request.app.get(VIEWER_URL, "")))
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application, viewer_url: str) -> None:
    """``/`` and ``/static/``; VIEWER_URL is where "Open in viewer" links point."""
    app[VIEWER_URL] = viewer_url
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
