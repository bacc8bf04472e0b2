"""OHIF v3 and the home page in a real headless Chromium against a live localdicom.

OHIF is the ``dist/`` of the npm package ``@ohif/app`` (found at $OHIF_DIST, or where .ci/run
unpacks it), driven by Playwright with Debian's ``/usr/bin/chromium`` (Playwright's own
browser downloads are never used). Two arrangements: OHIF served by ``--viewer`` (same
origin) and OHIF on its own origin (http://localhost:OTHER, so every request is CORS). Each
loads the study list, opens the sample study and checks the pixels the viewport shows and
the thumbnails; any HTTP error or CORS failure OHIF met fails the test.

Outside CI the test skips, saying why, when Chromium, Playwright or the OHIF build is absent;
in CI (CI=true) their absence is a failure, since .ci/run installs them.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from localdicom.web.viewer import ohif_config
from tests.helpers import STUDY_UID, free_port
from tests.helpers.browser import (
    CHROMIUM,
    TIMEOUT_MS,
    Problems,
    missing_browser,
    require_browser,
    screen_pixels,
)
from tests.helpers.live import LiveServer

pytestmark = [pytest.mark.external, pytest.mark.slow]

OHIF_DIST = Path(
    os.environ.get("OHIF_DIST", Path.home() / ".cache/localdicom-test/ohif/package/dist")
)


def _missing() -> str | None:
    if not (OHIF_DIST / "index.html").is_file():
        return f"no OHIF build at {OHIF_DIST} (npm pack @ohif/app; see .ci/run)"
    return missing_browser()


@pytest.fixture(autouse=True)
def _browser_tools() -> None:
    require_browser(_missing())


@pytest.fixture
def server(archive_dir: Path) -> Iterator[LiveServer]:
    live = LiveServer(
        archive_dir, free_port(), extra_args=("--samples", "--viewer", str(OHIF_DIST))
    )
    live.start()
    yield live
    live.stop()


class _OhifHandler(SimpleHTTPRequestHandler):
    """A tiny static server for the OHIF build on its own origin: generated app-config.js,
    index.html for OHIF's client-side routes."""

    config = b""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self._send(self.config, "application/javascript")
            return
        if not (Path(self.directory) / path.lstrip("/")).is_file():
            self.path = "/index.html"
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ohif_elsewhere(server: LiveServer) -> Iterator[str]:
    """OHIF on http://localhost:PORT, configured for the live server on 127.0.0.1."""
    handler = type(
        "Handler", (_OhifHandler,), {"config": ohif_config(f'"{server.url}"', "/").encode()}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(OHIF_DIST)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()


async def _run_ohif(list_url: str, viewer_url: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            problems = Problems(page)
            await page.goto(list_url)
            await page.get_by_text("Anony Mous").first.wait_for()
            await page.goto(viewer_url)
            await _check_viewport(page)
            await _check_thumbnails(page)
            assert not problems.seen, problems.seen
        finally:
            await browser.close()


async def _check_viewport(page) -> None:
    """The first series' first image is the red triangle: the viewport shows much red."""
    canvas = page.locator('[data-cy="viewport-pane"] canvas').first
    await canvas.wait_for()
    for _ in range(60):
        pixels = screen_pixels(await canvas.screenshot())
        red = (pixels[..., 0] > 180) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
        if red.mean() > 0.05:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the viewport shows no red triangle (red fraction {red.mean():.4f})")


async def _check_thumbnails(page) -> None:
    """The study browser (left panel) shows both series thumbnails, drawn from the frames:
    a green square and a blue circle."""
    panel = {"x": 0, "y": 100, "width": 300, "height": 400}
    pixels = np.zeros((1, 1, 3), dtype=int)
    for _ in range(60):
        pixels = screen_pixels(await page.screenshot(clip=panel))
        green = (pixels[..., 1] > 50) & (pixels[..., 0] < 25) & (pixels[..., 2] < 25)
        blue = (pixels[..., 2] > 50) & (pixels[..., 0] < 25) & (pixels[..., 1] < 25)
        if green.sum() > 500 and blue.sum() > 500:
            return
        await asyncio.sleep(0.5)
    await page.screenshot(path=Path(tempfile.gettempdir()) / "ohif-thumbnails-failure.png")
    raise AssertionError("the study browser shows no green-square and blue-circle thumbnails")


async def test_ohif_same_origin(server: LiveServer) -> None:
    await _run_ohif(
        f"{server.url}/viewer/", f"{server.url}/viewer/viewer?StudyInstanceUIDs={STUDY_UID}"
    )


async def test_ohif_cross_origin(server: LiveServer, ohif_elsewhere: str) -> None:
    await _run_ohif(f"{ohif_elsewhere}/", f"{ohif_elsewhere}/viewer?StudyInstanceUIDs={STUDY_UID}")


async def test_home_page_lists_and_uploads(server: LiveServer) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            problems = Problems(page)
            await page.goto(f"{server.url}/")
            row = page.locator(f'tr[data-study-uid="{STUDY_UID}"]')
            await row.get_by_text("Anony Mous").wait_for()
            assert await row.get_by_text("Open in OHIF").get_attribute("href") == (
                f"/viewer/viewer?StudyInstanceUIDs={STUDY_UID}"
            )
            thumbnail = row.locator("img.thumbnail")
            await page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=await thumbnail.element_handle()
            )
            await page.locator("#files").set_input_files(get_testdata_file("CT_small.dcm"))
            await page.locator('#upload-status[data-done="true"]').wait_for()
            assert "1 of 1 files stored" in await page.locator("#upload-status").inner_text()
            await page.get_by_text("CompressedSamples CT1").wait_for()
            assert await page.locator("#studies tbody tr").count() == 2
            assert not problems.seen, problems.seen
        finally:
            await browser.close()
