"""Where the catalog prepares an upload (parses, hashes, flushes it): in this process when it
is the only upload in progress, in the workers when others are, and after any failure
still by that rule. An upload held in memory or spilled to its file, and one whose caller
went away while it was prepared, leave nothing behind. How it commits uploads that wait
together: as one group, with the duplicate policy applied as if one after the other; and a
whole upload alone (a C-STORE's), prepared and placed in one thread."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pydicom
import pytest

from localdicom.archive import Archive, Upload
from localdicom.archive import archive as archive_module
from localdicom.archive import upload as upload_module
from localdicom.catalog import Catalog, FailureReason, Stored, StoreFailed
from localdicom.catalog import catalog as catalog_module
from tests.helpers import SAMPLES, prepare_here

SAMPLE = SAMPLES / "blue-circle.dcm"


class Elsewhere:
    """A stand-in for the worker processes that records what it was given."""

    def __init__(self) -> None:
        self.prepared: list[Path] = []

    async def __call__(self, path: Path, held: Sequence[bytes] | None) -> Upload:
        self.prepared.append(path)
        return await prepare_here(path, held)


@pytest.fixture
async def catalog(tmp_path: Path) -> tuple[Catalog, Elsewhere]:
    elsewhere = Elsewhere()
    catalog = Catalog(Archive(tmp_path / "archive", fsync=False), prepare=elsewhere)
    await catalog.open()
    return catalog, elsewhere


def instance(sop: str, **changes: str) -> bytes:
    ds = pydicom.dcmread(SAMPLE)
    ds.SOPInstanceUID = sop
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


async def chunks(
    data: bytes, pause: asyncio.Event | None = None, paused: asyncio.Event | None = None
) -> AsyncIterator[bytes]:
    """``data`` in two halves, waiting for ``pause`` to be set between them (and setting
    ``paused`` when it starts to wait)."""
    yield data[: len(data) // 2]
    if pause is not None:
        if paused is not None:
            paused.set()
        await pause.wait()
    yield data[len(data) // 2 :]


def assert_stored_as_sent(catalog: Catalog, sop: str, data: bytes) -> None:
    """The instance is in place byte for byte, indexed under the digest of those bytes, and
    nothing of it is left in the upload area."""
    record = catalog.index.instances[sop]
    assert catalog.path_of(record).read_bytes() == data
    assert record.digest.hex() == hashlib.sha256(data).hexdigest()
    assert list(catalog.archive.incoming.iterdir()) == []


async def test_an_upload_alone_is_prepared_here(catalog) -> None:
    catalog, elsewhere = catalog
    data = instance("1.2.826.0.1.3680043.8.498.100")
    stored = await catalog.store(chunks(data))
    assert elsewhere.prepared == []
    record = catalog.index.instances[stored.header.sop_uid]
    assert catalog.path_of(record).read_bytes() == data
    assert record.digest.hex() == hashlib.sha256(data).hexdigest()


async def test_uploads_in_progress_together_are_prepared_elsewhere(catalog) -> None:
    catalog, elsewhere = catalog
    pause, paused = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(
        catalog.receive(chunks(instance("1.2.826.0.1.3680043.8.498.101"), pause, paused))
    )
    await paused.wait()  # the first has begun to arrive
    second = await catalog.receive(chunks(instance("1.2.826.0.1.3680043.8.498.102")))
    pause.set()
    first_upload = await first
    assert elsewhere.prepared == [second.path, first_upload.path]  # the second was not alone
    for upload in (first_upload, second):
        await catalog.commit(upload)
    await catalog.store(chunks(instance("1.2.826.0.1.3680043.8.498.103")))
    assert len(elsewhere.prepared) == 2, "alone again once the others were stored"


async def test_a_failed_upload_leaves_the_next_alone(catalog) -> None:
    catalog, elsewhere = catalog
    with pytest.raises(StoreFailed):
        await catalog.store(chunks(b"not DICOM at all" * 100))
    upload = await catalog.receive(chunks(instance("1.2.826.0.1.3680043.8.498.104")))
    catalog.discard(upload)
    await catalog.store(chunks(instance("1.2.826.0.1.3680043.8.498.105")))
    assert elsewhere.prepared == []
    assert list(catalog.archive.incoming.iterdir()) == []


async def test_an_upload_too_large_to_hold_is_spilled_to_its_file_as_it_comes(
    catalog, monkeypatch
) -> None:
    catalog, _ = catalog
    data = instance("1.2.826.0.1.3680043.8.498.106")
    monkeypatch.setattr(upload_module, "HELD_BYTES", len(data) // 3)
    pause, paused = asyncio.Event(), asyncio.Event()
    storing = asyncio.create_task(catalog.store(chunks(data, pause, paused)))
    await paused.wait()
    (spilled,) = catalog.archive.incoming.iterdir()  # half of it, over the limit
    assert spilled.read_bytes() == data[: len(data) // 2]
    pause.set()
    stored = await storing
    assert_stored_as_sent(catalog, stored.header.sop_uid, data)


async def test_an_upload_held_in_memory_has_no_file_until_it_is_prepared(catalog) -> None:
    catalog, _ = catalog
    pause, paused = asyncio.Event(), asyncio.Event()
    receiving = asyncio.create_task(
        catalog.receive(chunks(instance("1.2.826.0.1.3680043.8.498.107"), pause, paused))
    )
    await paused.wait()
    assert list(catalog.archive.incoming.iterdir()) == []
    pause.set()
    upload = await receiving
    assert upload.path.is_file() and upload.sidecar is not None and upload.sidecar.is_file()
    catalog.discard(upload)
    assert list(catalog.archive.incoming.iterdir()) == []


async def test_an_upload_whose_caller_went_away_is_removed_once_prepared(tmp_path) -> None:
    """The preparation goes on in its thread or worker (it cannot be stopped there) and
    writes the file; the upload is removed after it, not before."""
    let_go, preparing, prepared = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(path: Path, held: Sequence[bytes] | None) -> Upload:
        preparing.set()
        await let_go.wait()
        try:
            return await prepare_here(path, held)
        finally:
            prepared.set()

    catalog = Catalog(Archive(tmp_path / "archive", fsync=False), prepare=slow)
    await catalog.open()
    await catalog.spool(chunks(instance("1.2.826.0.1.3680043.8.498.108")))  # not alone
    spooled = await catalog.spool(chunks(instance("1.2.826.0.1.3680043.8.498.109")))
    checking = asyncio.create_task(catalog.check(spooled))
    await preparing.wait()
    checking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await checking
    let_go.set()
    await prepared.wait()
    await asyncio.sleep(0)  # the removal runs as the preparation's done callback
    assert not spooled.path.exists()
    assert sorted(catalog.archive.incoming.iterdir()) == []


async def commit_together(catalog: Catalog, *datas: bytes) -> list[Stored | BaseException]:
    uploads = [await catalog.receive(chunks(data)) for data in datas]
    return await asyncio.gather(*map(catalog.commit, uploads), return_exceptions=True)


async def test_uploads_committed_together_flush_their_folder_once(tmp_path, monkeypatch) -> None:
    catalog = Catalog(Archive(tmp_path / "archive", fsync=True), prepare=Elsewhere())
    await catalog.open()
    flushed: list[Path] = []
    monkeypatch.setattr(archive_module, "fsync_path", flushed.append)
    sops = [f"1.2.826.0.1.3680043.8.498.11{n}" for n in range(3)]
    results = await commit_together(catalog, *map(instance, sops))
    assert all(isinstance(result, Stored) for result in results)
    series = catalog.path_of(catalog.index.instances[sops[0]]).parent
    assert flushed.count(series) == 1
    assert len(flushed) == len(set(flushed)), "the series folder and its new parents, once each"
    assert {catalog.path_of(catalog.index.instances[sop]).parent for sop in sops} == {series}


async def test_a_second_copy_in_the_same_group_meets_the_duplicate_policy(catalog) -> None:
    catalog, _ = catalog
    data = instance("1.2.826.0.1.3680043.8.498.120")
    other = instance("1.2.826.0.1.3680043.8.498.120", SeriesDescription="another")
    first, again, different = await commit_together(catalog, data, data, other)
    assert isinstance(first, Stored) and not first.already_present
    assert isinstance(again, Stored) and again.already_present
    assert isinstance(different, StoreFailed)
    assert different.reason == FailureReason.DUPLICATE_SOP_INSTANCE
    record = catalog.index.instances["1.2.826.0.1.3680043.8.498.120"]
    assert catalog.path_of(record).read_bytes() == data
    assert list(catalog.archive.incoming.iterdir()) == []


async def test_with_overwrite_the_last_copy_in_a_group_wins(catalog) -> None:
    catalog, _ = catalog
    catalog.overwrite = True
    data = instance("1.2.826.0.1.3680043.8.498.121")
    other = instance("1.2.826.0.1.3680043.8.498.121", SeriesDescription="another")
    results = await commit_together(catalog, data, other)
    assert [type(result) for result in results] == [Stored, Stored]
    record = catalog.index.instances["1.2.826.0.1.3680043.8.498.121"]
    assert catalog.path_of(record).read_bytes() == other
    assert record.digest.hex() == hashlib.sha256(other).hexdigest()


# a whole upload alone: prepared and placed in one thread ------------------------------------


async def test_a_whole_upload_alone_is_placed_in_the_thread_that_prepared_it(
    catalog, monkeypatch
) -> None:
    """No hand-over to the commit queue (Catalog.commit) for an instance stored first."""
    catalog, elsewhere = catalog

    async def no_queue(*_: object) -> None:
        raise AssertionError("a lone upload went through the commit queue")

    monkeypatch.setattr(catalog, "commit", no_queue)
    data = instance("1.2.826.0.1.3680043.8.498.120")
    stored = await catalog.store_whole(await catalog.spool(chunks(data)))
    assert not stored.already_present and elsewhere.prepared == []
    assert_stored_as_sent(catalog, stored.header.sop_uid, data)


async def test_a_whole_upload_of_a_stored_uid_meets_the_duplicate_policy(catalog) -> None:
    catalog, _ = catalog
    data = instance("1.2.826.0.1.3680043.8.498.121")
    await catalog.store_whole(await catalog.spool(chunks(data)))
    again = await catalog.store_whole(await catalog.spool(chunks(data)))
    assert again.already_present
    other = instance("1.2.826.0.1.3680043.8.498.121", PatientID="someone else")
    with pytest.raises(StoreFailed) as refused:
        await catalog.store_whole(await catalog.spool(chunks(other)))
    assert refused.value.reason == FailureReason.DUPLICATE_SOP_INSTANCE
    (record,) = catalog.index.instances.values()
    assert catalog.path_of(record).read_bytes() == data
    assert list(catalog.archive.incoming.iterdir()) == []


async def test_a_whole_upload_that_is_no_dicom_is_refused_and_leaves_nothing(catalog) -> None:
    catalog, _ = catalog
    with pytest.raises(StoreFailed) as refused:
        await catalog.store_whole(await catalog.spool(chunks(b"not DICOM at all" * 100)))
    assert refused.value.reason == FailureReason.CANNOT_UNDERSTAND
    assert list(catalog.archive.incoming.iterdir()) == [] and not catalog.index.instances


async def test_a_whole_upload_whose_caller_went_away_is_still_placed_and_indexed(
    catalog, monkeypatch
) -> None:
    """The thread cannot be stopped: what it placed is stored, so it is indexed too."""
    catalog, _ = catalog
    preparing, let_go = threading.Event(), threading.Event()
    real = catalog_module.prepare_spooled

    def slow(*args: object) -> Upload:
        preparing.set()
        let_go.wait(30)
        return real(*args)

    monkeypatch.setattr(catalog_module, "prepare_spooled", slow)
    data = instance("1.2.826.0.1.3680043.8.498.122")
    storing = asyncio.create_task(catalog.store_whole(await catalog.spool(chunks(data))))
    await asyncio.to_thread(preparing.wait, 30)
    storing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await storing
    let_go.set()
    async with asyncio.timeout(30):
        while not catalog.index.instances:
            await asyncio.sleep(0.01)
    (record,) = catalog.index.instances.values()
    assert catalog.path_of(record).read_bytes() == data
    assert list(catalog.archive.incoming.iterdir()) == []
