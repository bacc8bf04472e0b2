"""The archive on disk and its index in memory, kept in step.

Handlers talk to a :class:`Catalog`; it runs the blocking disk work in worker threads and
updates the index on the event loop, so a query never sees an instance that is not on disk
and a deleted instance disappears from queries before its files go.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeVar

import orjson

from localdicom.archive import Archive, ScanReport, Upload, prepare_upload
from localdicom.dicom.header import Header, NotDicom
from localdicom.index import SCHEMA, Index, InstanceRecord

logger = logging.getLogger(__name__)
T = TypeVar("T")


class FailureReason(IntEnum):
    """STOW-RS Failure Reason codes (PS3.18 10.5.3, from the Storage statuses of PS3.4 B.2.3)."""

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000


class StoreFailed(Exception):
    """One instance of a STOW request was not stored; nothing of it is left behind."""

    def __init__(self, reason: FailureReason, message: str, header: Header | None = None):
        super().__init__(message)
        self.reason = reason
        self.header = header


@dataclass(frozen=True)
class Stored:
    header: Header
    #: True when the very same instance was already stored (idempotent re-send).
    already_present: bool


Commit = tuple[Upload, "asyncio.Future[Stored]"]


@dataclass(frozen=True)
class OpenReport:
    scan: ScanReport
    seconds: float


class Catalog:
    """Stores, finds and deletes instances."""

    def __init__(
        self,
        archive: Archive,
        *,
        prepare: Callable[[Path], Awaitable[Upload]],
        overwrite: bool = False,
    ) -> None:
        """``prepare`` runs :func:`prepare_upload` on an upload with the archive's fsync
        setting somewhere else than this process: in the worker processes when the server
        runs (parsing holds the GIL for milliseconds); see :meth:`_prepare`."""
        self.archive = archive
        self._prepare_elsewhere = prepare
        self.index = Index()
        self.overwrite = overwrite
        self._commit_lock = asyncio.Lock()
        #: Uploads waiting for :meth:`commit`, each with the future of its outcome.
        self._to_commit: list[Commit] = []
        self._committer: asyncio.Task | None = None
        #: Uploads in the upload area, from their first byte until stored or discarded.
        self._uploads: set[Path] = set()
        #: Files of each series folder that the startup scan could not serve, by name (kept
        #: in the snapshot so that a folder restored from it reports them again).
        self._skipped: dict[str, list[list[str]]] = {}

    async def open(self) -> OpenReport:
        """Rebuild the index from the archive (creating it if absent).

        Series folders unchanged since the last snapshot (same stamp) come from it; the
        others are read from their sidecars. Nothing is served until this is done, so the
        index may be built in a worker thread.
        """
        started = time.perf_counter()
        report = ScanReport()
        gc.disable()  # loading makes no garbage; collections would rescan the growing index
        try:
            await asyncio.to_thread(self._rebuild, report)
        finally:
            gc.freeze()  # and later collections need not scan it either (shorter pauses)
            gc.enable()
        return OpenReport(report, time.perf_counter() - started)

    def _rebuild(self, report: ScanReport) -> None:
        self.archive.prepare()
        report.removed_leftovers += self.archive.clean_incoming()
        report.removed_leftovers += self.archive.clean_temporary()
        snapshot = self.archive.read_snapshot(SCHEMA)
        unchanged = True
        for folder in self.archive.series_folders(report):
            key = _key(folder)
            entry = _snapshot_entry(snapshot.pop(key.encode(), None))
            try:
                if entry is not None and entry.get("stamp") == self.archive.stamp(folder):
                    self.index.restore_series(entry)
                    report.from_snapshot += len(entry["instances"])
                    self._skipped[key] = entry.get("skipped", [])
                    report.skipped += [(folder / name, why) for name, why in self._skipped[key]]
                    continue
                unchanged = False
                first_skipped = len(report.skipped)
                for stored in list(self.archive.scan_series(folder, report)):
                    self.index.add(stored)
                skipped = report.skipped[first_skipped:]
                self._skipped[key] = [[path.name, why] for path, why in skipped]
            except OSError as exc:  # an unreadable folder: the rest of the archive is served
                unchanged = False
                report.skipped.append((folder, f"the folder cannot be read ({exc.strerror})"))
        gone = bool(snapshot)  # folders in the snapshot no longer in the archive
        snapshot.clear()  # unmaps the old snapshot before it is replaced
        if not unchanged or gone:
            self.save_snapshot()

    def save_snapshot(self) -> None:
        """Write the index down with each series folder's stamp (at start and at stop).

        A snapshot that cannot be written (a full disk) only makes the next start slower."""
        entries = {}
        for series in self.index.series.values():
            folder = self.archive.series_dir(series.study, series.uid)
            try:
                stamp = self.archive.stamp(folder)
            except OSError:
                continue
            entry = {**self.index.series_snapshot(series), "stamp": stamp}
            skipped = [item for item in self._skipped.get(_key(folder), []) if item[0] in stamp]
            if skipped:
                entry["skipped"] = skipped
            entries[_key(folder)] = entry
        try:
            self.archive.write_snapshot(SCHEMA, entries)
        except OSError as exc:
            logger.warning("the index snapshot could not be written: %s", exc)

    async def receive(self, chunks: AsyncIterator[bytes], study: str | None = None) -> Upload:
        """Stream one instance to the upload area and check it; nothing is stored yet.

        ``study`` is the study the URL names. Raises :class:`StoreFailed`, leaving nothing
        behind; on success the caller must :meth:`commit` or :meth:`discard` the result.
        """
        return await self.check(await self.spool(chunks), study)

    async def spool(self, chunks: AsyncIterator[bytes]) -> Path:
        """Stream one instance to a new file of the upload area, for :meth:`check`; raises
        :class:`StoreFailed` (a full disk) or the stream's error, leaving nothing behind."""
        incoming = self.archive.new_incoming_file()
        self._uploads.add(incoming)
        try:
            await self._write_incoming(chunks, incoming)
        except BaseException:
            self._remove_upload(incoming)
            raise
        return incoming

    async def check(self, incoming: Path, study: str | None = None) -> Upload:
        """Parse, hash and flush a :meth:`spool`-ed upload: the second half of :meth:`receive`,
        which may run while the next upload of a request streams in."""
        try:
            upload = await self._prepared(incoming)
            if study is not None and upload.header.study_uid != study:
                raise StoreFailed(
                    FailureReason.DATASET_DOES_NOT_MATCH,
                    f"its StudyInstanceUID {upload.header.study_uid} is not the study of the "
                    f"URL, {study}",
                    upload.header,
                )
        except BaseException:
            self._remove_upload(incoming)
            raise
        return upload

    def _prepare(self, incoming: Path) -> Awaitable[Upload]:
        """Prepare an upload in ``prepare`` (the worker processes), where concurrent uploads
        use every core and leave this process's GIL to the server; or, when it is the only
        upload in progress, in a thread here, where it is done sooner without the hand-over
        to a process and back (about 2 of the 12 ms that a 512 KB upload took, one at a
        time). A query that comes in meanwhile waits for the GIL at most as long as parsing
        holds it, a millisecond or two."""
        if self._uploads == {incoming}:
            return asyncio.to_thread(prepare_upload, incoming, self.archive.fsync)
        return self._prepare_elsewhere(incoming)

    async def _prepared(self, incoming: Path) -> Upload:
        try:
            return await self._prepare(incoming)
        except NotDicom as exc:
            raise StoreFailed(FailureReason.CANNOT_UNDERSTAND, f"not stored: {exc}") from exc
        except BrokenExecutor as exc:  # a worker died, maybe on another request's data
            raise StoreFailed(
                FailureReason.PROCESSING_FAILURE,
                "not stored: the process parsing it stopped; send it again",
            ) from exc
        except OSError as exc:  # writing the sidecar
            raise StoreFailed(
                FailureReason.OUT_OF_RESOURCES, f"the archive cannot be written: {exc}"
            ) from exc

    def discard(self, upload: Upload) -> None:
        self._remove_upload(upload.path)

    def _remove_upload(self, path: Path) -> None:
        """An upload in the upload area and the sidecar written beside it (if it was)."""
        self._uploads.discard(path)
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)

    async def commit(self, upload: Upload) -> Stored:
        """Move a received instance into the archive under the duplicate policy.

        Uploads whose commits wait together are committed together, one folder flush for
        all of them (:meth:`Archive.commit_uploads`): at concurrency 8 one flush per upload,
        under the lock that keeps commits in order, took 5.5 ms and capped the rate at
        about 180 uploads/s. Raises :class:`StoreFailed`."""
        stored = asyncio.get_running_loop().create_future()
        self._to_commit.append((upload, stored))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        placed = False
        try:
            outcome = await stored
            placed = not outcome.already_present
            return outcome
        finally:
            if placed:  # renamed into the archive: nothing is left to delete
                self._uploads.discard(upload.path)
            else:
                self.discard(upload)

    async def store(self, chunks: AsyncIterator[bytes], study: str | None = None) -> Stored:
        """:meth:`receive` then :meth:`commit` one instance."""
        return await self.commit(await self.receive(chunks, study))

    async def _write_incoming(self, chunks: AsyncIterator[bytes], incoming: Path) -> None:
        """Write the upload; only errors of the file are StoreFailed (a full disk), errors of
        the client's stream (a disconnect, a limit) propagate as they are."""
        fp = _writing(incoming.open, "xb")
        try:
            async for chunk in chunks:
                _writing(fp.write, chunk)
            _writing(fp.close)
        finally:
            with contextlib.suppress(OSError):
                fp.close()

    async def _commit_queued(self) -> None:
        while self._to_commit:
            async with self._commit_lock:
                batch = self._next_batch()
                try:
                    await self._commit_batch(batch)
                except Exception as exc:  # a bug: fail the batch, never leave a caller waiting
                    logger.exception("committing %d uploads failed", len(batch))
                    failure = StoreFailed(FailureReason.PROCESSING_FAILURE, f"not stored: {exc}")
                    for _, stored in batch:
                        _settle(stored, failure)

    def _next_batch(self) -> list[Commit]:
        """The queued uploads in order, but at most one per SOP Instance UID: a second copy
        waits for the next batch, so that it meets the first under the duplicate policy."""
        batch: list[Commit] = []
        later: list[Commit] = []
        seen: set[str] = set()
        for upload, stored in self._to_commit:
            if stored.cancelled():  # its request went away; it removes its own upload
                continue
            sop = upload.header.sop_uid
            (later if sop in seen else batch).append((upload, stored))
            seen.add(sop)
        self._to_commit = later
        return batch

    async def _commit_batch(self, batch: list[Commit]) -> None:
        placing: list[tuple[Upload, asyncio.Future[Stored], InstanceRecord | None]] = []
        for upload, stored in batch:
            existing = self.index.instances.get(upload.header.sop_uid)
            decided = self._decided_without_writing(existing, upload)
            if decided is None:
                placing.append((upload, stored, existing))
            else:
                _settle(stored, decided)
        if not placing:
            return
        uploads = [upload for upload, _, _ in placing]
        results = await asyncio.to_thread(self.archive.commit_uploads, uploads)
        for (upload, stored, existing), result in zip(placing, results, strict=True):
            if isinstance(result, OSError):
                message = f"the archive cannot be written: {result}"
                _settle(stored, StoreFailed(FailureReason.OUT_OF_RESOURCES, message, upload.header))
                continue
            if existing is not None:  # replaced (--overwrite): only now is the old copy dropped
                await self._drop_replaced(existing, upload.header)
            self.index.add(result)
            _settle(stored, Stored(upload.header, already_present=False))

    def _decided_without_writing(
        self, existing: InstanceRecord | None, upload: Upload
    ) -> Stored | StoreFailed | None:
        """The outcome of an upload whose SOP Instance UID is stored already (the very same
        instance, or a refused different one), or None when it is to be written."""
        if existing is None:
            return None
        if existing.digest.hex() == upload.digest:
            return Stored(upload.header, already_present=True)
        if self.overwrite:
            return None
        return StoreFailed(
            FailureReason.DUPLICATE_SOP_INSTANCE,
            f"SOP Instance {upload.header.sop_uid} is already stored with different "
            "content; delete it first, or start the server with --overwrite",
            upload.header,
        )

    async def _drop_replaced(self, existing: InstanceRecord, header: Header) -> None:
        self.index.remove_instance(existing.sop)
        if (existing.study, existing.series) == (header.study_uid, header.series_uid):
            await asyncio.to_thread(self.archive.remove_cached, existing.sop)
        else:
            await self._forget([existing])

    # deletion --------------------------------------------------------------------------------

    async def delete_instance(self, study: str, series: str, sop: str) -> bool:
        async with self._commit_lock:
            record = self.index.instance_in(study, series, sop)
            if record is None:
                return False
            await self._forget([record])
            return True

    async def delete_series(self, study: str, series: str) -> bool:
        async with self._commit_lock:
            if self.index.series_in(study, series) is None:
                return False
            removed = self.index.remove_series(series)
            await asyncio.to_thread(self._remove, self.archive.series_dir(study, series), removed)
            return True

    async def delete_study(self, study: str) -> bool:
        async with self._commit_lock:
            removed = self.index.remove_study(study)
            if not removed:
                return False
            await asyncio.to_thread(self._remove, self.archive.study_dir(study), removed)
            return True

    def _remove(self, folder: Path, records: list[InstanceRecord]) -> None:
        self.archive.remove_tree(folder)
        for record in records:
            self.archive.remove_cached(record.sop)

    async def _forget(self, records: list[InstanceRecord]) -> None:
        for record in records:
            self.index.remove_instance(record.sop)
            await asyncio.to_thread(
                self.archive.remove_instance, record.study, record.series, record.sop
            )

    # reading ---------------------------------------------------------------------------------

    def path_of(self, record: InstanceRecord) -> Path:
        return self.archive.instance_file(record.study, record.series, record.sop)

    async def header_of(self, record: InstanceRecord) -> Header:
        return await asyncio.to_thread(self.read_header, record)

    def read_header(self, record: InstanceRecord) -> Header:
        """The instance's header from its sidecar (blocking)."""
        return self.archive.read_sidecar(self.path_of(record)).header


def _settle(stored: asyncio.Future[Stored], outcome: Stored | StoreFailed) -> None:
    """Give a commit's caller its outcome, unless it went away meanwhile."""
    if stored.done():
        return
    if isinstance(outcome, StoreFailed):
        stored.set_exception(outcome)
    else:
        stored.set_result(outcome)


def _snapshot_entry(text: memoryview | None) -> dict[str, Any] | None:
    """A series' entry of the snapshot; None if absent or damaged: the folder is read again."""
    try:
        entry = None if text is None else orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


def _key(folder: Path) -> str:
    return f"{folder.parent.name}/{folder.name}"


def _writing(function: Callable[..., T], *args: Any) -> T:
    """Call a file operation of an upload; its OSError is the archive's failure (A700)."""
    try:
        return function(*args)
    except OSError as exc:
        raise StoreFailed(
            FailureReason.OUT_OF_RESOURCES, f"the archive cannot be written: {exc}"
        ) from exc
