"""Bring existing DICOM data into an archive: ``localdicom import``, ``reindex`` and ``ls``.

Data arrives as folder trees (files named IM0001, 1.dcm or anything), zip files and DICOMDIR
media. Import finds DICOM by content (a Part 10 file has 'DICM' at byte 128), never by name,
and stores each instance exactly as STOW-RS would: same layout, same sidecar, same digest,
same duplicate policy.

How the work is split, and why:

- The parent walks the sources (cheap: directory listings) and hands batches of files to a
  pool of worker processes, one per core.
- A worker does the expensive part: it parses the header with :func:`describe`, hashes the
  bytes and, when the file must be copied, copies it into ``ARCHIVE/.incoming`` while hashing
  (one read of the source). Zip members are extracted there the same way.
- Only the parent decides and commits: the duplicate policy needs to know every SOP Instance
  UID already stored, including those stored a moment ago by another worker, so one committer
  (rename into place, write the sidecar) keeps that decision race-free without locks.
- When a server announced itself in ``ARCHIVE/.localdicom-server``, the parent sends each instance
  to it by STOW-RS instead (a few threads), so the running server's index sees it at once and
  the server stays the only writer of the archive.

Every write is atomic (a copy is renamed into place), so an interrupted import leaves whole
instances and leftovers in ``.incoming`` that the next import or server start removes; a
re-run finds what is already there (identical bytes) and stores only what is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import posixpath
import shutil
import signal
import tempfile
import threading
import time
import urllib.parse
import uuid
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pydicom
from pydicom.errors import InvalidDicomError

from localdicom.archive import SERVER_FILE, Archive, file_digest
from localdicom.dicom.header import Header, NotDicom, describe
from localdicom.dicom.uids import is_valid_uid

#: Bytes read to classify a file: the 128-byte preamble and the 'DICM' prefix.
HEAD = 132
CHUNK = 1 << 20
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
LOCK_FILE = ".import.lock"
#: Files per task sent to a worker: fewer round trips without starving the progress bar.
BATCH_FILES = 8
BATCH_BYTES = 32 << 20
#: Conflicts and errors listed without --verbose.
SHOWN_FAILURES = 20


class Transfer(StrEnum):
    """How an instance's bytes get into the archive."""

    COPY = "copy"
    MOVE = "move"
    LINK = "link"


class Kind(StrEnum):
    """What a worker found a source to be."""

    INSTANCE = "instance"
    NOT_DICOM = "not DICOM"
    ERROR = "error"
    ZIP = "zip"
    DICOMDIR = "DICOMDIR"


class CannotImport(Exception):
    """The import cannot start; the message says why and what to do."""


class ArchiveBusy(CannotImport):
    """Another import or reindex holds the archive."""


class Progress(Protocol):
    """What the importer reports while it works (the CLI draws a bar from it)."""

    def add_total(self, files: int) -> None: ...

    def advance(self, files: int, size: int) -> None: ...


class NoProgress:
    def add_total(self, files: int) -> None:
        pass

    def advance(self, files: int, size: int) -> None:
        pass


# sources ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One thing to examine: a file, or a member of a zip file (``member`` set)."""

    path: Path
    member: str | None = None
    #: Named on the command line (a zip-format file is opened even without a .zip name).
    explicit: bool = False

    def __str__(self) -> str:
        return str(self.path) if self.member is None else f"{self.path}:{self.member}"

    @property
    def key(self) -> str:
        """Identity used to match DICOMDIR references: case-insensitive, because CD file
        names are upper case in the DICOMDIR and often lower case once mounted."""
        base = os.path.abspath(self.path).casefold()
        return base if self.member is None else f"{base}/{self.member.casefold()}"


@dataclass
class Collected:
    """The sources found under the paths given, and what was settled without reading."""

    sources: list[Source] = field(default_factory=list)
    not_dicom: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def collect(paths: Iterable[Path], archive_root: Path) -> Collected:
    """Every file under ``paths`` (folders recursively), skipping the archive's own files so
    that a source folder holding the archive (``import ARCHIVE --archive ARCHIVE``) works."""
    collected = Collected()
    root = archive_root.resolve()
    root_id = _dir_id(root)
    own = 0
    for path in paths:
        where = _below(path.resolve(), root)
        if path.is_dir():
            own += _collect_folder(path, where, root_id, collected)
        elif where is not None and _archive_owns(where[:-1], path.name):
            own += 1
        else:
            collected.sources.append(Source(path, explicit=True))
    if own:
        collected.notes.append(f"{own} files already in the archive's layout were left alone")
    return collected


def _collect_folder(
    top: Path, where: tuple[str, ...] | None, root_id: tuple[int, int] | None, out: Collected
) -> int:
    """Walk ``top`` depth-first in name order; returns how many archive files it skipped."""
    own = 0
    stack: list[tuple[Path, tuple[str, ...] | None]] = [(top, where)]
    while stack:
        folder, inside = stack.pop()
        try:
            with os.scandir(folder) as iterator:
                entries = sorted(iterator, key=lambda entry: entry.name)
        except OSError as exc:
            out.errors.append((str(folder), f"the folder cannot be read: {exc.strerror}"))
            continue
        folders = []
        for entry in entries:
            if inside is not None and _archive_owns(inside, entry.name):
                own += 1
            elif entry.is_dir(follow_symlinks=False):
                below = (*inside, entry.name) if inside is not None else None
                if below is None and root_id is not None and _is_dir(entry, root_id):
                    below = ()
                folders.append((Path(entry.path), below))
            else:
                _collect_entry(entry, out)
        stack.extend(reversed(folders))
    return own


def _collect_entry(entry: os.DirEntry, out: Collected) -> None:
    if entry.is_file():
        out.sources.append(Source(Path(entry.path)))
    elif entry.is_symlink() and not os.path.exists(entry.path):
        out.errors.append((entry.path, "a broken symbolic link"))
    elif entry.is_symlink():
        out.not_dicom.append(
            (entry.path, "a link to a folder, not followed (name it on the command line)")
        )
    else:
        out.not_dicom.append((entry.path, "not a regular file"))


def _dir_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _is_dir(entry: os.DirEntry, identity: tuple[int, int]) -> bool:
    """Whether ``entry`` is the folder ``identity`` names (the inode check costs nothing)."""
    return entry.inode() == identity[1] and entry.stat(follow_symlinks=False).st_dev == identity[0]


def _below(path: Path, root: Path) -> tuple[str, ...] | None:
    return path.relative_to(root).parts if path.is_relative_to(root) else None


def _archive_owns(inside: tuple[str, ...], name: str) -> bool:
    """Whether ``name`` in the archive folder ``inside`` is the archive's own: the dot files
    at its root (.incoming, .cache, .localdicom-server, .index-snapshot...) and instances and
    sidecars in the layout."""
    if not inside:
        return name.startswith(".")
    if len(inside) != 2 or not all(is_valid_uid(part) for part in inside):
        return False
    if name.startswith(".") and name.endswith(".tmp"):
        return True
    stem, suffix = os.path.splitext(name)
    return suffix in (".dcm", ".json") and is_valid_uid(stem)


# the workers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What every worker needs to know about this import (sent along with each batch)."""

    archive: Path
    #: Where copies wait to be committed: ARCHIVE/.incoming, or a temporary folder when a
    #: server stores them.
    staging: Path
    transfer: Transfer
    stow: bool
    #: st_dev of the archive: a move or hard link is only possible on the same file system.
    device: int


@dataclass
class Examined:
    """A source as a worker found it; for an instance, ready to be committed."""

    source: Source
    kind: Kind
    reason: str = ""
    size: int = 0
    header: Header | None = None
    digest: str = ""
    #: A copy in the staging folder that the committer renames into place or deletes.
    staged: Path | None = None
    #: The source itself is to be renamed or linked into place (same file system).
    in_place: bool = False
    #: --move or --link had to copy because the source is on another file system.
    copied_across: bool = False
    members: list[Source] = field(default_factory=list)
    references: list[tuple[str, ...]] = field(default_factory=list)


def _worker_init() -> None:
    """Workers leave Ctrl-C to the parent, which stops handing out work and cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def examine_batch(sources: list[Source], plan: Plan) -> list[Examined]:
    return [examine(source, plan) for source in sources]


def examine(source: Source, plan: Plan) -> Examined:
    """Classify one source; for an instance, describe it, hash it and stage a copy."""
    try:
        if source.member is None:
            return _examine_file(source, plan)
        return _examine_member(source, plan)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, EOFError) as exc:
        return Examined(source, Kind.ERROR, f"cannot be read: {_why(exc)}")
    except zlib.error as exc:
        return Examined(source, Kind.ERROR, f"cannot be decompressed: {exc}")


def _why(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _examine_file(source: Source, plan: Plan) -> Examined:
    with source.path.open("rb") as fp:
        stat = os.fstat(fp.fileno())
        head = fp.read(HEAD)
        if not _is_part10(head):
            return _not_part10(source, fp, head, stat.st_size)
        found = _classify(source, fp, stat.st_size)
        if isinstance(found, Examined):
            return found
        same_device = stat.st_dev == plan.device
        if plan.stow or (plan.transfer is not Transfer.COPY and same_device):
            return _instance(source, found, file_digest(fp), stat.st_size, in_place=True)
        if _target(plan, found).exists():  # most likely already stored: hash, copy nothing
            return _instance(source, found, file_digest(fp), stat.st_size)
        fp.seek(0)
        staged = _staging_file(plan)
        digest, copied = _copy(b"", fp, staged)
    if copied != stat.st_size:
        staged.unlink(missing_ok=True)
        return Examined(source, Kind.ERROR, "the file changed while it was being imported")
    result = _instance(source, found, digest, copied, staged=staged)
    result.copied_across = plan.transfer is not Transfer.COPY
    return result


def _examine_member(source: Source, plan: Plan) -> Examined:
    assert source.member is not None
    archive = _open_zip(str(source.path))
    with archive.open(source.member) as stream:
        head = stream.read(HEAD)
        if not _is_part10(head):
            return Examined(source, Kind.NOT_DICOM, _not_dicom_reason(head, in_zip=True))
        staged = _staging_file(plan)
        digest, size = _copy(head, stream, staged)
    try:
        with staged.open("rb") as fp:
            found = _classify(source, fp, size)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    if isinstance(found, Examined):
        staged.unlink(missing_ok=True)
        return found
    return _instance(source, found, digest, size, staged=staged)


@lru_cache(maxsize=8)
def _open_zip(path: str) -> zipfile.ZipFile:
    """Zip files stay open in a worker: reading the central directory once per member would
    cost as much as the members themselves in a zip of thousands of small files."""
    return zipfile.ZipFile(path)


def _instance(source: Source, header: Header, digest: str, size: int, **extra: Any) -> Examined:
    return Examined(source, Kind.INSTANCE, size=size, header=header, digest=digest, **extra)


def _is_part10(head: bytes) -> bool:
    return head[128:132] == b"DICM"


def _not_part10(source: Source, fp: BinaryIO, head: bytes, size: int) -> Examined:
    if head[:2] == b"PK" and zipfile.is_zipfile(fp):
        if source.explicit or source.path.suffix.lower() == ".zip":
            return _zip(source, fp)
        reason = "a zip-format file not named .zip (an Office document?); name it to import it"
        return Examined(source, Kind.NOT_DICOM, reason, size=size)
    return Examined(source, Kind.NOT_DICOM, _not_dicom_reason(head, in_zip=False), size=size)


def _not_dicom_reason(head: bytes, *, in_zip: bool) -> str:
    if not head:
        return "an empty file"
    if in_zip and head[:2] == b"PK":
        return "a zip inside a zip is not opened; extract it first"
    return "not a DICOM Part 10 file (no 'DICM' at byte 128)"


def _zip(source: Source, fp: BinaryIO) -> Examined:
    fp.seek(0)
    with zipfile.ZipFile(fp) as archive:
        members = [
            Source(source.path, member=info.filename)
            for info in archive.infolist()
            if not info.is_dir()
        ]
    return Examined(source, Kind.ZIP, members=members)  # bytes count through its members


def _classify(source: Source, fp: BinaryIO, size: int) -> Header | Examined:
    """The header of a Part 10 file, or why it is not an instance that can be stored."""
    try:
        return describe(fp)
    except NotDicom as exc:
        references = _dicomdir_references(fp)
        if references is not None:
            return Examined(source, Kind.DICOMDIR, size=size, references=references)
        return Examined(source, Kind.ERROR, f"a DICOM file that cannot be stored: {exc}", size)


def _dicomdir_references(fp: BinaryIO) -> list[tuple[str, ...]] | None:
    """The files a DICOMDIR lists (ReferencedFileID components), or None if it is none."""
    try:
        fp.seek(0)
        ds = pydicom.dcmread(fp)
        if ds.file_meta.get("MediaStorageSOPClassUID") != MEDIA_STORAGE_DIRECTORY:
            return None
        records = list(ds.get("DirectoryRecordSequence", []))
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    references = []
    for record in records:
        file_id = record.get("ReferencedFileID")
        if file_id:
            parts = [file_id] if isinstance(file_id, str) else list(file_id)
            references.append(tuple(str(part).strip() for part in parts))
    return references


def _target(plan: Plan, header: Header) -> Path:
    return Archive(plan.archive).instance_file(header.study_uid, header.series_uid, header.sop_uid)


def _staging_file(plan: Plan) -> Path:
    return plan.staging / f"{uuid.uuid4().hex}.part"


def _copy(first: bytes, source: BinaryIO, target: Path) -> tuple[str, int]:
    """Copy ``first`` then the rest of ``source`` to ``target``, hashing on the way: the
    source is read once. Returns the SHA-256 (as :func:`file_digest`) and the size."""
    digest = hashlib.sha256(first)
    size = len(first)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        with target.open("wb") as out:
            out.write(first)
            while count := source.readinto(buffer):  # type: ignore[attr-defined]
                digest.update(view[:count])
                out.write(view[:count])
                size += count
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return digest.hexdigest(), size


# the report -------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did, in the numbers the summary prints.

    Every file examined is counted exactly once: ``files`` = stored + duplicates +
    conflicts + not DICOM + errors + DICOMDIRs + zips.
    """

    archive: Path
    server: str | None = None
    stored: int = 0
    duplicates: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    not_dicom: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    dicomdirs: int = 0
    zips: int = 0
    size: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return (
            self.stored
            + self.duplicates
            + len(self.conflicts)
            + len(self.not_dicom)
            + len(self.errors)
            + self.dicomdirs
            + self.zips
        )

    @property
    def exit_code(self) -> int:
        """0 all went well, 1 conflicts or errors, 130 interrupted (as a shell reports ^C)."""
        if self.interrupted:
            return 130
        return 1 if self.conflicts or self.errors else 0

    def lines(self, *, verbose: bool = False) -> list[str]:
        """The summary a person reads at the end of the import."""
        how = f"through the server at {self.server}" if self.server else "directly"
        seconds = max(self.seconds, 1e-9)
        lines = [
            f"{'Interrupted' if self.interrupted else 'Imported'} into {self.archive} {how} "
            f"in {self.seconds:.2f} s: {self.files} files, {self.size / 1e6:.1f} MB, "
            f"{self.files / seconds:.0f} files/s, {self.size / 1e6 / seconds:.1f} MB/s"
        ]
        rows = [
            ("stored", self.stored),
            ("already present", self.duplicates),
            ("conflicts", len(self.conflicts)),
            ("not DICOM", len(self.not_dicom)),
            ("errors", len(self.errors)),
            ("DICOMDIR read", self.dicomdirs),
            ("zip files opened", self.zips),
        ]
        width = max(len(str(count)) for _, count in rows)
        lines += [f"  {name:<17}{count:>{width}}" for name, count in rows]
        lines += _listed("conflict", self.conflicts, verbose)
        lines += _listed("error", self.errors, verbose)
        if verbose:
            lines += [f"not DICOM: {path}: {reason}" for path, reason in self.not_dicom]
        elif self.not_dicom:
            lines.append(f"{len(self.not_dicom)} files are not DICOM; --verbose lists them.")
        lines += self.notes
        if self.interrupted:
            lines.append("Run the same command again to import the rest.")
        return lines


def _listed(what: str, items: list[tuple[str, str]], verbose: bool) -> list[str]:
    shown = items if verbose else items[:SHOWN_FAILURES]
    lines = [f"{what}: {path}: {reason}" for path, reason in shown]
    if len(items) > len(shown):
        lines.append(f"... and {len(items) - len(shown)} more {what}s; --verbose lists them all.")
    return lines


# the parent: feeding workers and committing -----------------------------------------------


@dataclass(frozen=True)
class ImportOptions:
    transfer: Transfer = Transfer.COPY
    overwrite: bool = False
    workers: int | None = None
    #: Flush each instance to disk as the server does; otherwise one sync at the end.
    fsync: bool = False


def run_import(
    paths: Iterable[Path],
    archive_root: Path,
    options: ImportOptions | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import ``paths`` into the archive at ``archive_root`` (created if absent).

    Raises :class:`ArchiveBusy` when another import writes to the archive directly. SIGINT
    (Ctrl-C) or SIGTERM stops it cleanly between two instances: the report says
    ``interrupted``.
    """
    options = options or ImportOptions()
    progress = progress or NoProgress()
    archive = Archive(archive_root, fsync=options.fsync)
    archive.prepare()
    started = time.perf_counter()
    server = archive.running_server()
    with contextlib.ExitStack() as stack:
        if server is None:
            stack.enter_context(archive_lock(archive_root))
            archive.clean_incoming()  # nothing else writes here: any file is a leftover
            sink: _Sink = _DirectSink(archive, options)
        else:
            _check_answers(archive, server)
            sink = stack.enter_context(_StowSink(server, options))
        report = ImportReport(archive_root, server=server)
        run = _Run(archive, sink, report, options, progress)
        run.execute(collect(paths, archive_root))
        if server is None and not options.fsync and report.stored:
            os.sync()  # one flush for the whole import instead of one per file
    report.seconds = time.perf_counter() - started
    if server is None and archive.running_server() is not None:
        report.notes.append(
            "A server started on this archive during the import: restart it, or run the "
            "import again, so that it sees every instance."
        )
    return report


def _check_answers(archive: Archive, url: str) -> None:
    """Refuse to start when the announced server does not answer, rather than count every
    file as an error (a hung server, or its pid reused after a crash)."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(_connect_host(parsed.hostname), parsed.port, timeout=10)
    try:
        connection.request("GET", "/studies?limit=1")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException) as exc:
        raise CannotImport(
            f"{archive.root / SERVER_FILE} names a server at {url} that does not answer "
            f"({_why(exc)}); stop it, or delete that file if no server runs"
        ) from None
    finally:
        connection.close()


def _connect_host(host: str | None) -> str | None:
    """Where to reach a server that listens on every address."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host or "", host)


class _Sink(Protocol):
    """Where instances go: straight into the archive, or to a running server by STOW-RS."""

    staging: Path
    stow: bool

    def store(self, item: Examined, report: ImportReport) -> Future | None: ...

    def settle(self, sent: Future, report: ImportReport) -> Examined: ...


class _Run:
    """One import: a queue of sources, a pool of workers, one committer (this thread)."""

    def __init__(
        self,
        archive: Archive,
        sink: _Sink,
        report: ImportReport,
        options: ImportOptions,
        progress: Progress,
    ) -> None:
        self.archive = archive
        self.sink = sink
        self.report = report
        self.options = options
        self.progress = progress
        self.workers = options.workers or os.cpu_count() or 1
        self.queue: deque[Source] = deque()
        self.known: set[str] = set()
        self.pending: dict[Future, Callable[[Future], None]] = {}
        #: The sources of each batch being examined, to name them if their worker dies.
        self.batches: dict[Future, list[Source]] = {}
        self.stopping = False
        self.plan = Plan(
            archive=archive.root.resolve(),
            staging=sink.staging,
            transfer=options.transfer,
            stow=sink.stow,
            device=archive.root.stat().st_dev,
        )

    def execute(self, collected: Collected) -> None:
        self.report.not_dicom += collected.not_dicom
        self.report.errors += collected.errors
        self.report.notes += collected.notes
        self._enqueue(collected.sources)
        self.progress.advance(len(collected.not_dicom) + len(collected.errors), 0)
        pool = ProcessPoolExecutor(self.workers, initializer=_worker_init)
        try:
            with _stopping_on_signals(self._request_stop):
                self._loop(pool)
                if self.stopping:
                    self._stop(pool)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _request_stop(self) -> None:
        """The first Ctrl-C stops between two instances; a second one stops at once."""
        if self.stopping:
            raise KeyboardInterrupt
        self.stopping = True

    def _enqueue(self, sources: list[Source]) -> None:
        fresh = [source for source in sources if source.key not in self.known]
        self.known.update(source.key for source in fresh)
        self.queue.extend(fresh)
        self.progress.add_total(len(fresh))

    def _loop(self, pool: ProcessPoolExecutor) -> None:
        while (self.queue or self.pending) and not self.stopping:
            while self.queue and len(self.batches) < 2 * self.workers:
                batch = self._batch()
                try:
                    future = pool.submit(examine_batch, batch, self.plan)
                except BrokenProcessPool as exc:
                    self._failed(batch + list(self.queue), exc)
                    self.queue.clear()
                    break
                self.pending[future] = self._examined
                self.batches[future] = batch
            if not self.pending:
                break
            done, _ = wait_futures(list(self.pending), return_when=FIRST_COMPLETED)
            for future in done:
                self.pending.pop(future)(future)

    def _batch(self) -> list[Source]:
        batch = [self.queue.popleft()]
        while self.queue and len(batch) < BATCH_FILES:
            batch.append(self.queue.popleft())
        return batch

    def _stop(self, pool: ProcessPoolExecutor) -> None:
        """Stop handing out work; what a worker examined is dropped (its staged copy too),
        what is on its way to the server is waited for and counted."""
        self.report.interrupted = True
        pool.shutdown(wait=True, cancel_futures=True)
        for future, handler in list(self.pending.items()):
            if future.cancelled():
                continue
            if future in self.batches:
                with contextlib.suppress(BrokenProcessPool):
                    for item in future.result():
                        _discard(item)
            else:
                wait_futures([future])
                handler(future)
        self.pending.clear()
        self.batches.clear()

    def _examined(self, future: Future) -> None:
        batch = self.batches.pop(future)
        try:
            items: list[Examined] = future.result()
        except BrokenProcessPool as exc:  # a worker died (killed for memory?): name its files
            self._failed(batch, exc)
            return
        for item in items:
            self._take(item)

    def _failed(self, sources: list[Source], exc: BaseException) -> None:
        reason = f"not examined: a worker process died ({exc})"
        self.report.errors += [(str(source), reason) for source in sources]
        self.progress.advance(len(sources), 0)

    def _take(self, item: Examined) -> None:
        report = self.report
        if item.kind is Kind.INSTANCE:
            stow = self.sink.store(item, report)
            if stow is not None:
                self.pending[stow] = self._sent
                return
        elif item.kind is Kind.ZIP:
            report.zips += 1
            self._enqueue(item.members)
        elif item.kind is Kind.DICOMDIR:
            report.dicomdirs += 1
            self._follow(item)
        elif item.kind is Kind.NOT_DICOM:
            report.not_dicom.append((str(item.source), item.reason))
        else:
            report.errors.append((str(item.source), item.reason))
        self._done(item)

    def _done(self, item: Examined) -> None:
        self.report.size += item.size
        self.progress.advance(1, item.size)

    def _sent(self, future: Future) -> None:
        self._done(self.sink.settle(future, self.report))

    def _follow(self, dicomdir: Examined) -> None:
        """Import what a DICOMDIR lists that the walk did not find (it was named alone on
        the command line); a listed file that is nowhere is an error."""
        source = dicomdir.source
        found = []
        for parts in dicomdir.references:
            reference = _referenced(source, parts)
            if reference.key in self.known:
                continue
            located = _locate(reference)
            if located is None:
                self.report.errors.append((str(reference), f"listed in {source} but not found"))
                self.progress.add_total(1)
                self.progress.advance(1, 0)
            else:
                found.append(located)
        self._enqueue(found)


def _referenced(dicomdir: Source, parts: tuple[str, ...]) -> Source:
    if dicomdir.member is None:
        return Source(dicomdir.path.parent.joinpath(*parts))
    folder = posixpath.dirname(dicomdir.member)
    return Source(dicomdir.path, member=posixpath.join(folder, *parts))


def _locate(reference: Source) -> Source | None:
    """The file a DICOMDIR reference names, matching names without regard to case."""
    if reference.member is not None:
        return None  # every member of the zip is already queued: this one is missing
    if reference.path.is_file():
        return reference
    folder = Path(reference.path.anchor or ".")
    for part in reference.path.parts[1 if reference.path.anchor else 0 :]:
        try:
            names = {name.casefold(): name for name in os.listdir(folder)}
        except OSError:
            return None
        if part.casefold() not in names:
            return None
        folder = folder / names[part.casefold()]
    return Source(folder) if folder.is_file() else None


def _discard(item: Examined) -> None:
    if item.staged is not None:
        item.staged.unlink(missing_ok=True)


@contextlib.contextmanager
def _stopping_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``stop`` instead of raising in the middle of a commit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(number, lambda *_: stop()) for number in numbers]
    try:
        yield
    finally:
        for number, handler in zip(numbers, previous, strict=True):
            signal.signal(number, handler)


@contextlib.contextmanager
def archive_lock(root: Path) -> Iterator[None]:
    """Exclusive use of the archive by one import or reindex at a time.

    A POSIX record lock (lockf), not flock: worker processes forked by the holder do not
    inherit it, so it goes away the moment the holder dies, even by SIGKILL. The server does
    not take it: while a server runs, import goes through it by STOW-RS.
    """
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ArchiveBusy(
                f"another import or reindex is writing to {root}; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


class _DirectSink:
    """Commits into the archive folder under the duplicate policy of :class:`Catalog`."""

    stow = False

    def __init__(self, archive: Archive, options: ImportOptions) -> None:
        self.archive = archive
        self.options = options
        self.staging = archive.incoming.resolve()
        #: SOP Instance UID -> its .dcm; what is stored now, kept up to date as we store.
        self.present = {path.stem: path for path in archive.instance_files()}
        self.digests: dict[str, str] = {}
        self.warned_across = False

    def store(self, item: Examined, report: ImportReport) -> None:
        assert item.header is not None
        outcome: str | None = "error"
        try:
            outcome = self._decide(item)
            if outcome is None:
                self._commit(item, report)
                report.stored += 1
            elif outcome == "duplicate":
                report.duplicates += 1
            else:
                report.conflicts.append((str(item.source), outcome))
        except (OSError, NotDicom) as exc:
            report.errors.append((str(item.source), f"cannot be stored: {_why(exc)}"))
        finally:
            _discard(item)
        if self.options.transfer is Transfer.MOVE and outcome in (None, "duplicate"):
            _remove_source(item, report)
        if item.copied_across:
            self._note_once(
                report,
                f"--{self.options.transfer.value}: some sources are on another file system "
                "than the archive; they were copied",
            )

    def settle(self, sent: Future, report: ImportReport) -> Examined:
        raise AssertionError("a direct import sends nothing")

    def _decide(self, item: Examined) -> str | None:
        """None to store, "duplicate", or the reason of a conflict."""
        header = item.header
        assert header is not None
        existing = self.present.get(header.sop_uid)
        if existing is None:
            return None
        digest = self._digest_of(existing)
        if digest is None:
            return None  # what is there is no instance (the server skips it): replace it
        if digest == item.digest:
            return "duplicate"
        if not self.options.overwrite:
            return (
                f"SOP Instance {header.sop_uid} is already stored with different content; "
                "delete it first, or import with --overwrite"
            )
        study, series = existing.parent.parent.name, existing.parent.name
        self.archive.remove_instance(study, series, header.sop_uid)
        return None

    def _digest_of(self, dcm: Path) -> str | None:
        """The digest of a stored instance, repairing a missing or stale sidecar on the way
        (an import interrupted between the rename and the sidecar write leaves one)."""
        if dcm.stem in self.digests:
            return self.digests[dcm.stem]
        stored = self.archive.current_sidecar(dcm)
        if stored is None:
            try:
                stored = self.archive.regenerate_sidecar(dcm)
            except (NotDicom, OSError):
                return None
        return stored.digest

    def _commit(self, item: Examined, report: ImportReport) -> None:
        header = item.header
        assert header is not None
        incoming = self._incoming(item, report)
        try:
            stored = self.archive.commit(incoming, header, item.digest)
        finally:
            if incoming != item.source.path:
                incoming.unlink(missing_ok=True)
        item.staged = None
        # (a replaced instance lost its cached thumbnails in remove_instance, in _decide)
        target = self.archive.instance_file(header.study_uid, header.series_uid, header.sop_uid)
        self.present[header.sop_uid] = target
        self.digests[header.sop_uid] = stored.digest

    def _incoming(self, item: Examined, report: ImportReport) -> Path:
        """The file to rename into place: the staged copy, the source itself (--move), or
        a fresh hard link (--link) or copy in .incoming."""
        if item.staged is not None:
            return item.staged
        if item.in_place and self.options.transfer is Transfer.MOVE:
            return item.source.path
        incoming = self.archive.new_incoming_file()
        if item.in_place and self.options.transfer is Transfer.LINK:
            try:
                os.link(item.source.path, incoming)
                return incoming
            except OSError as exc:
                self._note_once(report, f"--link: hard links failed ({_why(exc)}); copied")
        shutil.copyfile(item.source.path, incoming)
        return incoming

    def _note_once(self, report: ImportReport, note: str) -> None:
        if not self.warned_across:
            self.warned_across = True
            report.notes.append(note)


def _remove_source(item: Examined, report: ImportReport) -> None:
    """--move: the source goes once the archive holds its bytes; zip members stay."""
    if item.source.member is not None or not item.source.path.exists():
        return
    try:
        item.source.path.unlink()
    except OSError as exc:
        report.notes.append(f"--move: {item.source} could not be removed: {_why(exc)}")


class _StowSink:
    """Sends instances to the running server by STOW-RS, a few at a time.

    The server's response does not tell a new instance from one it already had, so a QIDO
    for the SOP Instance UID comes first; two files of this import with one SOP Instance UID
    are settled here, before the server sees the second.
    """

    stow = True

    def __init__(self, url: str, options: ImportOptions) -> None:
        self.url = url
        self.options = options
        self.threads = ThreadPoolExecutor(max(4, options.workers or os.cpu_count() or 1))
        self.local = threading.local()
        self.seen: dict[str, str] = {}
        self.staging = Path(tempfile.mkdtemp(prefix="localdicom-import-"))
        self.report: ImportReport | None = None

    def __enter__(self) -> _StowSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.staging, ignore_errors=True)

    def store(self, item: Examined, report: ImportReport) -> Future | None:
        header = item.header
        assert header is not None
        self._warn_options(report)
        earlier = self.seen.get(header.sop_uid)
        if earlier is not None:
            _discard(item)
            if earlier == item.digest:
                report.duplicates += 1
                self._moved(item, report)
            else:
                report.conflicts.append(
                    (
                        str(item.source),
                        f"another file of this import has SOP Instance "
                        f"{header.sop_uid} with different content",
                    )
                )
            return None
        self.seen[header.sop_uid] = item.digest
        return self.threads.submit(self._send_or_fail, item)

    def _warn_options(self, report: ImportReport) -> None:
        if self.report is report:
            return
        self.report = report
        if self.options.overwrite:
            report.notes.append(
                "--overwrite has no effect while a server runs: its own --overwrite applies"
            )
        if self.options.transfer is Transfer.LINK:
            report.notes.append("--link has no effect while a server runs: instances are sent")

    def _send_or_fail(self, item: Examined) -> tuple[Examined, str, str]:
        """Runs in a sending thread; the counting is left to :meth:`settle`."""
        try:
            outcome, reason = self._send(item)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            outcome, reason = "error", f"the server at {self.url} did not take it: {_why(exc)}"
        finally:
            _discard(item)
        return item, outcome, reason

    def settle(self, sent: Future, report: ImportReport) -> Examined:
        """Count what the server said (in the committer thread, like every other count)."""
        item, outcome, reason = sent.result()
        if outcome == "stored":
            report.stored += 1
        elif outcome == "duplicate":
            report.duplicates += 1
        elif outcome == "conflict":
            report.conflicts.append((str(item.source), reason))
        else:
            report.errors.append((str(item.source), reason))
        if outcome in ("stored", "duplicate"):
            self._moved(item, report)
        return item

    def _moved(self, item: Examined, report: ImportReport) -> None:
        if self.options.transfer is Transfer.MOVE:
            _remove_source(item, report)

    def _send(self, item: Examined) -> tuple[str, str]:
        header = item.header
        assert header is not None
        query = urllib.parse.urlencode({"SOPInstanceUID": header.sop_uid})
        status, _, body = self._request("GET", f"/instances?{query}", None)
        present = status == 200 and bool(json.loads(body or b"[]"))
        path = item.staged or item.source.path
        with path.open("rb") as fp:
            status, warning, body = self._request("POST", "/studies", fp, item.size)
        return _stow_outcome(status, warning, body, present)

    def _request(
        self, method: str, path: str, body: BinaryIO | None, size: int = 0
    ) -> tuple[int, str, bytes]:
        headers = {"Accept": "application/dicom+json"}
        if body is not None:
            headers |= {"Content-Type": "application/dicom", "Content-Length": str(size)}
        try:
            return self._exchange(self._connection(fresh=False), method, path, body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # a kept-alive connection the server had closed: once more on a new one
            if body is not None:
                body.seek(0)
            return self._exchange(self._connection(fresh=True), method, path, body, headers)

    @staticmethod
    def _exchange(
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: BinaryIO | None,
        headers: dict[str, str],
    ) -> tuple[int, str, bytes]:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Warning", ""), response.read()

    def _connection(self, *, fresh: bool) -> http.client.HTTPConnection:
        connection = getattr(self.local, "connection", None)
        if connection is None or fresh:
            if connection is not None:
                connection.close()
            parsed = urllib.parse.urlsplit(self.url)
            host = _connect_host(parsed.hostname)
            connection = http.client.HTTPConnection(host, parsed.port, timeout=600)
            self.local.connection = connection
        return connection


def _stow_outcome(status: int, warning: str, body: bytes, present: bool) -> tuple[str, str]:
    """Read a single-instance STOW-RS response (README, "STOW-RS")."""
    if status == 200:
        return ("duplicate" if present else "stored"), ""
    reasons = []
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        failed = json.loads(body)["00081198"]["Value"]
        reasons = [item["00081197"]["Value"][0] for item in failed]
    text = warning.partition('"')[2].rstrip('"') or body[:200].decode("utf-8", "replace")
    if 0x0111 in reasons:
        return "conflict", text
    return "error", f"the server answered {status}: {text}"


# serve: DICOM files outside the layout --------------------------------------------------


@dataclass
class Found:
    """Files in an archive folder that are not in its layout."""

    dicom: int = 0
    zips: int = 0
    other: int = 0
    example: str | None = None


def survey(root: Path) -> Found:
    """What lies in ``root`` outside the archive layout: DICOM files (by content), zip files,
    anything else. The server does not see these; ``serve`` says so, or imports them."""
    found = Found()
    for source in collect([root], root).sources:
        try:
            with source.path.open("rb") as fp:
                head = fp.read(HEAD)
                zipped = source.path.suffix.lower() == ".zip" and zipfile.is_zipfile(fp)
        except OSError:
            found.other += 1
            continue
        if _is_part10(head):
            found.dicom += 1
            found.example = found.example or str(source.path)
        elif zipped:
            found.zips += 1
            found.example = found.example or str(source.path)
        else:
            found.other += 1
    return found
