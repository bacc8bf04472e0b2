"""A small HTTP proxy in front of a real server that fails on purpose, for the transfer
tests: every third request is answered 503 (with Retry-After), or has its answer's body cut
in the middle, or its own body cut before the server sees it."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from aiohttp import web

from tests.helpers import free_port

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Flaky:
    """``mode``: "503", "cut-answer" or "cut-request": every ``every``-th request fails;
    "slow": every answer waits ``delay`` seconds (time to interrupt a run)."""

    def __init__(
        self, upstream: str, mode: str, every: int = 3, delay: float = 0.3, only: str = ""
    ) -> None:
        #: A regular expression: only requests whose path matches it fail (all when empty).
        self.only = only
        self.upstream = upstream.rstrip("/")
        self.mode = mode
        self.every = every
        self.delay = delay
        self.requests = 0
        self.failed = 0
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        failing = self.requests % self.every == 0 and bool(re.search(self.only, request.path))
        if failing and self.mode == "503":
            self.failed += 1
            await request.read()
            return web.Response(status=503, text="busy", headers={"Retry-After": "0"})
        if failing and self.mode == "cut-request" and request.can_read_body:
            self.failed += 1
            await request.content.read(1000)
            request.transport.close()  # the server behind never sees this request
            return web.Response(status=500)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                data=body or None,
                headers=headers,
            ) as answer,
        ):
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        if failing and self.mode == "cut-answer" and len(payload) > 100:
            self.failed += 1
            response = web.StreamResponse(status=answer.status, headers=kept)
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            request.transport.close()
            return response
        return web.Response(status=answer.status, body=payload, headers=kept)


@contextmanager
def flaky(upstream: str, mode: str, every: int = 3, only: str = "") -> Iterator[Flaky]:
    """The proxy running on a thread of its own."""
    proxy = Flaky(upstream, mode, every, only=only)
    if mode == "slow":
        proxy.every = 1 << 30  # slow, never failing
    loop = asyncio.new_event_loop()
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", proxy.port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
