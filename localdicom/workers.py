"""The worker pool: parsing uploads, decoding, encoding and rendering run in other processes.

That work holds a CPU, and some codecs keep the GIL while they run; in worker processes it
never stalls the event loop, so a query from another client is answered meanwhile, and
concurrent uploads use every core. The workers start on first use, one per CPU, forked from
a server process that has pydicom and the codecs imported already.

What :class:`Workers` guarantees:

- :meth:`Workers.run` returns what ``function(*args)`` returned in a worker, or raises the
  exception it raised there (the worker's traceback as its cause).
- A worker runs one call at a time, and its answer is read before it is given another: each
  call gets its own answer, whatever the order the calls finish in; calls beyond the number
  of workers wait for one to be idle.
- A worker that dies (a codec crashing on hostile data) fails only the call it was running,
  with :class:`BrokenProcessPool`, and is replaced; one that died while idle (the OOM
  killer) is replaced before it is given a call.
- A call whose caller went away (a client that hung up) still runs to its end, and its
  answer is read and dropped before the worker takes another call.
- Workers end with the server: when it closes their sockets (:meth:`Workers.close`), and
  when it ends without closing them, even killed (:func:`exit_with`).

Each worker has a socket to the server: the event loop writes a call to an idle worker and
reads the answer when it comes, and no thread of the server takes part, where
concurrent.futures' ProcessPoolExecutor passes every call to a feeder thread and every
answer to a manager thread, which cost the server CPU on every call. Where Linux gives
``memfd_create``, each worker also shares :data:`SHARED_BYTES` of memory with the server,
through which a call's ``shared`` bytes (an upload held in memory) reach it: copied there,
512 KB cost the server 15 us, where sent through the socket they cost 0.7 ms (copied into
socket buffers the kernel allocates for them) on this project's benchmark machine.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import mmap
import multiprocessing
import os
import pickle
import select
import signal
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

logger = logging.getLogger(__name__)
T = TypeVar("T")

PRELOAD = [
    "localdicom.archive.upload",
    "localdicom.dicom.describing",
    "localdicom.dicom.pixels",
    "localdicom.workers",
]
#: Each message on a worker's socket: its length, then a pickle.
LENGTH = struct.Struct("!Q")
#: Bytes read ahead from a worker before reading pauses; answers (decoded frames) can be
#: tens of MB and are read whole anyway.
READ_AHEAD = 1 << 24
#: Memory each worker shares with the server for a call's ``shared`` bytes.
SHARED_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class _Worker:
    process: BaseProcess
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: The memory shared with the worker (None where there is none), written by the
    #: server only while the worker is given a call.
    shared: mmap.mmap | None


class Workers:
    def __init__(self, size: int | None = None) -> None:
        self.size = size or os.cpu_count() or 1
        #: Workers waiting for a call; or the error that kept one from starting, which fails
        #: a call waiting for it (rather than leave it waiting for a worker that never comes).
        self._idle: asyncio.Queue[_Worker | Exception] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        #: Workers running or starting, and calls waiting for one.
        self._live = 0
        self._waiting = 0
        self._up = False
        self._closed = False
        #: Tasks nobody may await to their end (a start, a call whose caller went away).
        self._tasks: set[asyncio.Future] = set()

    async def run(
        self, function: Callable[..., T], *args: Any, shared: Sequence[bytes] | None = None
    ) -> T:
        """``function(*args)`` in a worker process; exceptions come back as raised there,
        :class:`BrokenProcessPool` if the worker died meanwhile. ``shared`` chunks of bytes
        are passed after ``args`` as one memoryview of page-aligned memory, valid until the
        function returns: the memory shared with the worker when they fit there, else a
        copy of them pickled with the call."""
        worker = await self._live_worker()
        call = _call(function, args, shared, worker.shared)
        # A caller that goes away leaves the call to finish, so the worker's answer is read
        # before it is given another call.
        return await asyncio.shield(self._keep(self._call(worker, call)))

    async def run_or_thread(
        self, function: Callable[..., T], *args: Any, shared: Sequence[bytes] | None = None
    ) -> T:
        """:meth:`run` once a worker is up, else in a thread of this process while they
        start: for light work, which should not wait for processes to start."""
        if self._up:
            return await self.run(function, *args, shared=shared)
        self._replenish()
        return await self.in_thread(function, *args, shared=shared)

    @staticmethod
    async def in_thread(
        function: Callable[..., T], *args: Any, shared: Sequence[bytes] | None = None
    ) -> T:
        """:meth:`run`'s call in a thread of this process instead."""
        return await asyncio.to_thread(_with_shared, function, args, shared)

    def close(self) -> None:
        """Close every worker's socket: a worker exits when it reads the end of it."""
        self._closed = True
        for worker in self._workers:
            worker.writer.close()
        self._workers.clear()

    async def _live_worker(self) -> _Worker:
        """An idle worker; one that died while idle (the OOM killer) is replaced, not used."""
        while True:
            self._replenish()
            self._waiting += 1
            try:
                worker = await self._idle.get()
            finally:
                self._waiting -= 1
            if isinstance(worker, Exception):
                message = f"no worker process could be started: {worker}"
                raise BrokenProcessPool(message) from worker
            if worker.process.is_alive():
                return worker
            self._lose(worker)

    def _replenish(self) -> None:
        """Start workers until :attr:`size` are running or starting."""
        while self._live < self.size and not self._closed:
            self._live += 1
            self._keep(self._start_one())

    async def _start_one(self) -> None:
        try:
            worker = await _start_worker()
        except Exception as exc:  # out of processes or memory: the next call tries again
            logger.warning("a worker process could not be started: %s", exc)
            self._live -= 1
            if self._waiting:
                self._idle.put_nowait(exc)
            return
        if self._closed:
            worker.writer.close()
            return
        self._workers.add(worker)
        self._up = True
        self._idle.put_nowait(worker)

    async def _call(self, worker: _Worker, call: memoryview) -> Any:
        try:
            worker.writer.write(call)
            (length,) = LENGTH.unpack(await worker.reader.readexactly(LENGTH.size))
            answer = await worker.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self._lose(worker)
            raise BrokenProcessPool(
                "the worker process stopped while it ran this (a codec crashed?)"
            ) from exc
        self._idle.put_nowait(worker)
        succeeded, value, remote_traceback = pickle.loads(answer)
        if succeeded:
            return value
        raise value from RemoteTraceback(remote_traceback)

    def _lose(self, worker: _Worker) -> None:
        """Forget a worker that died or broke its socket; the next call starts another."""
        worker.writer.close()
        if worker in self._workers:
            self._workers.discard(worker)
            self._live -= 1
        if worker.process.is_alive():
            worker.process.kill()

    def _keep(self, coroutine: Any) -> asyncio.Future:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._forget_task)
        return task

    def _forget_task(self, task: asyncio.Future) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away does not care


class RemoteTraceback(Exception):
    """Where in the worker an exception was raised: the cause of the one re-raised here."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}"


async def _start_worker() -> _Worker:
    ours, theirs = socket.socketpair()
    try:
        process = _context().Process(
            target=_serve, args=(theirs, os.getpid()), name="localdicom-worker", daemon=True
        )
        # The first start launches the forkserver, which imports PRELOAD.
        await asyncio.to_thread(process.start)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    shared = _share_memory(ours)
    reader, writer = await asyncio.open_connection(sock=ours, limit=READ_AHEAD)
    return _Worker(process, reader, writer, shared)


def _share_memory(connection: socket.socket) -> mmap.mmap | None:
    """Memory for a worker to share, sent to it over ``connection`` as a descriptor (its
    first message; no descriptor where there is no ``memfd_create``)."""
    if not hasattr(os, "memfd_create"):
        socket.send_fds(connection, [b"-"], [])
        return None
    fd = os.memfd_create("localdicom-worker", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, SHARED_BYTES)
        socket.send_fds(connection, [b"+"], [fd])
        return mmap.mmap(fd, SHARED_BYTES)
    finally:
        os.close(fd)


def _shared_memory(connection: socket.socket) -> mmap.mmap:
    """The worker's side of :func:`_share_memory`: that memory, or where there is none,
    memory of its own that pickled ``shared`` bytes are copied into (page-aligned)."""
    _, fds, _, _ = socket.recv_fds(connection, 1, 1)
    if not fds:
        return mmap.mmap(-1, SHARED_BYTES)
    try:
        return mmap.mmap(fds[0], SHARED_BYTES)
    finally:
        os.close(fds[0])


@functools.cache
def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _call(
    function: Callable, args: tuple, shared: Sequence[bytes] | None, memory: mmap.mmap | None
) -> memoryview:
    """A call: the function, its arguments, and its ``shared`` bytes, as the length they
    take in the shared ``memory`` (copied there) or else as bytes."""
    if shared is None:
        return _message((function, args, None))
    length = sum(map(len, shared))
    if memory is None or length > SHARED_BYTES:
        return _message((function, args, b"".join(shared)))
    _gather(memory, shared)
    return _message((function, args, length))


def _gather(memory: mmap.mmap, chunks: Sequence[bytes]) -> None:
    at = 0
    for chunk in chunks:
        memory[at : at + len(chunk)] = chunk
        at += len(chunk)


def _with_shared(function: Callable[..., T], args: tuple, shared: Sequence[bytes] | None) -> T:
    """:meth:`Workers.in_thread`'s call: ``shared`` gathered into memory of its own,
    page-aligned as a worker's."""
    if shared is None:
        return function(*args)
    length = sum(map(len, shared))
    with mmap.mmap(-1, max(length, 1)) as memory:
        _gather(memory, shared)
        with memoryview(memory)[:length] as view:
            return function(*args, view)


def _message(content: Any) -> memoryview:
    """``content`` pickled, after its length: one write, and no copy of a large answer."""
    buffer = io.BytesIO()
    buffer.write(bytes(LENGTH.size))
    pickle.dump(content, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    message = buffer.getbuffer()
    message[: LENGTH.size] = LENGTH.pack(len(message) - LENGTH.size)
    return message


def _serve(connection: socket.socket, server: int) -> None:
    """A worker: run each call read from ``connection`` and write back its outcome, until
    the server closes the socket (or ends)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server, which stops us
    exit_with(server)
    shared = _shared_memory(connection)
    calls = connection.makefile("rb")
    while True:
        length = calls.read(LENGTH.size)
        if len(length) < LENGTH.size:
            return
        connection.sendall(_outcome(calls.read(LENGTH.unpack(length)[0]), shared))


def _outcome(call: bytes, shared: mmap.mmap) -> memoryview:
    try:
        function, args, held = pickle.loads(call)
        if held is None:
            return _message((True, function(*args), None))
        if isinstance(held, bytes):  # pickled: not in the shared memory
            if len(held) > len(shared):
                shared = mmap.mmap(-1, len(held))
            _gather(shared, [held])
            held = len(held)
        with memoryview(shared)[:held] as view:
            return _message((True, function(*args, view), None))
    except Exception as exc:
        error, where = exc, traceback.format_exc()
    try:
        return _message((False, error, where))
    except Exception:  # an exception that does not pickle: its text still tells what failed
        return _message((False, RuntimeError(repr(error)), where))


def exit_with(pid: int) -> None:
    """Make this worker exit when process ``pid`` (the server) ends, even killed (SIGKILL,
    the OOM killer) with no chance to close its workers: a worker would wait for calls for
    ever otherwise, and keep the forkserver alive with it. A thread waits on a pidfd of the
    server, which costs nothing until it becomes readable (Linux); where there are no pidfds
    (macOS), it looks once a second."""
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
