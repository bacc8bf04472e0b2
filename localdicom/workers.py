"""The worker pool: decoding, encoding and rendering run in other processes.

A JPEG 2000 decode holds a CPU for tens of milliseconds and some codecs keep the GIL while
they do; in worker processes that never stalls the event loop, so a query from another client
is answered meanwhile. The pool starts on first use (most requests never need it), one
process per CPU, forked from a server process that has the codecs imported already.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

PRELOAD = ["localdicom.dicom.pixels"]


class Workers:
    def __init__(self, size: int | None = None) -> None:
        self.size = size or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker process; exceptions come back as raised there."""
        async with self._starting:
            if self._pool is None:
                # Starting processes blocks for about a second: not on the event loop.
                self._pool = await asyncio.to_thread(self._start)
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        pool = ProcessPoolExecutor(self.size, mp_context=context)
        for future in [pool.submit(os.getpid) for _ in range(self.size)]:
            future.result()
        return pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
