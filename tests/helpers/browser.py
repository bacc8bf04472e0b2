"""Playwright driving Debian's Chromium (``/usr/bin/chromium``; Playwright's own browser
downloads are never used), for the tests that look at pages in a real browser.

Outside CI a browser test skips, saying why, when Chromium or Playwright is absent; in CI
(CI=true) their absence is a failure, since .ci/run installs them.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000


def missing_browser() -> str | None:
    """Why a browser test cannot run here, or None."""
    if not CHROMIUM.exists():
        return "Chromium is not installed (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright)"
    return None


def require_browser(missing: str | None) -> None:
    """Skip (or, in CI, fail) a test that lacks what ``missing`` says."""
    if missing and os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {missing}")
    if missing:
        pytest.skip(f"browser test skipped: {missing}")


@asynccontextmanager
async def chromium() -> AsyncIterator:
    """A headless Chromium (Playwright's Browser), closed afterwards."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            await browser.close()


class Problems:
    """HTTP errors, failed requests, script errors and CORS messages seen by the page, and
    the requests still unanswered: what a failed test reports (tests/conftest.py), so that
    a wait that timed out says what the page was waiting for."""

    def __init__(self, page) -> None:
        self.seen: list[str] = []
        self.pending: dict[object, tuple[str, float]] = {}
        page.on("request", lambda r: self.pending.update({r: (r.url, time.monotonic())}))
        page.on("requestfinished", lambda r: self.pending.pop(r, None))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))

    def report(self) -> str:
        now = time.monotonic()
        unanswered = [f"{now - t:.1f} s: {url}" for url, t in self.pending.values()]
        return "\n".join(["seen:", *self.seen, "still unanswered (waiting since):", *unanswered])

    def _failed(self, request) -> None:
        self.pending.pop(request, None)
        self.seen.append(f"failed {request.url}: {request.failure}")

    def _response(self, response) -> None:
        if response.status >= 400:
            self.seen.append(f"HTTP {response.status} {response.url}")

    def _console(self, message) -> None:
        text = message.text
        if message.type == "error" or "CORS" in text or "Access-Control" in text:
            self.seen.append(f"console {message.type}: {text}")


def screen_pixels(png: bytes) -> np.ndarray:
    """A screenshot as an RGB array of ints."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
