"""The archive on disk and its index in memory, kept in step.

Every caller (the web handlers, the CLI tools, every way in) talks to a :class:`Catalog`;
it runs the blocking disk work in worker threads and updates the index on the event loop,
so a query never sees an instance that is not on disk and a deleted instance disappears
from queries before its files go.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from localdicom.archive import (
    Archive,
    ScanReport,
    Spooled,
    StagingFile,
    Upload,
    Why,
    prepare_spooled,
    sidecar,
)
from localdicom.archive.upload import remove as remove_upload
from localdicom.catalog import metadata, opening, searching
from localdicom.catalog.arriving import Arriving
from localdicom.catalog.feed import FeedReading
from localdicom.catalog.ingest import (
    Decision,
    FailureReason,
    Stored,
    StoreFailed,
    conflict_message,
    decide,
    out_of_resources,
)
from localdicom.catalog.removing import Removing
from localdicom.catalog.searching import Match
from localdicom.dicom.header import ByteRange, Header, NotDicom
from localdicom.dicom.qido import Query
from localdicom.index import Index, InstanceRecord, Record, SeriesRecord, StudyRecord

T = TypeVar("T")
logger = logging.getLogger(__name__)

Commit = tuple[Upload, "asyncio.Future[Stored]"]
Placing = tuple[Upload, "asyncio.Future[Stored]", "InstanceRecord | None"]
#: Why --overwrite removed an instance.
REPLACED = Why("overwrite", "a different instance stored with its SOP Instance UID")
#: Series metadata kept in memory, gzipped and not, at most.
METADATA_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class OpenReport:
    scan: ScanReport
    seconds: float


class Catalog(FeedReading, Removing):
    """Stores, finds, reads and deletes instances (reading the change feed and removing
    are in :mod:`.feed` and :mod:`.removing`)."""

    def __init__(
        self,
        archive: Archive,
        *,
        prepare: Callable[[Path, tuple[bytes, ...] | None], Awaitable[Upload]],
        overwrite: bool = False,
        index_attributes: tuple[str, ...] = (),
        keep_removed: bool = True,
    ) -> None:
        """``prepare`` runs :func:`prepare_upload` on an upload (its path, and its bytes if
        they are held in memory) with the archive's fsync setting somewhere else than this
        process: in the worker processes when the server runs (parsing holds the GIL for
        milliseconds); see :meth:`_prepare`.
        ``index_attributes`` (tags) are kept in memory per instance besides the built-in
        ones, so that searches on them need no sidecar. ``keep_removed``: deleted and
        replaced instances go to the archive's trash (False: they are gone for good)."""
        self.archive = archive
        self._prepare_elsewhere = prepare
        self.index = Index(index_attributes)
        self.overwrite = overwrite
        self.keep_removed = keep_removed
        self._commit_lock = asyncio.Lock()
        #: A restore and a purge of the trash never run at once (one would pull entries
        #: from under the other).
        self._trash_lock = asyncio.Lock()
        #: Uploads waiting for :meth:`commit`, each with the future of its outcome.
        self._to_commit: list[Commit] = []
        self._committer: asyncio.Task | None = None
        #: Uploads in the upload area, from their first byte until stored or discarded.
        self._uploads: set[Path] = set()
        self._skipped: opening.Skipped = {}
        self._metadata = metadata.ResponseCache(METADATA_CACHE_BYTES)
        #: Set whenever the change feed may have grown (:mod:`localdicom.stable` waits on it).
        self.feed_changed = asyncio.Event()

    async def open(self) -> OpenReport:
        """Rebuild the index from the archive (creating it if absent). Nothing is served
        until this is done, so the index may be built in a worker thread."""
        started = time.perf_counter()
        report = ScanReport()
        gc.disable()  # loading makes no garbage; collections would rescan the growing index
        try:
            self._skipped = await asyncio.to_thread(
                opening.rebuild, self.archive, self.index, report
            )
        finally:
            gc.freeze()  # and later collections need not scan it either (shorter pauses)
            gc.enable()
        return OpenReport(report, time.perf_counter() - started)

    def save_snapshot(self) -> None:
        """Write the index down for the next start (blocking)."""
        opening.save(self.archive, self.index, self._skipped)

    # finding ---------------------------------------------------------------------------------

    def study(self, study: str) -> StudyRecord | None:
        return self.index.studies.get(study)

    def series(self, study: str, series: str) -> SeriesRecord | None:
        return self.index.series_in(study, series)

    def instance(self, study: str, series: str, sop: str) -> InstanceRecord | None:
        return self.index.instance_in(study, series, sop)

    def instance_by_uid(self, sop: str) -> InstanceRecord | None:
        """An instance by its SOP Instance UID alone (unique: PS3.3 C.12.1.1.1)."""
        return self.index.instances.get(sop)

    def instances_of(self, study: str, series: str | None = None) -> list[InstanceRecord]:
        return self.index.instances_of(study, series)

    def search(self, query: Query, study: str | None, series: str | None) -> list[Record]:
        """Records matching the conditions on attributes memory holds (C-FIND's keys)."""
        return self.index.search(query, study, series)

    async def query(
        self, query: Query, study: str | None, series: str | None, wanted: int | None = None
    ) -> Sequence[Match]:
        """Every match of ``query`` (QIDO-RS), on any attribute: those memory does not hold
        are matched from the sidecars of the candidates memory leaves (chosen on the loop,
        read in a thread; an instance deleted meanwhile does not match), and then no more
        than ``wanted`` are looked for."""
        chosen = self.index.plan(query)
        records = self.index.search(query, study, series)
        if not chosen.needs_witness:
            return searching.Unwitnessed(records)
        if not chosen.elsewhere:
            return [Match(record, self.index.first_witness(record, chosen)) for record in records]
        candidates = [(record, self.index.witnesses(record, chosen)) for record in records]
        return await asyncio.to_thread(
            searching.matched_in_sidecars,
            self._sidecar_metadata,
            candidates,
            chosen.elsewhere,
            wanted,
        )

    def _sidecar_metadata(self, record: InstanceRecord) -> dict[str, Any] | None:
        try:
            name = self.archive.sidecar_name(record.study, record.series, record.sop)
            return sidecar.read_metadata(name)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # deleted meanwhile, or a sidecar the next start repairs

    def holds(self, tag: str) -> bool:
        """Whether memory holds ``tag`` for every record that has it (no sidecar needed)."""
        return self.index.holds(tag)

    def attributes(self, record: Record | Match, tags: tuple[str, ...]) -> dict[str, Any]:
        """What memory holds of ``tags`` for a record or a match (QIDO answers from it)."""
        holder = record.holder if isinstance(record, Match) else record
        return self.index.attributes(holder, tags)

    def values(self, matches: Sequence[Match], tag: str) -> list[Any]:
        """The compact value memory holds of ``tag`` for each match (see
        :meth:`Index.values`; ``tag`` must be one memory holds): for sorting."""
        return self.index.values([match.holder for match in matches], tag)

    def counts(self) -> tuple[int, int, int]:
        """Studies, series and instances."""
        return self.index.counts()

    # reading ---------------------------------------------------------------------------------

    def path_of(self, record: InstanceRecord) -> Path:
        return self.archive.instance_file(record.study, record.series, record.sop)

    async def header_of(self, record: InstanceRecord) -> Header:
        return await asyncio.to_thread(self.read_header, record)

    def read_header(self, record: InstanceRecord) -> Header:
        """The instance's header from its sidecar (blocking)."""
        return sidecar.read(self.path_of(record)).header

    async def complete(
        self, records: Sequence[Record] | Sequence[Match], results: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Search results (what memory holds of each record, as DICOM JSON) with the
        attributes memory does not hold read from the sidecar of an instance of each record
        (a match's witness, or else its first); memory's values win. The instances are
        chosen here, on the loop, and read in a thread; one deleted meanwhile (or whose
        sidecar cannot be read) leaves its result as it was."""
        chosen = [_representative(record) for record in records]
        return await asyncio.to_thread(self._completed, chosen, results)

    def _completed(
        self, chosen: list[InstanceRecord], results: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return [
            {**(self._sidecar_metadata(record) or {}), **known}
            for record, known in zip(chosen, results, strict=True)
        ]

    def read_ranges(self, record: InstanceRecord, ranges: list[ByteRange]) -> bytes:
        """Byte ranges of the stored file, concatenated: a frame or a bulk value (blocking)."""
        return self.archive.read_ranges(self.path_of(record), ranges)

    def metadata_etag(self, records: list[InstanceRecord], root: str) -> str:
        return metadata.etag(records, root)

    async def metadata(self, records: list[InstanceRecord], root: str, *, gzipped: bool) -> bytes:
        """The metadata of ``records`` with BulkDataURIs under ``root``, from the cache when
        the same content was asked under the same root before."""
        key = (metadata.etag(records, root), gzipped)
        body = self._metadata.get(key)
        if body is None:
            body = await asyncio.to_thread(self._metadata_body, records, root, gzipped)
            self._metadata.put(key, body)
        return body

    def _metadata_body(self, records: list[InstanceRecord], root: str, gzipped: bool) -> bytes:
        body = metadata.document([self.read_header(record) for record in records], root)
        return metadata.compress(body) if gzipped else body

    def cached_thumbnail(self, record: InstanceRecord, key: str) -> Path | None:
        return self.archive.cached_thumbnail(record.sop, _thumbnail_key(record, key))

    async def keep_thumbnail(self, record: InstanceRecord, key: str, image: bytes) -> None:
        name = _thumbnail_key(record, key)
        await asyncio.to_thread(self.archive.keep_thumbnail, record.sop, name, image)

    # storing ---------------------------------------------------------------------------------

    async def store(self, chunks: AsyncIterator[bytes], study: str | None = None) -> Stored:
        """:meth:`spool` then :meth:`store_whole` one instance."""
        return await self.store_whole(await self.spool(chunks), study)

    async def receive(self, chunks: AsyncIterator[bytes], study: str | None = None) -> Upload:
        """Stream one instance to the upload area and check it; nothing is stored yet.

        ``study`` is the study the URL names. Raises :class:`StoreFailed`, leaving nothing
        behind; on success the caller must :meth:`commit` or :meth:`discard` the result.
        """
        return await self.check(await self.spool(chunks), study)

    async def spool(self, chunks: AsyncIterator[bytes]) -> Spooled:
        """Stream one instance into the upload area (:class:`StagingFile`: held in memory if
        small enough), for :meth:`check`; raises :class:`StoreFailed` (a full disk) or the
        stream's error, leaving nothing behind."""
        staging = self.upload()
        try:
            async for chunk in chunks:
                _writing(staging.write, chunk)
        except BaseException:
            self.abandon(staging)
            raise
        return self.spooled(staging)

    def upload(self) -> StagingFile:
        """A new upload, for :meth:`spooled` once its bytes are all written, or
        :meth:`abandon`. A write's OSError is a full disk."""
        staging = self.archive.new_upload()
        self._uploads.add(staging.path)
        return staging

    def arriving(self) -> Arriving:
        """An instance whose pieces the caller writes as it reads them (:mod:`.arriving`)."""
        return Arriving(self, self.upload())

    def spooled(self, staging: StagingFile) -> Spooled:
        """An :meth:`upload` whose bytes are all there, for :meth:`check`; raises
        :class:`StoreFailed` (a full disk), leaving nothing behind."""
        try:
            return _writing(staging.close)
        except BaseException:
            self.abandon(staging)
            raise

    def abandon(self, staging: StagingFile) -> None:
        """An :meth:`upload` that will not be stored, and what of it was written."""
        staging.abandon()
        self._uploads.discard(staging.path)

    async def check(self, incoming: Spooled, study: str | None = None) -> Upload:
        """Parse, hash and flush a :meth:`spool`-ed upload: the second half of :meth:`receive`,
        which may run while the next upload of a request streams in."""
        prepared = await self._outliving(
            self._prepared(incoming), incoming, self._prepared_for_none
        )
        self._require_study(prepared, study)
        return prepared

    async def _outliving(
        self,
        work: Awaitable[T],
        incoming: Spooled,
        orphaned: Callable[[Spooled, asyncio.Future], None],
    ) -> T:
        """``work`` on an upload, which goes on in a thread or a worker if its caller goes
        away (then ``orphaned`` cleans up once it is done); a failure removes the upload."""
        running = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:  # its caller went away, not the work
            running.add_done_callback(functools.partial(orphaned, incoming))
            raise
        except BaseException:
            self._remove_upload(incoming.path)
            raise

    def _require_study(self, prepared: Upload, study: str | None) -> None:
        """An instance sent to a study's URL must be of that study (PS3.18 10.5.1); one
        that is not is removed."""
        if study is not None and prepared.header.study_uid != study:
            self._remove_upload(prepared.path)
            raise StoreFailed(
                FailureReason.DATASET_DOES_NOT_MATCH,
                f"its StudyInstanceUID {prepared.header.study_uid} is not the study of "
                f"the URL, {study}",
                prepared.header,
            )

    def _prepared_for_none(self, incoming: Spooled, preparing: asyncio.Future) -> None:
        """Remove an upload whose caller went away once its preparation is done: it goes on
        in a thread or a worker, and may be writing the file yet."""
        if not preparing.cancelled():
            preparing.exception()  # retrieved: nobody waits for it any more
        self._remove_upload(incoming.path)

    def _prepare(self, incoming: Spooled) -> Awaitable[Upload]:
        """Prepare an upload in the worker processes, where concurrent uploads use every
        core and leave this process's GIL to the server; or, when it is the only upload in
        progress, in a thread here, where it is done sooner without the hand-over to a
        process and back. A query that comes in meanwhile waits for the GIL at most as long
        as parsing holds it."""
        if self._uploads == {incoming.path}:
            return asyncio.to_thread(prepare_spooled, incoming, self.archive.fsync)
        return self._prepare_elsewhere(incoming.path, incoming.held)

    async def _prepared(self, incoming: Spooled) -> Upload:
        with _preparation_failures():
            return await self._prepare(incoming)

    async def store_whole(self, incoming: Spooled, study: str | None = None) -> Stored:
        """:meth:`check` then :meth:`commit` an upload whose bytes are all there, as the
        last of its request (a C-STORE, a STOW-RS body of one instance). When it is the only
        upload in progress and no commit is waiting or running, its preparation and its
        placing run in one thread: one hand-over to a thread and back instead of two, about
        0.2 ms of an instance's 4 ms over one DICOM association (storescu, A/B of two
        servers: 233.4 against 263.2 per s). An upload that arrives meanwhile is prepared
        beside it and committed after it; an instance whose SOP Instance UID is stored
        already, or that is not of the ``study`` the request named, goes the usual way."""
        if self._uploads != {incoming.path} or self._to_commit or self._commit_lock.locked():
            return await self.commit(await self.check(incoming, study))
        upload, placed = await self._outliving(
            self._place_alone(incoming, study), incoming, self._placed_for_none
        )
        if placed is None:
            self._require_study(upload, study)
            return await self.commit(upload)
        if isinstance(placed, OSError):
            self._remove_upload(incoming.path)
            raise out_of_resources(placed, upload.header)
        return Stored(upload.header, already_present=False)

    async def _place_alone(
        self, incoming: Spooled, study: str | None
    ) -> tuple[Upload, sidecar.StoredInstance | OSError | None]:
        """Prepare and place a lone upload in one thread, holding the commit lock until it
        is indexed (a batch placed meanwhile could hold the same SOP Instance UID); None
        when nothing was placed: its SOP Instance UID is stored already, or it is not of
        the ``study`` the request named."""
        async with self._commit_lock:
            with _preparation_failures():
                upload, placed = await asyncio.to_thread(self._prepared_and_placed, incoming, study)
            if isinstance(placed, sidecar.StoredInstance):
                self.feed_changed.set()
                self.index.add(placed)
                self._uploads.discard(upload.path)
            return upload, placed

    def _prepared_and_placed(
        self, incoming: Spooled, study: str | None
    ) -> tuple[Upload, sidecar.StoredInstance | OSError | None]:
        upload = prepare_spooled(incoming, self.archive.fsync)
        header = upload.header
        if study not in (None, header.study_uid) or header.sop_uid in self.index.instances:
            return upload, None  # the index is only read: the commit lock is held
        (placed,) = self.archive.commit_uploads([upload])
        return upload, placed

    def _placed_for_none(self, incoming: Spooled, placing: asyncio.Future) -> None:
        """Once the placing of an upload whose caller went away is done: what was not
        placed is removed (what was is stored, and indexed)."""
        if placing.cancelled() or placing.exception() is not None:
            self._remove_upload(incoming.path)
            return
        upload, placed = placing.result()
        if not isinstance(placed, sidecar.StoredInstance):
            self._remove_upload(upload.path)

    def discard(self, received: Upload | Spooled) -> None:
        """Remove an upload that will not be committed, checked or not."""
        self._remove_upload(received.path)

    def _remove_upload(self, path: Path) -> None:
        self._uploads.discard(path)
        remove_upload(path)

    async def commit(self, received: Upload) -> Stored:
        """Move a received instance into the archive under the duplicate policy
        (:func:`decide`). Uploads whose commits wait together are committed together, one
        folder flush for all of them (:meth:`Archive.commit_uploads`), in order. Raises
        :class:`StoreFailed`."""
        stored = asyncio.get_running_loop().create_future()
        self._to_commit.append((received, stored))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        placed = False
        try:
            outcome = await stored
            placed = not outcome.already_present
            return outcome
        finally:
            if placed:  # renamed into the archive: nothing is left to delete
                self._uploads.discard(received.path)
            else:
                self.discard(received)

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
        for received, stored in self._to_commit:
            if stored.cancelled():  # its request went away; it removes its own upload
                continue
            sop = received.header.sop_uid
            (later if sop in seen else batch).append((received, stored))
            seen.add(sop)
        self._to_commit = later
        return batch

    async def _commit_batch(self, batch: list[Commit]) -> None:
        placing: list[Placing] = []
        for received, stored in batch:
            existing = self.index.instances.get(received.header.sop_uid)
            decision = decide(
                existing and existing.digest.hex(), received.digest, overwrite=self.overwrite
            )
            if decision.writes:
                placing.append((received, stored, existing))
            else:
                _settle(stored, _unwritten(decision, received.header))
        placing, kept = await self._keep_replaced(placing)
        if not placing:
            return
        uploads = [received for received, _, _ in placing]
        replacing = {received.header.sop_uid for received, _, old in placing if old is not None}
        results = await asyncio.to_thread(self.archive.commit_uploads, uploads, replacing)
        if any(kept):  # a hand-over to a thread costs ~70 us of CPU: none when nothing to seal
            await asyncio.to_thread(self._seal_replaced, kept, results)
        self.feed_changed.set()
        for (received, stored, existing), result in zip(placing, results, strict=True):
            if isinstance(result, OSError):
                _settle(stored, out_of_resources(result, received.header))
                continue
            if existing is not None:  # replaced (--overwrite): only now is the old copy dropped
                await self._drop_replaced(existing, received.header)
            self.index.add(result)
            _settle(stored, Stored(received.header, already_present=False))

    async def _keep_replaced(
        self, placing: list[Placing]
    ) -> tuple[list[Placing], list[tuple[str, Path] | None]]:
        """Link each instance about to be replaced into a pending trash entry (unless
        ``keep_removed`` is off); one that cannot be kept is not replaced (A700). The
        uploads to place, and beside each its pending entry, if any."""
        chosen: list[Placing] = []
        kept: list[tuple[str, Path] | None] = []
        for received, stored, existing in placing:
            pending = None
            if existing is not None and self.keep_removed:
                place = (existing.study, existing.series, existing.sop)
                keep = functools.partial(self.archive.trash.keep, *place, REPLACED)
                try:
                    pending = (existing.sop, await asyncio.to_thread(keep))
                except OSError as exc:
                    _settle(stored, out_of_resources(exc, received.header))
                    continue
            chosen.append((received, stored, existing))
            kept.append(pending)
        return chosen, kept

    def _seal_replaced(self, kept: list[tuple[str, Path] | None], results: list) -> None:
        """Finish the trash entry of each replaced instance, or drop it if the new one was
        not placed (blocking)."""
        for pending, result in zip(kept, results, strict=True):
            if pending is None:
                continue
            sop, entry = pending
            if isinstance(result, OSError):
                self.archive.trash.drop(entry)
            else:
                name = self.archive.trash.seal(entry)
                logger.info("trash: the replaced copy of %s is kept in .trash/%s", sop, name)

    async def _drop_replaced(self, existing: InstanceRecord, header: Header) -> None:
        self.index.remove_instance(existing.sop)
        if (existing.study, existing.series) == (header.study_uid, header.series_uid):
            await asyncio.to_thread(self.archive.remove_thumbnails, existing.sop)
        else:
            await self._forget([existing])


def _unwritten(decision: Decision, header: Header) -> Stored | StoreFailed:
    """The outcome of an instance that is not written (see :func:`decide`)."""
    if decision is Decision.ALREADY_PRESENT:
        return Stored(header, already_present=True)
    remedy = "delete it first, or start the server with --overwrite"
    message = conflict_message(header.sop_uid, remedy)
    return StoreFailed(FailureReason.DUPLICATE_SOP_INSTANCE, message, header)


def _representative(record: Record | Match) -> InstanceRecord:
    """The instance whose sidecar supplies a record's attributes not kept in memory."""
    if isinstance(record, Match):
        record = record.witness or record.record
    if isinstance(record, StudyRecord):
        record = next(iter(record.series.values()))
    if isinstance(record, SeriesRecord):
        return next(iter(record.instances.values()))
    return record


def _thumbnail_key(record: InstanceRecord, key: str) -> str:
    """Cached thumbnails are named by content too: a replaced instance never shows old ones."""
    return f"{record.digest.hex()[:16]}.{key}"


def _settle(stored: asyncio.Future[Stored], outcome: Stored | StoreFailed) -> None:
    """Give a commit's caller its outcome, unless it went away meanwhile."""
    if stored.done():
        return
    if isinstance(outcome, StoreFailed):
        stored.set_exception(outcome)
    else:
        stored.set_result(outcome)


@contextlib.contextmanager
def _preparation_failures() -> Iterator[None]:
    """Why an upload could not be prepared, as the failure of its store."""
    try:
        yield
    except NotDicom as exc:
        raise StoreFailed(
            FailureReason.CANNOT_UNDERSTAND,
            f"not stored: {exc}",
            sop_class_uid=exc.sop_class_uid,
            sop_uid=exc.sop_uid,
        ) from exc
    except BrokenExecutor as exc:  # a worker died, maybe on another request's data
        raise StoreFailed(
            FailureReason.PROCESSING_FAILURE,
            "not stored: the process parsing it stopped; send it again",
        ) from exc
    except OSError as exc:  # writing the sidecar
        raise out_of_resources(exc) from exc


def _writing(function: Callable[..., Any], *args: Any) -> Any:
    """Call a file operation of an upload; its OSError is the archive's failure (A700)."""
    try:
        return function(*args)
    except OSError as exc:
        raise out_of_resources(exc) from exc
