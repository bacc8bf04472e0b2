"""An instance on its way in: its bytes in the upload area, then parsed, hashed and given
its sidecar there, ready to be renamed into place by :meth:`Archive.commit_uploads`."""

from __future__ import annotations

import contextlib
import functools
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


class StagingFile:
    """A new file in the upload area that an instance's bytes are written to as they come.

    Writes go to the page cache and return at once, so callers on the event loop call
    :meth:`write` directly; a failure of the file is an ``OSError`` (a full disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fp: BinaryIO = path.open("xb")

    def write(self, chunk: bytes) -> None:
        self._fp.write(chunk)

    def close(self) -> None:
        self._fp.close()

    def abandon(self) -> None:
        """Close quietly and remove what was written."""
        with contextlib.suppress(OSError):
            self._fp.close()
        remove(self.path)


def prepare_upload(path: Path, fsync: bool) -> Upload:
    """Parse and hash an upload and write its sidecar next to it; if ``fsync``, flush the
    upload to disk meanwhile, in a thread (a flush waits on the disk, parsing on the CPU).

    This runs beside the other uploads (in a worker process, or in a thread of the server
    for an upload alone), so that the commit, one batch at a time, is only renames and a
    flush of their folders. The sidecar is not flushed: it is derived from the .dcm, and a
    start that finds it lost or stale after a power cut writes it again."""
    with path.open("rb") as fp:  # parsed, hashed and flushed through one descriptor
        flushes = [_flusher().submit(os.fsync, fp.fileno())] if fsync else []
        try:
            header = describe_opened(fp, path)
            digest = file_digest(fp)
            stat = os.fstat(fp.fileno())
        finally:  # never leave the flush running on a file the caller may now remove
            futures.wait(flushes)
    for flush in flushes:
        flush.result()
    written = sidecar_of(path)
    write_new(
        written, sidecar.document(header, digest, stat.st_size, stat.st_mtime_ns), fsync=False
    )
    return Upload(path, header, digest, written)


def remove(path: Path) -> None:
    """An upload and the sidecar written beside it, if it was."""
    path.unlink(missing_ok=True)
    sidecar_of(path).unlink(missing_ok=True)


@functools.cache
def _flusher() -> futures.ThreadPoolExecutor:
    """The thread that flushes uploads, one per process that prepares them, made on first
    use (after the worker processes were forked)."""
    return futures.ThreadPoolExecutor(1, thread_name_prefix="flush")
