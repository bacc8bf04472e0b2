"""An instance on its way in: its bytes held in memory or in the upload area, then written
there, parsed, hashed and given its sidecar, ready to be renamed into place by
:meth:`Archive.commit_uploads`."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from localdicom.archive import sidecar
from localdicom.archive.files import file_digest, write_new
from localdicom.archive.held import HELD_BYTES, MemoryFile, aligned, write_held
from localdicom.archive.layout import sidecar_of
from localdicom.dicom.describing import describe_opened
from localdicom.dicom.header import Header


@dataclass(frozen=True)
class Upload:
    """An instance in the upload area, parsed and hashed; ``sidecar`` written beside it, or
    None when the commit writes it."""

    path: Path
    header: Header
    digest: str
    sidecar: Path | None = None


@dataclass(frozen=True)
class Spooled:
    """An instance received: its ``path`` in the upload area, and its bytes if they were
    ``held`` in memory instead (then nothing is at ``path`` until it is prepared)."""

    path: Path
    held: tuple[bytes, ...] | None = None


class StagingFile:
    """An instance's bytes as they come: held in memory up to :data:`HELD_BYTES`, beyond
    that written to a new file in the upload area.

    Writes to the page cache return at once, so callers on the event loop call :meth:`write`
    directly; a failure of the file is an ``OSError`` (a full disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._held: list[bytes] = []
        self._size = 0
        self._fp: BinaryIO | None = None

    def write(self, chunk: bytes) -> None:
        if self._fp is None:
            self._held.append(chunk)
            self._size += len(chunk)
            if self._size <= HELD_BYTES:
                return
            self._fp = self.path.open("xb")
            chunk = b"".join(self._held)
            self._held = []
        self._fp.write(chunk)

    def close(self) -> Spooled:
        if self._fp is None:
            return Spooled(self.path, tuple(self._held))
        self._fp.close()
        return Spooled(self.path)

    def abandon(self) -> None:
        """Close quietly and remove what was written."""
        self._held = []
        if self._fp is not None:
            with contextlib.suppress(OSError):
                self._fp.close()
        remove(self.path)


def prepare_upload(path: Path, fsync: bool, held: memoryview | None = None) -> Upload:
    """Parse and hash an upload and write its sidecar next to it.

    An upload in its file is flushed meanwhile if ``fsync``, in a thread (a flush waits on
    the disk, parsing on the CPU). One ``held`` in page-aligned memory
    (:func:`localdicom.archive.held.aligned`, or a worker process's shared memory) is
    hashed in that thread, where it is, while it is written to ``path`` (:func:`write_held`:
    past the page cache when flushed) and parsed.

    This runs beside the other uploads (in a worker process, or in a thread of the server
    for an upload alone), so that the commit, one batch at a time, is only renames and a
    flush of their folders."""
    if held is None:
        with path.open("rb") as fp:  # parsed, hashed and flushed through one descriptor
            flushes = [_beside().submit(os.fsync, fp.fileno())] if fsync else []
            try:
                header = describe_opened(fp, path)
                digest = file_digest(fp)
                stat = os.fstat(fp.fileno())
            finally:  # never leave the flush running on a file the caller may now remove
                futures.wait(flushes)
        for flush in flushes:
            flush.result()
    else:
        # Written here, not in the thread beside the parsing: there each of its system
        # calls waited for the GIL this thread held, and (A/B with benchmarks/stow_ab.py)
        # eight uploads at a time cost more CPU, one at a time went no faster. The hash,
        # one call that lets the GIL go, runs there instead, on another CPU: a 512 KB CT
        # slice was prepared in 1.28 rather than 1.58 ms (p50 of 120, alternated, in one
        # process), at the same CPU time.
        hashing = _beside().submit(_sha256, held)
        try:
            write_held(path, held, fsync)
            header = describe_opened(io.BufferedReader(MemoryFile(held, str(path))), path)
        finally:  # ``held`` is reused once this returns: never leave the hash reading it
            futures.wait([hashing])
        digest = hashing.result()
        stat = path.stat()
    return Upload(path, header, digest, write_sidecar(path, header, digest, stat))


def write_sidecar(path: Path, header: Header, digest: str, stat: os.stat_result) -> Path:
    """The sidecar of the upload at ``path`` beside it, for the commit to rename along.
    Not flushed: it is derived from the .dcm, and a start that finds it lost or stale
    after a power cut writes it again."""
    written = sidecar_of(path)
    write_new(
        written, sidecar.document(header, digest, stat.st_size, stat.st_mtime_ns), fsync=False
    )
    return written


def prepare_spooled(spooled: Spooled, fsync: bool) -> Upload:
    """:func:`prepare_upload` in this process, its held bytes gathered into page-aligned
    memory reused from upload to upload."""
    if spooled.held is None:
        return prepare_upload(spooled.path, fsync)
    with aligned(spooled.held) as held:
        return prepare_upload(spooled.path, fsync, held)


def remove(path: Path) -> None:
    """An upload and the sidecar written beside it, if it was."""
    path.unlink(missing_ok=True)
    sidecar_of(path).unlink(missing_ok=True)


def _sha256(held: memoryview) -> str:
    return hashlib.sha256(held).hexdigest()


@functools.cache
def _beside() -> futures.ThreadPoolExecutor:
    """The thread that flushes or hashes uploads beside their parsing, one per process that
    prepares them, made on first use (after the worker processes were forked)."""
    return futures.ThreadPoolExecutor(1, thread_name_prefix="beside")
