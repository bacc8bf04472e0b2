"""``localdicom pull``: the selected instances of a remote, as it stores them, into the
archive through the import's sink (:mod:`.intake`).

From DICOMweb: QIDO-RS to list the instances (:mod:`.plan`), then WADO-RS of each with
``transfer-syntax=*`` (PS3.18 8.7.3.5.2), ``jobs`` at once. From a DICOM node: C-FIND and
C-GET (or C-MOVE, :mod:`.dimse`). An instance the record says was pulled, and that the
archive still holds with the same digest, is not fetched again.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from localdicom.archive import Layout, TransferRecord, open_record
from localdicom.console import stopping_on_signals
from localdicom.importer import (
    ImportOptions,
    NoProgress,
    Progress,
    ingest_sink,
)
from localdicom.selection import Selection
from localdicom.transfer.dicomweb import DicomwebClient, RemoteError
from localdicom.transfer.intake import Expected, Intake
from localdicom.transfer.options import TransferOptions
from localdicom.transfer.plan import Announced, WholeSeries, announced, instances_of
from localdicom.transfer.received import Received
from localdicom.transfer.remote import Credentials, DicomNode
from localdicom.transfer.report import TransferReport
from localdicom.transfer.running import Stop, is_pulled


def pull(
    address: str,
    node: DicomNode | None,
    archive_root: Path,
    selection: Selection,
    credentials: Credentials,
    options: TransferOptions,
    progress: Progress | None = None,
) -> TransferReport:
    """Pull the selection from the remote at ``address`` into the archive at ``archive_root``."""
    progress = progress or NoProgress()
    report = TransferReport(archive_root, verb="Pulled", remote=address, hide=credentials.hide)
    record = open_record(archive_root, address)
    started = time.perf_counter()
    stop = Stop()
    try:
        with stopping_on_signals(stop):
            if node is not None:
                from localdicom.transfer.dimse import pull_dimse  # pynetdicom: for DICOM only

                pull_dimse(node, archive_root, selection, options, report, record, progress, stop)
            else:
                asyncio.run(
                    _pull_dicomweb(
                        address,
                        archive_root,
                        selection,
                        credentials,
                        options,
                        report,
                        record,
                        progress,
                        stop,
                    )
                )
    finally:
        if not options.dry_run:
            record.save()
    report.interrupted = report.interrupted or stop.requested
    report.seconds = time.perf_counter() - started
    return report


async def _pull_dicomweb(
    address: str,
    archive_root: Path,
    selection: Selection,
    credentials: Credentials,
    options: TransferOptions,
    report: TransferReport,
    record: TransferRecord,
    progress: Progress,
    stop: Stop,
) -> None:
    client = DicomwebClient(
        address, credentials, options.tls, options.jobs, backoff=options.backoff
    )
    try:
        layout = Layout(archive_root)
        try:
            instances, whole = await announced(client, selection, _absent(layout))
        except RemoteError as exc:
            report.errors.append((address, str(exc)))
            return
        pulled = record.digests("pulled")
        missing = [each for each in instances if not is_pulled(layout, each, pulled)]
        report.duplicates += len(instances) - len(missing)
        if options.dry_run:
            report.dry_run += [each.path.lstrip("/") for each in missing]
            report.dry_run += [
                f"{each.path.lstrip('/')} ({each.count} instances)" for each in whole
            ]
            report.would_move = len(missing) + sum(each.count for each in whole)
            return
        progress.add_total(len(instances) + sum(each.count for each in whole))
        progress.advance(len(instances) - len(missing), 0)
        import_options = ImportOptions(overwrite=options.overwrite, fsync=options.fsync)
        with ingest_sink(archive_root, import_options) as (sink, server):
            report.server = server
            intake = Intake(
                sink, report, record, progress, lambda: layout.new_staging_file(sink.staging)
            )
            jobs: list[Job] = [*whole, *jobs_of(missing, instances)]
            await _fetch_all(client, layout, sink.staging, jobs, intake, options.jobs, stop)
        if server is None and report.stored and not options.fsync:
            os.sync()  # one flush for the whole pull, as import does
    finally:
        report.retries += client.retries
        await client.close()


def _absent(layout: Layout) -> Callable[[str, str], bool]:
    """Whether the archive has nothing of a series (then it comes whole, unlisted)."""

    def absent(study: str, series: str) -> bool:
        try:
            return not layout.series_dir(study, series).exists()
        except ValueError:  # not a UID: listed, and refused instance by instance
            return False

    return absent


#: What one fetcher does at a time: a series unlisted, a listed series whole, an instance.
Job = WholeSeries | list[Announced]


def jobs_of(missing: list[Announced], instances: list[Announced]) -> list[list[Announced]]:
    """What to fetch, in order: a series of which every instance is missing in one WADO-RS
    series retrieve (one answer instead of one per instance: several times faster), any
    other instance alone."""
    counts: dict[str, int] = {}
    for instance in instances:
        counts[instance.series] = counts.get(instance.series, 0) + 1
    groups: dict[str, list[Announced]] = {}
    for instance in missing:
        groups.setdefault(instance.series, []).append(instance)
    result: list[list[Announced]] = []
    for series, group in groups.items():
        whole = len(group) == counts[series] and len(group) > 1
        result += [group] if whole else [[instance] for instance in group]
    return result


#: Instances received and not stored yet, at most (the fetchers wait beyond): a few, so that
#: storing never waits on the network, each at most dicomweb.IN_MEMORY bytes in memory.
AHEAD = 8
#: Threads storing at once: one checks, hashes and writes an instance (which leaves the GIL)
#: while another stores the one before; the stores themselves take turns.
STORERS = 2


async def _fetch_all(
    client: DicomwebClient,
    layout: Layout,
    staging: Path,
    jobs: list[Job],
    intake: Intake,
    concurrency: int,
    stop: Stop,
) -> None:
    """``concurrency`` fetchers, each taking the next series or instance until none is left
    or a stop is asked for, reading on while what they received is being stored."""
    with ThreadPoolExecutor(STORERS, thread_name_prefix="storer") as storers:
        fetchers = _Fetchers(client, layout, staging, jobs, intake, storers)

        async def fetcher() -> None:
            while fetchers.queue and not stop.requested:
                await fetchers.run(fetchers.queue.popleft(), stop)

        try:
            await asyncio.gather(*(fetcher() for _ in range(max(1, concurrency))))
        finally:
            await fetchers.stored()


class _Fetchers:
    """What the fetchers share: the queue of jobs, the client, the storing threads."""

    def __init__(
        self,
        client: DicomwebClient,
        layout: Layout,
        staging: Path,
        jobs: list[Job],
        intake: Intake,
        storers: ThreadPoolExecutor,
    ) -> None:
        self.client = client
        self.layout = layout
        self.staging = staging
        self.queue = deque(jobs)
        self.intake = intake
        self.storers = storers
        self.loop = asyncio.get_running_loop()
        self.room = asyncio.Semaphore(AHEAD)
        self.storing: set[asyncio.Future[str | None]] = set()
        self.failures: list[BaseException] = []

    async def run(self, job: Job, stop: Stop) -> None:
        if isinstance(job, list) and len(job) == 1:
            await self.instance(job[0])
        else:
            await self.series(job, stop)

    async def store(self, received: Received, expected: Expected, label: str) -> asyncio.Future:
        """Hand an instance to the storing threads, once fewer than AHEAD are on their way;
        the future gives the SOP Instance UID it holds."""
        await self.room.acquire()
        future = self.loop.run_in_executor(
            self.storers, self.intake.take, received, expected, label
        )
        self.storing.add(future)
        future.add_done_callback(self._stored)
        return future

    def _stored(self, future: asyncio.Future) -> None:
        self.storing.discard(future)
        self.room.release()
        if not future.cancelled() and future.exception() is not None:
            self.failures.append(future.exception())

    async def stored(self) -> None:
        """Wait for every instance handed over to be stored; what went wrong unexpectedly
        in storing one (a bug, not a refused instance) is raised here, as it was before the
        storing went on beside the fetching."""
        while self.storing:
            await asyncio.wait(list(self.storing))
        if self.failures:
            raise self.failures[0]

    async def fail(self, label: str, reason: str) -> None:
        await self.loop.run_in_executor(self.storers, self.intake.fail, label, reason)

    def stage(self) -> Path:
        return self.layout.new_staging_file(self.staging)

    async def series(self, job: Job, stop: Stop) -> None:
        """A series in one answer; what it did not bring goes back in the queue, instance
        by instance (listed first if the series was not). A stop asked for ends the answer
        between two instances."""
        if isinstance(job, WholeSeries):
            path, expected = job.path, (job.study, job.series)
        else:
            path = f"/studies/{job[0].study}/series/{job[0].series}"
            expected = {instance.sop: instance.uids for instance in job}
        futures: list[asyncio.Future] = []

        async def take(received: Received) -> None:
            futures.append(await self.store(received, expected, path.lstrip("/")))
            if stop.requested:
                raise _Stopped

        try:
            stopped = await self.client.retrieve_series(path, self.stage, take)
        except _Stopped:
            stopped = "stopped"
        taken = set(await asyncio.gather(*futures))
        if stop.requested:
            return
        if stopped is None and (isinstance(job, WholeSeries) or len(taken) >= len(job)):
            return
        self.client.retries += 1  # the rest is asked for again, instance by instance
        try:
            rest = job if isinstance(job, list) else await _listed(self.client, job)
        except RemoteError as exc:
            await self.fail(path.lstrip("/"), str(exc))
            return
        self.queue.extend([instance] for instance in rest if instance.sop not in taken)

    async def instance(self, instance: Announced) -> None:
        label = instance.path.lstrip("/")
        try:
            received = await self.client.retrieve(instance.path, self.stage)
        except (RemoteError, OSError) as exc:  # OSError: the staging file (disk full)
            await self.fail(
                label, str(exc) if isinstance(exc, RemoteError) else f"not saved: {exc}"
            )
            return
        await self.store(received, instance.uids, label)


class _Stopped(Exception):
    """A stop asked for in the middle of a series' answer."""


async def _listed(client: DicomwebClient, series: WholeSeries) -> list[Announced]:
    """The instances of a series fetched whole whose answer was cut."""
    return instances_of(await client.search(series.path + "/instances", []), series)
