"""Whole-file writes that a crash cannot leave half done, and the flushes that make them
durable: a new file is written under a temporary name beside its target and renamed into
place (rename is atomic within a file system, POSIX ``rename(2)``)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

#: Temporary files of interrupted atomic writes look like this; the startup scan removes them.
TEMPORARY_GLOB = ".*.tmp"


def file_digest(fp: BinaryIO) -> str:
    """SHA-256 of a whole file: decides whether a re-sent instance is the very same one."""
    fp.seek(0)
    return hashlib.file_digest(fp, "sha256").hexdigest()


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def write_new(path: Path, data: bytes, fsync: bool, mode: int | None = None) -> None:
    """``data`` in a new file at ``path`` (given ``mode`` before anything is written in
    it), removed again if that fails."""
    try:
        with path.open("wb") as fp:
            if mode is not None:
                os.fchmod(fp.fileno(), mode)
            fp.write(data)
            if fsync:
                fp.flush()
                os.fsync(fp.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_temporary(path: Path, data: bytes, fsync: bool, mode: int | None = None) -> Path:
    """``data`` in a new temporary file next to ``path``, for a rename onto it later."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    write_new(temporary, data, fsync, mode)
    return temporary


def write_atomically(path: Path, data: bytes, fsync: bool, mode: int | None = None) -> None:
    temporary = write_temporary(path, data, fsync, mode)
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_ahead(paths: Iterable[Path]) -> None:
    """:func:`will_need` each of these files; files gone meanwhile are passed over."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            will_need(fd)
        finally:
            os.close(fd)


def will_need(fd: int) -> None:
    """Have the kernel read the open file into the page cache in the background
    (``posix_fadvise`` WILLNEED), for a sender that will reach it in a moment: a file not
    read since it was written with O_DIRECT (``held.py``), or since the machine started, is
    on the disk only, and reading it then would wait for the disk. Nothing where there is
    no ``posix_fadvise``."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (what makes a rename into it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
