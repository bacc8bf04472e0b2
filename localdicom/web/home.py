"""The pages for people rather than programs: the studies at ``/``, a study at
``/ui/studies/{study}``, the quick viewer of a series at ``/ui/studies/{study}/series/{series}``,
the trash at ``/ui/trash``.

Static pages and a little JavaScript from the package (no build step, nothing from another
origin); the data comes from QIDO-RS, WADO-RS (metadata, rendered frames, thumbnails) and
STOW-RS, plus the two small answers of :mod:`localdicom.web.pages_api`, so the pages use
nothing a viewer could not. Every page names the site root in ``<base href>``, relative to
its own URL, so that its relative links hold behind a reverse proxy that adds a prefix.
"""

from __future__ import annotations

import html
from pathlib import Path

import orjson
from aiohttp import web

from localdicom.web import pages_api, trash_api
from localdicom.web.context import catalog, find_series, find_study

STATIC = Path(__file__).resolve().parent.parent / "static"
VIEWER_URL = web.AppKey("home_viewer_url", str)
STUDY_PAGE = "/ui/studies/{study}"
SERIES_PAGE = STUDY_PAGE + "/series/{series}"


def _page(request: web.Request, name: str, head: str = "") -> web.Response:
    """A page of the package with the site root, the viewer's URL and ``head`` (more of the
    page's head) filled in."""
    page = (STATIC / name).read_text(encoding="utf-8").replace("{{head}}", head)
    depth = request.path.count("/") - 1
    page = page.replace("{{root}}", "../" * depth or "./")
    page = page.replace("{{viewer}}", html.escape(request.app.get(VIEWER_URL, "")))
    page = page.replace("{{trash}}", "on" if catalog(request).keep_removed else "off")
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def index(request: web.Request) -> web.Response:
    """The studies: search, sort, pages, upload (index.html, home.js)."""
    return _page(request, "index.html")


async def study_page(request: web.Request) -> web.Response:
    """A study's attributes and series (study.html); 404 when it is not stored."""
    find_study(request)
    return _page(request, "study.html")


async def series_page(request: web.Request) -> web.Response:
    """The quick viewer of a series (series.html); 404 when it is not stored. The page
    carries the frames in viewing order, and has the browser fetch the first one to show
    while it loads the scripts (``<link rel="preload">``): the first image comes one
    round trip sooner."""
    frames = await pages_api.frames_of(request, find_series(request))
    data = orjson.dumps(frames).replace(b"</", b"<\\/").decode()
    head = f'<script id="frames-data" type="application/json">{data}</script>'
    first = _first_shown(request, frames["frames"])
    if first is not None and "window" not in request.query:
        study, series = frames["study"], frames["series"]
        url = f"studies/{study}/series/{series}/instances/{first['instance']}"
        url += f"/frames/{first['frame']}/rendered"
        head += f'\n<link rel="preload" as="fetch" crossorigin href="{html.escape(url)}">'
    return _page(request, "series.html", head)


async def trash_page(request: web.Request) -> web.Response:
    """What DELETE moved to the trash, with restore and empty (trash.html, trash.js)."""
    return _page(request, "trash.html")


def _first_shown(request: web.Request, frames: list[dict]) -> dict | None:
    """The frame the viewer shows first: ``?slice=N`` (from 1), else the first."""
    if not frames:
        return None
    text = request.query.get("slice", "1")
    number = int(text) if text.isascii() and text.isdigit() and len(text) < 9 else 1
    return frames[min(max(number, 1), len(frames)) - 1]


def add_routes(app: web.Application, viewer_url: str) -> None:
    """The pages, their JSON and ``/static/``; VIEWER_URL is where "Open in OHIF" points."""
    app[VIEWER_URL] = viewer_url
    app.router.add_get("/", index)
    app.router.add_get(STUDY_PAGE, study_page)
    app.router.add_get(SERIES_PAGE, series_page)
    pages_api.add_routes(app, SERIES_PAGE)
    app.router.add_get("/ui/trash", trash_page)
    trash_api.add_routes(app)
    app.router.add_static("/static/", STATIC)
