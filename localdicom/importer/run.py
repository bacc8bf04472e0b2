"""One import: the sources walked, batches handed to a pool of worker processes
(:mod:`.examine`), and what they found taken by one committer, this process, into a sink
(:mod:`.sinks`). Only the parent decides and commits: the duplicate policy needs to know
every SOP Instance UID already stored, including those stored a moment ago by another
worker, so one committer keeps that decision race-free without locks.

Every write is atomic (a copy is renamed into place), so an interrupted import leaves whole
instances and leftovers in the upload area that the next import or server start removes; a
re-run finds what is already there (identical bytes) and stores only what is missing.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from localdicom.archive import Archive, archive_lock, running_server, server_token
from localdicom.console import stopping_on_signals
from localdicom.deid import Deidentifier, Deidentify, KeyFileError, Pseudonym
from localdicom.importer.examine import (
    Examined,
    Kind,
    Plan,
    Transfer,
    examine_batch,
    why,
    worker_init,
)
from localdicom.importer.report import ImportReport, NoProgress, Progress
from localdicom.importer.sinks import DirectSink, Sink, StowSink
from localdicom.importer.sources import Collected, Source, collect, locate, referenced
from localdicom.importer.stow_client import StowClient, connect

#: Files per task sent to a worker: fewer round trips without starving the progress bar.
BATCH_FILES = 8


class CannotImport(Exception):
    """The import cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class ImportOptions:
    transfer: Transfer = Transfer.COPY
    overwrite: bool = False
    workers: int | None = None
    #: Flush each instance to disk as the server does; otherwise one sync at the end.
    fsync: bool = False
    deidentify: Deidentify | None = None
    #: With ``overwrite``, move each replaced instance to the trash rather than delete it.
    keep_replaced: bool = True


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
    deidentifier = _deidentifier(options, archive_root)
    archive = Archive(archive_root, fsync=options.fsync)
    archive.prepare()
    started = time.perf_counter()
    server = running_server(archive)
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(_sink(archive, server, options))
        report = ImportReport(archive_root, server=server)
        run = _Run(archive, sink, report, options, progress, deidentifier)
        try:
            run.execute(collect(paths, archive_root))
        finally:
            _record_patients(options, run.patients, report)
        if server is None and not options.fsync and report.stored:
            os.sync()  # one flush for the whole import instead of one per file
    report.seconds = time.perf_counter() - started
    if server is None and running_server(archive) is not None:
        report.notes.append(
            "A server started on this archive during the import: restart it, or run the "
            "import again, so that it sees every instance."
        )
    return report


def _deidentifier(options: ImportOptions, archive_root: Path) -> Deidentifier | None:
    deid = options.deidentify
    if deid is None:
        return None
    if options.transfer is not Transfer.COPY:
        raise CannotImport(
            f"--deidentify stores new files made from the sources: --{options.transfer.value} "
            "does not apply"
        )
    try:
        return deid.open([("the archive", archive_root)])
    except KeyFileError as exc:
        raise CannotImport(str(exc)) from None


def _record_patients(
    options: ImportOptions, patients: dict[str, Pseudonym], report: ImportReport
) -> None:
    """Add the patients met to the key file's map (the pseudonyms are derived from its
    secret, so a map that could not be written loses nothing but the record)."""
    if options.deidentify is not None and (note := options.deidentify.record(patients.values())):
        report.notes.append(note)


@contextlib.contextmanager
def _sink(archive: Archive, server: str | None, options: ImportOptions) -> Iterator[Sink]:
    """Straight into the archive, holding it against other imports, when no server runs;
    else through the server."""
    if server is None:
        with archive_lock(archive.root):
            keep = options.keep_replaced
            sink = DirectSink(archive, options.transfer, options.overwrite, keep_replaced=keep)
            yield sink
            sink.snapshot.save()
        return
    _check_answers(archive, server)
    threads = max(4, options.workers or os.cpu_count() or 1)
    client = StowClient(server, server_token(archive))
    with StowSink(client, options.transfer, options.overwrite, threads) as sink:
        yield sink


@contextlib.contextmanager
def ingest_sink(archive_root: Path, options: ImportOptions) -> Iterator[tuple[Sink, str | None]]:
    """The sink an import stores through, for the other commands that bring instances in
    (``pull``): straight into the archive under its lock, or through the server running on
    it (whose URL comes second); the archive is created if absent."""
    archive = Archive(archive_root, fsync=options.fsync)
    archive.prepare()
    server = running_server(archive)
    with _sink(archive, server, options) as sink:
        yield sink, server


def _check_answers(archive: Archive, url: str) -> None:
    """Refuse to start when the announced server does not answer, rather than count every
    file as an error (a hung server, or its pid reused after a crash)."""
    connection = connect(url, timeout=10)
    try:
        connection.request("GET", "/studies?limit=1")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException) as exc:
        raise CannotImport(
            f"{archive.server_file} names a server at {url} that does not answer "
            f"({why(exc)}); stop it, or delete that file if no server runs"
        ) from None
    finally:
        connection.close()


class _Run:
    """One import: a queue of sources, a pool of workers, one committer (this thread)."""

    def __init__(
        self,
        archive: Archive,
        sink: Sink,
        report: ImportReport,
        options: ImportOptions,
        progress: Progress,
        deidentifier: Deidentifier | None = None,
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
        #: --deidentify: the patients met, by pseudonym, for the key file's map.
        self.patients: dict[str, Pseudonym] = {}
        self.plan = Plan(
            archive=archive.root.resolve(),
            staging=sink.staging,
            transfer=options.transfer,
            stow=sink.stow,
            device=archive.root.stat().st_dev,
            deidentifier=deidentifier,
            reject_burned_in=bool(options.deidentify and options.deidentify.reject_burned_in),
            fsync=options.fsync,
        )

    def execute(self, collected: Collected) -> None:
        self.report.not_dicom += collected.not_dicom
        self.report.errors += collected.errors
        self.report.notes += collected.notes
        self._enqueue(collected.sources)
        self.progress.advance(len(collected.not_dicom) + len(collected.errors), 0)
        pool = ProcessPoolExecutor(self.workers, initializer=worker_init)
        try:
            with stopping_on_signals(self._request_stop):
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
                        item.discard()
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
        if item.patient is not None:
            self.patients.setdefault(
                item.patient.patient_id or item.patient.pseudonym, item.patient
            )
        if item.review and item.header is not None:
            where = f"stored as series {item.header.series_uid}: {item.review}"
            report.review.append((str(item.source), where))
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
        elif item.kind is Kind.REFUSED:
            report.refused.append((str(item.source), f"--reject-burned-in: {item.reason}"))
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
            reference = referenced(source, parts)
            if reference.key in self.known:
                continue
            located = locate(reference)
            if located is None:
                self.report.errors.append((str(reference), f"listed in {source} but not found"))
                self.progress.add_total(1)
                self.progress.advance(1, 0)
            else:
                found.append(located)
        self._enqueue(found)
