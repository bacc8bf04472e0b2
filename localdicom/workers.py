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

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker process; exceptions come back as raised there."""
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            self._pool = ProcessPoolExecutor(self.size, mp_context=context)
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
