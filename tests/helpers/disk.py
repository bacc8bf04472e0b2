"""A full disk, simulated: writes into an archive fail with ENOSPC once the bytes it was
given are used up, in this process (its uploads are then prepared in a thread of it)."""

from __future__ import annotations

import errno
import os
import pathlib
from pathlib import Path
from typing import Any

import pytest

from localdicom.archive import held
from localdicom.workers import Workers


class SmallDisk:
    """Files opened for writing under ``root`` share ``free`` bytes; a write beyond them
    writes what fits and fails with ENOSPC, as on a full file system. None: unlimited.
    Uploads held in memory are written by descriptor (``held.write_held``): a write of
    theirs beyond ``free`` writes nothing (O_DIRECT takes whole blocks only)."""

    def __init__(self, root: Path, free: int | None = None) -> None:
        self.root = root.resolve()
        self.free = free
        self.failures = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> SmallDisk:
        real_open = pathlib.Path.open
        disk = self

        def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any):
            fp = real_open(path, mode, *args, **kwargs)
            writing = any(flag in mode for flag in "wax+")
            if writing and path.resolve().is_relative_to(disk.root):
                return _Metered(fp, disk)
            return fp

        real_write_all = held._write_all

        def write_all(fd: int, data: memoryview) -> None:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if disk.free is not None and path.is_relative_to(disk.root):
                if len(data) > disk.free:  # nothing written: the space stays free for
                    disk.failures += 1  # a smaller write (another upload's, in any order)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.free -= len(data)
            real_write_all(fd, data)

        monkeypatch.setattr(pathlib.Path, "open", open_)
        monkeypatch.setattr(held, "_write_all", write_all)
        # The disk is simulated in this process: uploads are parsed (and their sidecars
        # written) in a thread of it, not in the worker processes.
        monkeypatch.setattr(Workers, "run_or_thread", _in_a_thread)
        return self


async def _in_a_thread(_workers: Workers, function: Any, *args: Any, **shared: Any) -> Any:
    return await Workers.in_thread(function, *args, **shared)


class _Metered:
    def __init__(self, fp: Any, disk: SmallDisk) -> None:
        self._fp, self._disk = fp, disk

    def write(self, data: bytes) -> int:
        disk = self._disk
        if disk.free is not None and len(data) > disk.free:
            self._fp.write(data[: disk.free])
            disk.free = 0
            disk.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if disk.free is not None:
            disk.free -= len(data)
        return self._fp.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)

    def __enter__(self) -> _Metered:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._fp.close()
