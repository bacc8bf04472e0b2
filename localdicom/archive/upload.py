"""An instance on its way in: its bytes in the upload area, then parsed, hashed and given
its sidecar there, ready to be renamed into place by :meth:`Archive.commit_uploads`."""

from __future__ import annotations

import contextlib
import functools
import io
import os
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from localdicom.archive import sidecar
from localdicom.archive.files import file_digest, write_new
from localdicom.archive.layout import sidecar_of
from localdicom.dicom.header import Header, describe_opened


@dataclass(frozen=True)
class Upload:
    """An instance in the upload area, parsed and hashed; ``sidecar`` written beside it, or
    None when the commit writes it (an import's staged copy)."""

    path: Path
    header: Header
    digest: str
    sidecar: Path | None = None


#: An instance up to this size is held in memory while it arrives, and written to its file
#: by :func:`prepare_upload` while it is parsed and hashed; a larger one is written to its
#: file as it arrives. Writing a new file costs the CPU that receives it (on this project's
#: benchmark machine, 1.5 ms for 512 KB, more than parsing it): held, that cost leaves the
#: event loop, which then only receives, and is paid beside the parsing, not before it.
HELD_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Spooled:
    """An instance received into the upload area: its ``path`` there, and its bytes if it
    was small enough to be ``held`` in memory instead (then nothing is at ``path`` yet)."""

    path: Path
    held: bytes | None = None


class StagingFile:
    """An instance's bytes as they come, held in memory up to :data:`HELD_BYTES` and beyond
    that written to a new file in the upload area.

    Writes to the page cache return at once, so callers on the event loop call :meth:`write`
    directly; a failure of the file is an ``OSError`` (a full disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._chunks: list[bytes] = []
        self._size = 0
        self._fp: BinaryIO | None = None

    def write(self, chunk: bytes) -> None:
        if self._fp is None:
            self._size += len(chunk)
            self._chunks.append(chunk)
            if self._size <= HELD_BYTES:
                return
            self._fp = self.path.open("xb")
            chunk = b"".join(self._chunks)
            self._chunks = []
        self._fp.write(chunk)

    def close(self) -> Spooled:
        if self._fp is None:
            return Spooled(self.path, b"".join(self._chunks))
        self._fp.close()
        return Spooled(self.path)

    def abandon(self) -> None:
        """Close quietly and remove what was written."""
        self._chunks = []
        if self._fp is not None:
            with contextlib.suppress(OSError):
                self._fp.close()
        remove(self.path)


def prepare_upload(path: Path, fsync: bool, held: bytes | None = None) -> Upload:
    """Parse and hash an upload and write its sidecar next to it; if ``fsync``, flush the
    upload to disk meanwhile, in a thread (a flush waits on the disk, parsing on the CPU).
    An upload ``held`` in memory is written to ``path`` in that thread too, and parsed and
    hashed from memory meanwhile.

    This runs beside the other uploads (in a worker process, or in a thread of the server
    for an upload alone), so that the commit, one batch at a time, is only renames and a
    flush of their folders. The sidecar is not flushed: it is derived from the .dcm, and a
    start that finds it lost or stale after a power cut writes it again."""
    if held is None:
        with path.open("rb") as fp:  # parsed, hashed and flushed through one descriptor
            header, digest = _described(fp, path, _flushing(fp.fileno(), fsync))
    else:
        written = _flusher().submit(write_new, path, held, fsync)
        header, digest = _described(io.BytesIO(held), path, [written])
    stat = path.stat()
    written_sidecar = sidecar_of(path)
    write_new(
        written_sidecar,
        sidecar.document(header, digest, stat.st_size, stat.st_mtime_ns),
        fsync=False,
    )
    return Upload(path, header, digest, written_sidecar)


def _flushing(fd: int, fsync: bool) -> list[futures.Future]:
    return [_flusher().submit(os.fsync, fd)] if fsync else []


def _described(fp: BinaryIO, path: Path, writes: list[futures.Future]) -> tuple[Header, str]:
    """The header and digest of the upload in ``fp``, once ``writes`` (its file written or
    flushed, in the flusher thread) are done; their error is raised, if any."""
    try:
        header = describe_opened(fp, path)
        digest = file_digest(fp)
    finally:  # never leave a write running on a file the caller may now remove
        futures.wait(writes)
    for write in writes:
        write.result()
    return header, digest


def remove(path: Path) -> None:
    """An upload and the sidecar written beside it, if it was."""
    path.unlink(missing_ok=True)
    sidecar_of(path).unlink(missing_ok=True)


@functools.cache
def _flusher() -> futures.ThreadPoolExecutor:
    """The thread that flushes uploads, one per process that prepares them, made on first
    use (after the worker processes were forked)."""
    return futures.ThreadPoolExecutor(1, thread_name_prefix="flush")
