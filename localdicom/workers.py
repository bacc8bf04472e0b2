"""The worker pool: parsing uploads, decoding, encoding and rendering run in other processes.

A JPEG 2000 decode holds a CPU for tens of milliseconds and some codecs keep the GIL while
they do; parsing a header holds it for milliseconds. In worker processes that never stalls
the event loop, so a query from another client is answered meanwhile, and concurrent uploads
use every core. The pool starts on first use, one process per CPU, forked from a server
process that has pydicom and the codecs imported already. A worker that dies (a codec
crashing on hostile data) fails its own request; the next request gets a new pool. A
server that is killed takes its workers with it (:func:`exit_with`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")

PRELOAD = ["localdicom.archive", "localdicom.dicom.header", "localdicom.dicom.pixels"]


class Workers:
    def __init__(self, size: int | None = None) -> None:
        self.size = size or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()
        self._background: asyncio.Task | None = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker process; exceptions come back as raised there."""
        return await self._run_in(await self._started(), function, *args)

    async def run_or_thread(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker process if the pool is up, else in a thread of
        this process while the pool starts: for work of milliseconds, which should not wait
        a second for processes to start."""
        if self._pool is not None:
            return await self._run_in(self._pool, function, *args)
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self._started())
        return await asyncio.to_thread(function, *args)

    async def _started(self) -> ProcessPoolExecutor:
        async with self._starting:
            if self._pool is None:
                # Starting processes blocks for about a second: not on the event loop.
                self._pool = await asyncio.to_thread(self._start)
            return self._pool

    async def _run_in(self, pool: ProcessPoolExecutor, function: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
        except BrokenProcessPool:
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    def _start(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        pool = ProcessPoolExecutor(
            self.size, mp_context=context, initializer=exit_with, initargs=(os.getpid(),)
        )
        for future in [pool.submit(os.getpid) for _ in range(self.size)]:
            future.result()
        return pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def exit_with(pid: int) -> None:
    """Make this pool worker exit when process ``pid`` (the server) ends, even killed
    (SIGKILL, the OOM killer) with no chance to stop its pool: a worker waits for work for
    ever otherwise, and keeps the forkserver and the resource tracker alive with it. A
    thread waits on a pidfd of the server, which costs nothing until it becomes readable
    (Linux); where there are no pidfds (macOS), it looks once a second."""
    if hasattr(os, "pidfd_open"):
        try:
            server = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            os._exit(0)

        def wait() -> None:
            select.select([server], [], [])
            os._exit(0)

    else:

        def wait() -> None:
            while _running(pid):
                time.sleep(1)
            os._exit(0)

    threading.Thread(target=wait, name="exit-with-server", daemon=True).start()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or reused by another user's
        return False
    return True
