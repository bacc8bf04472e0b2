"""The archive folder: the only code that reads or writes it.

Layout (see README, "How it works")::

    ARCHIVE/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm    bytes as received
    ARCHIVE/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.json   sidecar
    ARCHIVE/.incoming/                                                    uploads in progress

Every path is built from UIDs that :func:`check_uid` accepted, so nothing a client sends can
name a file outside the folder. Writes go to a temporary file in the same file system and are
renamed into place, so a crash leaves the old state or the new one, never half an instance.
Everything here is blocking: callers run it in a worker thread.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import mmap
import os
import shutil
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from localdicom.dicom.header import ByteRange, Header, NotDicom, describe, describe_opened
from localdicom.dicom.uids import check_uid

logger = logging.getLogger(__name__)

#: Bump when the sidecar content changes: older sidecars are then regenerated at startup.
SIDECAR_FORMAT = 1
INCOMING = ".incoming"
THUMBNAILS = ".cache/thumbnails"
#: The index as saved at the last start or stop, to start without reading every sidecar.
SNAPSHOT = ".index-snapshot"
SERVER_FILE = ".localdicom-server"
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredInstance:
    """An instance on disk, as its sidecar describes it."""

    header: Header
    size: int
    digest: str


@dataclass
class ScanReport:
    """What the startup scan found besides intact instances."""

    regenerated: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    removed_leftovers: int = 0
    #: Instances taken from the index snapshot rather than read from their sidecars.
    from_snapshot: int = 0


def file_digest(fp: BinaryIO) -> str:
    """SHA-256 of a whole file: decides whether a re-sent instance is the very same one."""
    fp.seek(0)
    return hashlib.file_digest(fp, "sha256").hexdigest()


@dataclass(frozen=True)
class Upload:
    """An upload in the upload area, parsed and hashed, with its sidecar written beside it."""

    path: Path
    header: Header
    digest: str

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(".json")


def prepare_upload(path: Path, fsync: bool) -> Upload:
    """Parse and hash an upload and write its sidecar next to it; if ``fsync``, flush the
    upload to disk meanwhile, in a thread (a flush waits on the disk, parsing on the CPU).
    This runs beside the other uploads (in a worker process, or in a thread of the server
    for an upload alone), so that the commit (one batch at a time) is only renames and a
    flush of their folders.

    The sidecar is not flushed: it is derived from the .dcm, and a start that finds it lost,
    cut short or stale after a power cut (its size and modification time no longer those of
    the .dcm) writes it again."""
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
    upload = Upload(path, header, digest)
    _write_new(upload.sidecar, _sidecar_document(header, digest, stat), fsync=False)
    return upload


@functools.cache
def _flusher() -> futures.ThreadPoolExecutor:
    """The thread that flushes uploads, one per process that prepares them, made on first
    use (after the worker processes were forked)."""
    return futures.ThreadPoolExecutor(1, thread_name_prefix="flush")


class Archive:
    """A folder of instances in the study/series/instance layout."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self.incoming = root / INCOMING
        self.thumbnails = root / THUMBNAILS
        #: Upload names: a random prefix drawn once, then a counter (no syscall per upload).
        self._session = uuid.uuid4().hex[:16]
        self._uploads_named = itertools.count()

    def prepare(self) -> None:
        """Create the archive folder and its upload area if they do not exist yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(exist_ok=True)

    # the running server ----------------------------------------------------------------------

    def announce_server(self, url: str) -> None:
        """Record that a server answers for this archive at ``url`` (while it runs)."""
        document = {"url": url, "pid": os.getpid()}
        self._write_atomically(self.root / SERVER_FILE, orjson.dumps(document))

    def withdraw_server(self, url: str) -> None:
        path = self.root / SERVER_FILE
        try:
            if orjson.loads(path.read_bytes()).get("url") == url:
                path.unlink()
        except (OSError, ValueError):
            pass

    def running_server(self) -> str | None:
        """The URL of a live server on this archive, if one announced itself."""
        try:
            document = orjson.loads((self.root / SERVER_FILE).read_bytes())
            os.kill(int(document["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return str(document["url"])

    # paths ---------------------------------------------------------------------------------

    def study_dir(self, study: str) -> Path:
        return self.root / check_uid(study, "StudyInstanceUID")

    def series_dir(self, study: str, series: str) -> Path:
        return self.study_dir(study) / check_uid(series, "SeriesInstanceUID")

    def instance_file(self, study: str, series: str, sop: str) -> Path:
        return self.series_dir(study, series) / (check_uid(sop, "SOPInstanceUID") + ".dcm")

    def new_incoming_file(self) -> Path:
        """A fresh path for an upload in progress; it is renamed into place or deleted."""
        return self.incoming / f"{self._session}-{next(self._uploads_named)}.part"

    # reading -------------------------------------------------------------------------------

    def read_sidecar(self, dcm: Path) -> StoredInstance:
        return _stored_from(orjson.loads(dcm.with_suffix(".json").read_bytes()))

    def read_ranges(self, dcm: Path, ranges: list[ByteRange]) -> bytes:
        """The concatenation of byte ranges of a stored file: a frame or a bulk value."""
        with dcm.open("rb") as fp:
            parts = []
            for offset, length in ranges:
                fp.seek(offset)
                parts.append(fp.read(length))
        return b"".join(parts)

    def thumbnail_file(self, sop: str, key: str) -> Path:
        """Where a cached thumbnail of an instance lives; ``key`` names content and options."""
        return self.thumbnails / f"{check_uid(sop, 'SOPInstanceUID')}_{key}"

    def write_cached(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomically(path, data)

    def remove_cached(self, sop: str) -> None:
        """Drop the cached thumbnails of an instance that was deleted or replaced."""
        if self.thumbnails.is_dir():
            for path in self.thumbnails.glob(f"{check_uid(sop, 'SOPInstanceUID')}_*"):
                path.unlink(missing_ok=True)

    # writing -------------------------------------------------------------------------------

    def commit(
        self, incoming: Path, header: Header, digest: str, sidecar: Path | None = None
    ) -> StoredInstance:
        """Move a parsed upload into place with its sidecar (see :meth:`place`) and make
        that durable."""
        stored, folders = self.place(incoming, header, digest, sidecar)
        self.flush_folders(folders)
        return stored

    def commit_uploads(self, uploads: list[Upload]) -> list[StoredInstance | OSError]:
        """Place several prepared uploads, then flush each folder they went to once: a
        group commit, one flush of each folder for a batch instead of one per instance. Each
        upload gets its instance, or the error that kept it out (all of them if the flush
        failed: then none is known to be durable)."""
        results: list[StoredInstance | OSError] = []
        folders: list[Path] = []
        for upload in uploads:
            try:
                stored, touched = self.place(
                    upload.path, upload.header, upload.digest, upload.sidecar
                )
            except OSError as exc:
                results.append(exc)
                continue
            results.append(stored)
            folders += touched
        try:
            self.flush_folders(folders)
        except OSError as exc:
            return [exc for _ in results]
        return results

    def place(
        self, incoming: Path, header: Header, digest: str, sidecar: Path | None = None
    ) -> tuple[StoredInstance, list[Path]]:
        """Move a parsed upload into place with its sidecar, replacing any old copy;
        ``sidecar`` is one already written (by :func:`prepare_upload`), else it is written here.
        Returns the folders whose entries changed, for :meth:`flush_folders`.

        Everything that needs space (folders, the sidecar) is written before anything is
        replaced, so an OSError (a full disk) leaves the archive as it was; only the two
        renames follow. A crash between them leaves a .dcm whose sidecar is missing or
        stale, which the next start regenerates."""
        target = self.instance_file(header.study_uid, header.series_uid, header.sop_uid)
        created = self._make_folders(target.parent)
        stat = incoming.stat()  # a rename keeps size and modification time
        if sidecar is None:
            if self.fsync:
                _fsync_file(incoming)
            document = _sidecar_document(header, digest, stat)
            sidecar = self._write_temporary(target.with_suffix(".json"), document)
        try:
            os.replace(incoming, target)
            os.replace(sidecar, target.with_suffix(".json"))
        except BaseException:  # renamed, it is gone: no unlink that fails on every commit
            sidecar.unlink(missing_ok=True)
            raise
        folders = [target.parent, *(each.parent for each in created)]
        return StoredInstance(header, stat.st_size, digest), folders

    def flush_folders(self, folders: list[Path]) -> None:
        """Make renames into ``folders``, and the entries of new folders, durable (each
        folder flushed once)."""
        if self.fsync:
            for folder in dict.fromkeys(folders):
                _fsync_file(folder)

    def _make_folders(self, folder: Path) -> list[Path]:
        """Create ``folder`` and missing parents inside the archive; the ones created."""
        created = []
        while not folder.is_dir() and folder != self.root:
            created.append(folder)
            folder = folder.parent
        for each in reversed(created):
            each.mkdir(exist_ok=True)
        return created

    def _write_sidecar(self, dcm: Path, header: Header, digest: str) -> StoredInstance:
        stat = dcm.stat()
        self._write_atomically(dcm.with_suffix(".json"), _sidecar_document(header, digest, stat))
        return StoredInstance(header, stat.st_size, digest)

    def _write_atomically(self, path: Path, data: bytes) -> None:
        temporary = self._write_temporary(path, data)
        try:
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def _write_temporary(self, path: Path, data: bytes) -> Path:
        """``data`` in a new temporary file next to ``path``."""
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        _write_new(temporary, data, self.fsync)
        return temporary

    def remove_instance(self, study: str, series: str, sop: str) -> None:
        """Delete an instance and its sidecar, then any folder that this left empty."""
        dcm = self.instance_file(study, series, sop)
        for path in (dcm.with_suffix(".json"), dcm):
            path.unlink(missing_ok=True)
        self._remove_empty(dcm.parent)
        self.remove_cached(sop)

    def remove_tree(self, folder: Path) -> None:
        """Delete a series or study folder whole (after its instances left the index)."""
        shutil.rmtree(folder, ignore_errors=True)
        self._remove_empty(folder.parent)

    def _remove_empty(self, folder: Path) -> None:
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # the startup scan ----------------------------------------------------------------------

    def scan(self, report: ScanReport) -> Iterator[StoredInstance]:
        """Yield every instance in the archive, repairing sidecars as needed (see
        :meth:`scan_series`)."""
        report.removed_leftovers += self.clean_incoming()
        for series in self.series_folders():
            yield from self.scan_series(series, report)

    def series_folders(self, report: ScanReport | None = None) -> Iterator[Path]:
        """Every series folder; a study folder that cannot be read is reported (if a
        ``report`` is given) and skipped."""
        for study in sorted(self._subfolders(self.root)):
            try:
                series = sorted(self._subfolders(study))
            except OSError as exc:
                if report is None:
                    raise
                report.skipped.append((study, f"the folder cannot be read ({exc.strerror})"))
                continue
            yield from series

    @staticmethod
    def stamp(folder: Path) -> dict[str, list[int]]:
        """What identifies the state of a series folder: every file name, and the time and
        size of each sidecar. Adding, removing or replacing an instance (always a rename)
        or a damaged sidecar changes it; a .dcm edited in place does not (``localdicom
        reindex`` is for that)."""
        with os.scandir(folder) as entries:
            stamps = {}
            for entry in entries:
                if entry.name.endswith(".json"):
                    stat = entry.stat()
                    stamps[entry.name] = [stat.st_mtime_ns, stat.st_size]
                else:
                    stamps[entry.name] = []
            return stamps

    def read_snapshot(self, schema: str) -> dict[bytes, memoryview]:
        """The index as last saved: series folder -> that series' entry as JSON text, parsed
        only when used, so that a large archive never holds it all parsed at once. Empty if
        absent, unreadable, or saved by a version that kept other things (``schema``).

        The texts are views of the file mapped into memory, which is unmapped when the last
        view goes. Copies of them (36 MB at 100k instances) were freed among the objects of
        the new index, and the process kept that memory: 760-1030 bytes per instance after a
        start from the snapshot, against 480-630 with views (``benchmarks.scale`` at 100k)."""
        try:
            with (self.root / SNAPSHOT).open("rb") as fp:
                if fp.readline().strip() != f"{SIDECAR_FORMAT}/{schema}".encode():
                    return {}
                start = fp.tell()
                mapped = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
            return _snapshot_lines(mapped, start)
        except (OSError, ValueError):
            return {}

    def write_snapshot(self, schema: str, series: dict[str, Any]) -> None:
        """One line of schema, then a line per series folder: ``key TAB entry-JSON``."""
        lines = [f"{SIDECAR_FORMAT}/{schema}".encode()]
        lines += [key.encode() + b"\t" + orjson.dumps(entry) for key, entry in series.items()]
        self._write_atomically(self.root / SNAPSHOT, b"\n".join(lines) + b"\n")

    def instance_files(self) -> Iterator[Path]:
        """Every .dcm in the layout, reading and repairing nothing (import, reindex, ls)."""
        for study in self._subfolders(self.root):
            for series in self._subfolders(study):
                with os.scandir(series) as entries:
                    for entry in entries:
                        if entry.name.endswith(".dcm") and not entry.name.startswith("."):
                            yield Path(entry.path)

    def current_sidecar(self, dcm: Path) -> StoredInstance | None:
        """The sidecar of ``dcm`` if it is readable, of this format and not older than the .dcm;
        None when it must be regenerated."""
        try:
            document = orjson.loads(dcm.with_suffix(".json").read_bytes())
            if self._is_current(dcm, document):
                return _stored_from(document)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def clean_incoming(self) -> int:
        """Delete leftovers of interrupted uploads; only safe while nothing else writes here."""
        leftovers = list(self.incoming.iterdir()) if self.incoming.is_dir() else []
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    def clean_temporary(self) -> int:
        """Delete temporary files of interrupted atomic writes in the archive folder and the
        thumbnail cache (series folders are cleaned by :meth:`scan_series`); at startup."""
        leftovers = [
            path
            for folder in (self.root, self.thumbnails)
            if folder.is_dir()
            for path in folder.glob(".*.tmp")
        ]
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)

    @staticmethod
    def _subfolders(folder: Path) -> Iterator[Path]:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir() and not entry.name.startswith("."):
                    yield Path(entry.path)

    def scan_series(self, series: Path, report: ScanReport) -> Iterator[StoredInstance]:
        """Every instance of a series folder. A sidecar that is missing, unreadable, of
        another format, or older than its .dcm is regenerated from the .dcm; a file that is
        not a DICOM instance where it stands is reported and left alone; leftovers of
        interrupted writes are removed."""
        for path in sorted(series.iterdir()):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                report.removed_leftovers += 1
            elif path.suffix == ".dcm" and not path.is_file():
                report.skipped.append((path, "not a regular file"))  # reading a FIFO blocks
            elif path.suffix == ".dcm":
                stored = self._load(path, report)
                if stored is not None:
                    yield stored
            elif path.suffix == ".json" and not path.with_suffix(".dcm").exists():
                path.unlink(missing_ok=True)  # sidecar of a file deleted by hand
                report.removed_leftovers += 1

    def _load(self, dcm: Path, report: ScanReport) -> StoredInstance | None:
        current = self.current_sidecar(dcm)
        if current is not None:
            if os.access(dcm, os.R_OK):
                return current
            report.skipped.append((dcm, "the file cannot be read (permission denied)"))
            return None
        try:  # missing, unreadable or of an older format: regenerate
            stored = self.regenerate_sidecar(dcm)
        except (NotDicom, OSError) as exc:
            report.skipped.append((dcm, str(exc)))
            return None
        except Exception as exc:  # pydicom's own errors on a damaged file
            report.skipped.append((dcm, f"not a readable DICOM Part 10 file ({str(exc)[:200]})"))
            return None
        report.regenerated.append(dcm)
        return stored

    @staticmethod
    def _is_current(dcm: Path, document: dict[str, Any]) -> bool:
        stat = dcm.stat()
        return (
            document.get("format") == SIDECAR_FORMAT
            and document["size"] == stat.st_size
            and document["mtime_ns"] == stat.st_mtime_ns
            and [document["study"], document["series"], document["sop"] + ".dcm"]
            == [dcm.parent.parent.name, dcm.parent.name, dcm.name]
        )

    def regenerate_sidecar(self, dcm: Path) -> StoredInstance:
        """Describe a .dcm again and write its sidecar; it must sit where its UIDs say."""
        with dcm.open("rb") as fp:
            header = describe(fp)
            digest = file_digest(fp)
        expected = self.instance_file(header.study_uid, header.series_uid, header.sop_uid)
        if expected != dcm:
            raise NotDicom(
                f"its UIDs place it at {expected.relative_to(self.root)}, not here; "
                "move it or store it through STOW-RS"
            )
        return self._write_sidecar(dcm, header, digest)


def _sidecar_document(header: Header, digest: str, stat: os.stat_result) -> bytes:
    document = {
        "format": SIDECAR_FORMAT,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "digest": digest,
    }
    document.update(header.to_dict())
    return orjson.dumps(document, default=_builtin)


def _write_new(path: Path, data: bytes, fsync: bool) -> None:
    """``data`` in a new file at ``path``, removed again if that fails."""
    try:
        with path.open("wb") as fp:
            fp.write(data)
            if fsync:
                fp.flush()
                os.fsync(fp.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _builtin(value: Any) -> Any:
    """pydicom's float subclass (DSfloat) as the float it is; orjson takes only builtins."""
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _snapshot_lines(mapped: mmap.mmap, start: int) -> dict[bytes, memoryview]:
    """``key TAB text`` lines from ``start`` on; a line without its key is a ValueError."""
    view = memoryview(mapped)
    lines = {}
    while start < len(mapped):
        end = mapped.find(b"\n", start)
        end = len(mapped) if end < 0 else end
        tab = mapped.find(b"\t", start, end)
        if tab < 0:
            raise ValueError(f"line at byte {start} has no key")
        lines[bytes(view[start:tab])] = view[tab + 1 : end]
        start = end + 1
    return lines


def _stored_from(document: dict[str, Any]) -> StoredInstance:
    return StoredInstance(Header.from_dict(document), document["size"], document["digest"])
