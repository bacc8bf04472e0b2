"""The workers' part of an import: classify a source and, for an instance, describe it,
hash it and stage a copy, reading the source once.

This is the expensive part (parsing, hashing, copying), so it runs in a pool of worker
processes, one per core; only the parent decides and commits (:mod:`.sinks`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import signal
import zipfile
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError

from localdicom.archive import Layout
from localdicom.archive.files import file_digest
from localdicom.archive.held import HELD_BYTES, MemoryFile, read_whole, write_held
from localdicom.archive.upload import write_sidecar
from localdicom.deid import Deidentifier, DeidentifyError, Pseudonym, deidentify_part10
from localdicom.dicom.describing import describe
from localdicom.dicom.header import Header, NotDicom
from localdicom.importer.sources import HEAD, Source, is_part10

CHUNK = 1 << 20
#: Media Storage SOP Class of a DICOMDIR (PS3.4 Table B.5-1, Media Storage Directory Storage).
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


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
    #: Not stored: --reject-burned-in and its pixels may show identifying text.
    REFUSED = "refused"


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
    #: --deidentify: what is staged is the de-identified instance, never the source.
    deidentifier: Deidentifier | None = None
    reject_burned_in: bool = False
    #: --fsync: a copy staged is flushed before it is handed over.
    fsync: bool = False


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
    #: Its sidecar, written beside it, or None if the commit is to write it.
    sidecar: Path | None = None
    #: The source itself is to be renamed or linked into place (same file system).
    in_place: bool = False
    #: --move or --link had to copy because the source is on another file system.
    copied_across: bool = False
    members: list[Source] = field(default_factory=list)
    references: list[tuple[str, ...]] = field(default_factory=list)
    #: --deidentify: the patient's pseudonym (for the key file's map), and why the pixels
    #: need a look before the instance is shared ("" when no reason is known).
    patient: Pseudonym | None = None
    review: str = ""

    def discard(self) -> None:
        """Remove the staged copy and its sidecar, if they were made."""
        for path in (self.staged, self.sidecar):
            if path is not None:
                path.unlink(missing_ok=True)


def worker_init() -> None:
    """Workers leave Ctrl-C to the parent, which stops handing out work and cleans up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def why(exc: BaseException) -> str:
    """An error's reason in words, without the errno prefix of OSError's text."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def examine_batch(sources: list[Source], plan: Plan) -> list[Examined]:
    return [examine(source, plan) for source in sources]


def examine(source: Source, plan: Plan) -> Examined:
    """Classify one source; for an instance, describe it, hash it and stage a copy."""
    try:
        if source.member is None:
            return _examine_file(source, plan)
        return _examine_member(source, plan)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, EOFError) as exc:
        return Examined(source, Kind.ERROR, f"cannot be read: {why(exc)}")
    except zlib.error as exc:
        return Examined(source, Kind.ERROR, f"cannot be decompressed: {exc}")


def _examine_file(source: Source, plan: Plan) -> Examined:
    with source.path.open("rb") as fp:
        stat = os.fstat(fp.fileno())
        head = fp.read(HEAD)
        if not is_part10(head):
            return _not_part10(source, fp, head, stat.st_size)
        if _copied(plan, stat) and stat.st_size < HELD_BYTES:
            return _held_copy(source, fp, stat.st_size, plan)
        found = _classify(source, fp, stat.st_size)
        if isinstance(found, Examined):
            return found
        if plan.deidentifier is not None:
            return _deidentified(source, fp, plan)
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


def _copied(plan: Plan, stat: os.stat_result) -> bool:
    """Whether an instance in this file is stored as a copy of it (neither sent to a
    server, nor de-identified, nor moved or linked within one file system)."""
    if plan.stow or plan.deidentifier is not None:
        return False
    return plan.transfer is Transfer.COPY or stat.st_dev != plan.device


def _held_copy(source: Source, fp: BinaryIO, size: int, plan: Plan) -> Examined:
    """A copy of the file read once into memory, parsed and hashed there, and staged past
    the page cache (:func:`write_held`) with its sidecar: creating a copy's pages costs
    more CPU than all else an import does on a virtual machine that hands free memory back
    to its host (see :mod:`localdicom.archive.held`), and the import ends with a ``sync``
    that would write them out anyway. The sidecar is written here, beside the other
    workers, rather than by the one committer."""
    with read_whole(fp, size) as held:
        if len(held) != size:
            return Examined(source, Kind.ERROR, "the file changed while it was being imported")
        found = _classify(source, io.BufferedReader(MemoryFile(held, str(source.path))), size)
        if isinstance(found, Examined):
            return found
        digest = hashlib.sha256(held).hexdigest()
        if _target(plan, found).exists():  # most likely already stored: copy nothing
            return _instance(source, found, digest, size)
        staged = _staging_file(plan)
        try:
            write_held(staged, held, plan.fsync, direct=True)
            written = write_sidecar(staged, found, digest, os.stat(staged))
        except OSError as exc:  # a full disk: the archive is not to be left half written
            staged.unlink(missing_ok=True)
            return Examined(source, Kind.ERROR, f"cannot be written to the archive: {why(exc)}")
    result = _instance(source, found, digest, size, staged=staged, sidecar=written)
    result.copied_across = plan.transfer is not Transfer.COPY
    return result


def _examine_member(source: Source, plan: Plan) -> Examined:
    assert source.member is not None
    archive = _open_zip(str(source.path))
    with archive.open(source.member) as stream:
        head = stream.read(HEAD)
        if not is_part10(head):
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
    if plan.deidentifier is not None:
        try:
            with staged.open("rb") as fp:
                return _deidentified(source, fp, plan)
        finally:
            staged.unlink(missing_ok=True)
    return _instance(source, found, digest, size, staged=staged)


def _deidentified(source: Source, fp: BinaryIO, plan: Plan) -> Examined:
    """--deidentify: stage the de-identified instance (PS3.15 Annex E) and describe that
    one; the source is only read."""
    assert plan.deidentifier is not None
    fp.seek(0)
    staged = _staging_file(plan)
    try:
        with staged.open("wb") as out:
            outcome = deidentify_part10(fp, out, plan.deidentifier)
        if outcome.review and plan.reject_burned_in:
            staged.unlink()
            return Examined(source, Kind.REFUSED, outcome.review, patient=outcome.patient)
        with staged.open("rb") as copy:
            header = describe(copy)
            copy.seek(0)
            digest = file_digest(copy)
    except (DeidentifyError, NotDicom) as exc:
        staged.unlink(missing_ok=True)
        return Examined(source, Kind.ERROR, str(exc))
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    size = staged.stat().st_size
    result = _instance(source, header, digest, size, staged=staged, patient=outcome.patient)
    result.review = outcome.review
    return result


@functools.lru_cache(maxsize=8)
def _open_zip(path: str) -> zipfile.ZipFile:
    """Zip files stay open in a worker: reading the central directory once per member would
    cost as much as the members themselves in a zip of thousands of small files."""
    return zipfile.ZipFile(path)


@functools.lru_cache(maxsize=4)
def _layout(root: Path) -> Layout:
    return Layout(root)


def _instance(source: Source, header: Header, digest: str, size: int, **extra: Any) -> Examined:
    return Examined(source, Kind.INSTANCE, size=size, header=header, digest=digest, **extra)


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
    return _layout(plan.archive).instance_file(header.study_uid, header.series_uid, header.sop_uid)


def _staging_file(plan: Plan) -> Path:
    return _layout(plan.archive).new_staging_file(plan.staging)


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
