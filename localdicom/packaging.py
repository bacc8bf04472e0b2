"""Stored instances packed for sharing: a zip streamed as it is written, or a folder, with
a DICOMDIR when asked. The one way the web download (``Accept: application/zip``) and
``localdicom export`` write what they hand out.

The zip is written by Python's own ``zipfile`` (no dependency to add; stream-zip, MIT, and
zipstream-ng, LGPL, do the same), entry by entry, as files are read: into a buffer the web
drains to the client after each chunk, so nothing is held whole, or into the export's file.
Entries are stored, not deflated: zlib at level 1 made uncompressed CT slices 36-51 %
smaller (pydicom's CT_small, a 512x512 slice of benchmarks.dataset) but ran at 28-44 MB/s
on one CPU of the (loaded) development machine, which would cap every download there, and
compressed pixel data gains nothing. ``zipfile`` writes ZIP64 records where sizes or
offsets need them (an archive over 4 GB, an entry over 4 GB); written to a stream it cannot
seek back in, each entry's CRC and sizes follow its data in a data descriptor (APPNOTE
4.3.9), which Info-ZIP's unzip and zipfile read (Java's streaming ZipInputStream does not,
for stored entries).

Names in the archive: ``STUDY/SERIES/SOP.dcm`` by UID, the archive's own layout (unique, and
``localdicom import`` takes it back as it is); with a DICOMDIR the layout of PS3.11's
General Purpose profiles instead, see :mod:`localdicom.dicom.dicomdir`. PS3.18 8.6.1.3
defines the ``application/zip`` payload of DICOMweb (Supplement 211).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from localdicom.dicom.dicomdir import DicomDir, NotRecorded, file_id

CHUNK = 1 << 20
#: Conversions run ahead of the one being written: at most this many, of instances of at
#: most this many bytes in all (each answer is held whole until written), but always one.
LOOKAHEAD = 4
LOOKAHEAD_BYTES = 256 * 1024 * 1024
AS_STORED = "*"

#: Converts a member to a transfer syntax: its Part 10 bytes.
Convert = Callable[["Member", str], Awaitable[bytes]]


@dataclass(frozen=True)
class Member:
    """A stored instance to hand out: its file and what the archive knows of it.
    ``metadata`` reads its DICOM JSON (from the sidecar: blocking), for the DICOMDIR."""

    path: Path
    size: int
    study: str
    series: str
    sop: str
    syntax: str
    metadata: Callable[[], dict[str, Any]]


class Progress(Protocol):
    def advance(self, files: int, size: int) -> None: ...


@dataclass
class PackageReport:
    """What was written: instances, bytes, those converted, and those left out (why)."""

    written: int = 0
    size: int = 0
    converted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Sink(Protocol):
    """Where a package goes: each member whole, by name, then the end."""

    async def add_file(self, name: str, fp: BinaryIO) -> int: ...

    async def add_bytes(self, name: str, data: bytes) -> None: ...

    async def finish(self) -> None: ...

    def discard(self) -> None: ...


def member_names(members: list[Member], dicomdir: bool) -> list[tuple[str, ...]]:
    """Each member's path in the package: by UID, or its File ID with a DICOMDIR (studies,
    series and instances numbered in the order they come)."""
    if not dicomdir:
        return [(m.study, m.series, f"{m.sop}.dcm") for m in members]
    studies: dict[str, dict[str, int]] = {}
    names = []
    for member in members:
        series = studies.setdefault(member.study, {})
        series[member.series] = series.get(member.series, 0) + 1
        study_place = list(studies).index(member.study) + 1
        series_place = list(series).index(member.series) + 1
        names.append(file_id(study_place, series_place, series[member.series]))
    return names


async def package(
    members: list[Member],
    sink: Sink,
    convert: Convert,
    *,
    syntax: str = AS_STORED,
    dicomdir: bool = False,
    keep_going: bool = False,
    progress: Progress | None = None,
    rewrite: bool = False,
) -> PackageReport:
    """Write ``members`` to ``sink``, as stored or converted to ``syntax`` (by ``convert``,
    a few ahead of the one being written), then the DICOMDIR if asked.

    A member that cannot be read or converted raises what failed, or with ``keep_going``
    is left out and listed; one the DICOMDIR cannot record (PS3.3 F.5) is written all the
    same, with a note. Cancelled (a client gone, Ctrl-C), the conversions still running
    are cancelled too. With ``rewrite`` every member goes through ``convert``, even to the
    syntax it is stored in (de-identification makes a new file of each).
    """
    started = time.perf_counter()
    report = PackageReport()
    directory = DicomDir() if dicomdir else None
    names = member_names(members, dicomdir)
    ahead: dict[int, asyncio.Task[bytes]] = {}
    try:
        for place, (member, name) in enumerate(zip(members, names, strict=True)):
            _look_ahead(members, place, syntax, convert, ahead, rewrite)
            try:
                conversion = ahead.pop(place, None)
                size = await _write(member, name, sink, conversion, directory, report, syntax)
            except _MemberFailed as exc:
                if not keep_going:
                    raise exc.__cause__ or exc from None
                report.failed.append((member.sop, str(exc)))
                continue
            if progress is not None:
                progress.advance(1, size)
        if directory is not None:
            await sink.add_bytes("DICOMDIR", await asyncio.to_thread(directory.encode))
        await sink.finish()
    except BaseException:
        sink.discard()
        raise
    finally:
        for task in ahead.values():
            task.cancel()
        for task in ahead.values():
            with contextlib.suppress(BaseException):
                await task
    report.seconds = time.perf_counter() - started
    return report


class _MemberFailed(Exception):
    """A member cannot be read, or converted to the transfer syntax asked."""


def _target(member: Member, syntax: str) -> str:
    return member.syntax if syntax == AS_STORED else syntax


def _look_ahead(
    members: list[Member],
    place: int,
    syntax: str,
    convert: Convert,
    ahead: dict[int, asyncio.Task[bytes]],
    rewrite: bool,
) -> None:
    budget = LOOKAHEAD_BYTES
    for later in range(place, min(place + LOOKAHEAD + 1, len(members))):
        member = members[later]
        target = _target(member, syntax)
        if target == member.syntax and not rewrite:
            continue
        budget -= member.size
        if later > place and budget < 0:
            return
        if later not in ahead:
            ahead[later] = asyncio.ensure_future(convert(member, target))


async def _write(
    member: Member,
    name: tuple[str, ...],
    sink: Sink,
    conversion: asyncio.Task[bytes] | None,
    directory: DicomDir | None,
    report: PackageReport,
    syntax: str,
) -> int:
    """One member into the sink, and into the DICOMDIR."""
    data = None
    if conversion is not None:
        try:
            data = await conversion
        except Exception as exc:
            into = "" if syntax == AS_STORED else f" to {syntax}"
            raise _MemberFailed(f"cannot be converted{into}: {exc}") from exc
    path = "/".join(name)
    if data is None:
        try:
            fp = await asyncio.to_thread(member.path.open, "rb")
        except OSError as exc:
            raise _MemberFailed(f"cannot be read: {exc}") from exc
        try:
            size = await sink.add_file(path, fp)
        finally:
            fp.close()
    else:
        await sink.add_bytes(path, data)
        size = len(data)
        report.converted += 1
    report.written += 1
    report.size += size
    if directory is not None:  # only what was written is listed
        try:
            metadata = await asyncio.to_thread(member.metadata)
            directory.add(name, metadata, _target(member, syntax))
        except (NotRecorded, OSError, ValueError) as exc:
            report.notes.append(f"{member.sop} is not in the DICOMDIR: {exc}")
    return size


# zip ---------------------------------------------------------------------------------------


class _Buffer:
    """What zipfile writes, kept until taken; it can tell its position but not seek, so
    zipfile writes each entry's sizes after its data (a data descriptor)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._position = 0

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return data


class ZipSink:
    """A zip written to ``file`` (seekable: each header completed in place), or streamed to
    ``send`` chunk by chunk as it is made."""

    def __init__(
        self,
        *,
        send: Callable[[bytes], Awaitable[None]] | None = None,
        file: BinaryIO | None = None,
    ) -> None:
        self._buffer = _Buffer() if file is None else None
        self._send = send
        self._zip = zipfile.ZipFile(file or self._buffer, "w", zipfile.ZIP_STORED)  # type: ignore[arg-type]

    async def add_file(self, name: str, fp: BinaryIO) -> int:
        size = os.fstat(fp.fileno()).st_size
        entry = self._zip.open(_info(name, size), "w")
        while await asyncio.to_thread(_copy_chunk, fp, entry):
            await self._drain()
        entry.close()
        await self._drain()
        return size

    async def add_bytes(self, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._write_whole, name, data)
        await self._drain()

    def _write_whole(self, name: str, data: bytes) -> None:
        with self._zip.open(_info(name, len(data)), "w") as entry:
            for start in range(0, len(data), CHUNK):
                entry.write(data[start : start + CHUNK])

    async def finish(self) -> None:
        self._zip.close()  # the central directory
        await self._drain()

    def discard(self) -> None:
        """Leave the zip unfinished: a central directory written now would describe what
        was not written (and zipfile would try, when collected)."""
        self._zip.fp = None

    async def _drain(self) -> None:
        if self._buffer is not None and self._send is not None:
            data = self._buffer.take()
            if data:
                await self._send(data)


def _info(name: str, size: int) -> zipfile.ZipInfo:
    """An entry's header: stored, its size known ahead (zipfile then writes ZIP64 fields
    where the size needs them), dated now."""
    info = zipfile.ZipInfo(name, time.localtime()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    info.external_attr = 0o644 << 16
    return info


def _copy_chunk(fp: BinaryIO, entry: BinaryIO) -> bool:
    """One chunk of ``fp`` into the entry (zipfile computes its CRC here, in a thread)."""
    chunk = fp.read(CHUNK)
    if chunk:
        entry.write(chunk)
    return bool(chunk)


# folder ------------------------------------------------------------------------------------


class FolderSink:
    """Files below ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def add_file(self, name: str, fp: BinaryIO) -> int:
        return await asyncio.to_thread(self._copy, self._target(name), fp)

    @staticmethod
    def _copy(target: Path, fp: BinaryIO) -> int:
        with target.open("wb") as out:
            shutil.copyfileobj(fp, out, CHUNK)
            return out.tell()

    async def add_bytes(self, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._target(name).write_bytes, data)

    async def finish(self) -> None:
        pass

    def discard(self) -> None:
        pass  # the export removes the folder it wrote into

    def _target(self, name: str) -> Path:
        target = self.root.joinpath(*name.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        return target
