"""An upload held in memory: written to its file without passing through the page cache,
and parsed and hashed where it is.

Where the archive flushes what it stores (``--fsync``, the default), an upload's bytes must
reach the disk before it is acknowledged anyway. Written with ``O_DIRECT`` they go there
from the memory they are held in: the kernel neither copies them into new page-cache pages
nor keeps them there. New pages are what writing a file costs most on a virtual machine
that hands free memory back to its host (a fault in the host for every 4 KiB touched
first): on this project's benchmark machine 0.3-3 ms of CPU for a 512 KB file, against
0.25 ms written direct (``benchmarks/stow_ab.py`` measures the whole upload).

``O_DIRECT`` needs the memory, the file offset and the length aligned to the device's
block (open(2), "O_DIRECT"): the held bytes live in page-aligned memory (an mmap), reused
from upload to upload so that its pages are touched once, and the last partial block is
written through the page cache. A file system that refuses ``O_DIRECT`` (or a system
without it) gets an ordinary write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import mmap
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

#: An upload up to this size is held in memory while it arrives; a larger one is written to
#: its file as it comes.
HELD_BYTES = 16 * 1024 * 1024
#: O_DIRECT alignment: a page, which is a multiple of every block size Linux supports.
BLOCK = mmap.PAGESIZE
_DIRECT = getattr(os, "O_DIRECT", 0)


def write_held(path: Path, held: memoryview, fsync: bool, direct: bool | None = None) -> None:
    """``held`` (page-aligned, as :func:`aligned` and the worker processes give it) in a
    new file at ``path``, flushed if ``fsync``; removed again if that fails. Past the page
    cache if ``direct``, by default when flushed: a write that is not flushed returns
    sooner through the page cache, unless the disk is to have it soon anyway (an import
    ends with one ``sync``)."""
    fd, direct = _create(path, direct=fsync if direct is None else direct)
    try:
        if direct:
            whole = len(held) - len(held) % BLOCK
            _write_all(fd, held[:whole])
            _stop_direct(fd)
            held = held[whole:]
        _write_all(fd, held)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _create(path: Path, direct: bool) -> tuple[int, bool]:
    """A new file open for writing, and whether with O_DIRECT (asked, and taken)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    if direct and _DIRECT:
        try:
            return os.open(path, flags | _DIRECT, 0o644), True
        except OSError as exc:  # a file system without O_DIRECT (tmpfs before Linux 6.6)
            if exc.errno != errno.EINVAL:
                raise
            path.unlink(missing_ok=True)
    return os.open(path, flags, 0o644), False


def _stop_direct(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_DIRECT)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


class MemoryFile(io.RawIOBase):
    """A read-only file over memory, read through without a copy of the whole (as
    ``io.BytesIO`` would make of anything but ``bytes``); wrap it in
    ``io.BufferedReader`` for the many small reads of a parser. ``name``: the file it
    holds, where a reader (pydicom) may open it again for a value it deferred."""

    def __init__(self, data: memoryview, name: str) -> None:
        super().__init__()
        self._data = data
        self._at = 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data[self._at : self._at + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._at += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._data)}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at


_free: list[mmap.mmap] = []
_free_lock = threading.Lock()


@contextlib.contextmanager
def _memory() -> Iterator[mmap.mmap]:
    """:data:`HELD_BYTES` of page-aligned memory, reused from call to call (by as many
    threads as hold some at once). Private: a process forked meanwhile gets its own copy
    of what it touches, never memory its parent writes in."""
    with _free_lock:
        memory = _free.pop() if _free else mmap.mmap(-1, HELD_BYTES, flags=mmap.MAP_PRIVATE)
    try:
        yield memory
    finally:
        with _free_lock:
            _free.append(memory)


@contextlib.contextmanager
def aligned(chunks: Iterable[bytes]) -> Iterator[memoryview]:
    """``chunks`` gathered into page-aligned memory: a view valid until the block ends."""
    with _memory() as memory:
        size = 0
        for chunk in chunks:
            memory[size : size + len(chunk)] = chunk
            size += len(chunk)
        with memoryview(memory)[:size] as view:
            yield view


@contextlib.contextmanager
def read_whole(fp: BinaryIO, size: int) -> Iterator[memoryview]:
    """The file open in ``fp``, of ``size`` bytes (under :data:`HELD_BYTES`), read from its
    start into page-aligned memory: a view valid until the block ends, one byte longer
    than ``size`` if the file has grown since, shorter if it has shrunk."""
    with _memory() as memory, memoryview(memory) as whole:
        fp.seek(0)
        wanted = size + 1
        done = 0
        while done < wanted and (count := fp.readinto(whole[done:wanted])):  # type: ignore[attr-defined]
            done += count
        with whole[:done] as view:
            yield view
