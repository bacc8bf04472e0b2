"""An upload held in memory: written to its file whole whatever its length (O_DIRECT for
the aligned part where the file system takes it, open(2)), never over a file already there,
nothing left of a write that failed; read back through :class:`MemoryFile` as through a
file; gathered or read into page-aligned memory that is reused. A file on the disk only is in the
page cache once :func:`read_ahead` has had it read (preadv2 with RWF_NOWAIT tells: it fails
with EAGAIN rather than wait for the disk)."""

from __future__ import annotations

import errno
import io
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from localdicom.archive import held as held_module
from localdicom.archive.files import read_ahead
from localdicom.archive.held import BLOCK, MemoryFile, aligned, read_whole, write_held
from tests.helpers import SAMPLES

SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 512 * 1024 + 123]


def accepts_direct(folder: Path) -> bool:
    probe = folder / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


@pytest.fixture(params=["disk", "tmpfs"])
def folder(request, tmp_path: Path) -> Iterator[Path]:
    """The test's own folder, and one on tmpfs (which refused O_DIRECT before Linux 6.6)."""
    if request.param == "disk":
        yield tmp_path
        return
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm here")
    folder = shm / f"localdicom-test-{os.getpid()}-{tmp_path.name}"
    folder.mkdir()
    yield folder
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


@pytest.mark.parametrize("fsync", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_written_whole_whatever_its_length(folder: Path, size: int, fsync: bool) -> None:
    data = os.urandom(size)
    with aligned([data[: size // 3], data[size // 3 :]]) as view:
        write_held(folder / "upload", view, fsync)
    assert (folder / "upload").read_bytes() == data


def test_flushed_uploads_go_past_the_page_cache_where_the_file_system_allows(
    tmp_path: Path, monkeypatch
) -> None:
    """O_DIRECT is on for the blocks that are whole, then off for the rest."""
    switched: list[int] = []
    stop = held_module._stop_direct
    monkeypatch.setattr(held_module, "_stop_direct", lambda fd: stop(switched.append(fd) or fd))
    data = os.urandom(3 * BLOCK + 5)
    with aligned([data]) as view:
        write_held(tmp_path / "flushed", view, fsync=True)
        write_held(tmp_path / "not-flushed", view, fsync=False)
    assert len(switched) == (1 if accepts_direct(tmp_path) else 0)
    assert (tmp_path / "flushed").read_bytes() == (tmp_path / "not-flushed").read_bytes() == data


def test_a_file_already_there_is_left_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "upload").write_bytes(b"stored before")
    with aligned([b"something else"]) as view, pytest.raises(FileExistsError):
        write_held(tmp_path / "upload", view, fsync=True)
    assert (tmp_path / "upload").read_bytes() == b"stored before"


def test_a_write_that_fails_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    def full(fd: int, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(held_module.os, "write", full)
    with aligned([os.urandom(2 * BLOCK)]) as view, pytest.raises(OSError) as failure:
        write_held(tmp_path / "upload", view, fsync=True)
    assert failure.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_memory_file_reads_and_seeks_as_a_file_does() -> None:
    data = os.urandom(50_000)
    ours, theirs = MemoryFile(memoryview(data), "held"), io.BytesIO(data)
    steps = random.Random(7)
    for _ in range(500):
        if steps.random() < 0.3:
            offset, whence = steps.randrange(-100, 60_000), steps.choice([0, 1, 2])
            if whence == 0:
                offset = abs(offset)
            assert ours.seek(offset, whence) == theirs.seek(offset, whence)
        else:
            size = steps.randrange(0, 9000)
            assert ours.read(size) == theirs.read(size)
        assert ours.tell() == theirs.tell()


def test_pydicom_reads_a_memory_file_as_it_reads_the_file() -> None:
    path = SAMPLES / "red-triangle.dcm"
    with aligned([path.read_bytes()]) as view:
        ds = pydicom.dcmread(io.BufferedReader(MemoryFile(view, str(path))))
        assert ds == pydicom.dcmread(path)


def test_gathered_memory_is_page_aligned_and_reused() -> None:
    """Reused, its pages are touched once: new pages are what costs (see held.py)."""

    def start(view: memoryview) -> int:
        return np.frombuffer(view, dtype=np.uint8).ctypes.data

    with aligned([b"a" * 10, b"b" * 5]) as first:
        assert bytes(first) == b"a" * 10 + b"b" * 5
        where = start(first)
        with aligned([b"c"]) as second:  # held at the same time: other memory
            assert start(second) != where and bytes(second) == b"c"
    with aligned([b"d" * 3]) as again:
        assert start(again) == where and where % BLOCK == 0


def test_memory_held_is_a_forked_process_s_own() -> None:
    """Private memory: what a process forked meanwhile (an import's workers) writes in the
    memory it inherited is not what its parent reads, and the other way round."""
    with aligned([b"parent"]) as view:
        pid = os.fork()
        if pid == 0:
            view[:6] = b"child!"
            os._exit(0 if bytes(view) == b"child!" else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert bytes(view) == b"parent"


@pytest.mark.parametrize("change", [0, 1, 4096, -1, -4096])
def test_a_file_read_whole_says_it_changed_size(tmp_path: Path, change: int) -> None:
    """Read whole for the size it had: one byte more when it has grown since, fewer when it
    has shrunk, so that the caller can tell (an import copies files others may write)."""
    path = tmp_path / "file"
    size = 512 * 1024 + 123
    data = os.urandom(size + max(change, 0))
    path.write_bytes(data[: size + change])
    with path.open("rb") as fp:
        fp.read(132)  # where the reader has got to does not matter
        with read_whole(fp, size) as view:
            read = bytes(view)
    if change > 0:
        assert read == data[: size + 1]
    else:
        assert read == data[: size + change]


def cached(path: Path) -> bool:
    """Whether the first block of ``path`` is in the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(BLOCK)], 0, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no preadv2 RWF_NOWAIT here")
def test_read_ahead_brings_a_file_into_the_page_cache(tmp_path: Path) -> None:
    """As after an O_DIRECT write, or a start of the machine: the file is on the disk only
    (dropped from the page cache with POSIX_FADV_DONTNEED once flushed)."""
    path = tmp_path / "stored"
    with aligned([os.urandom(64 * BLOCK)]) as view:
        write_held(path, view, fsync=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    assert not cached(path)
    read_ahead([tmp_path / "gone", path])  # a file gone meanwhile is passed over
    deadline = time.monotonic() + 30
    while not cached(path):  # the kernel reads it in the background
        assert time.monotonic() < deadline, "never read into the page cache"
        time.sleep(0.01)
