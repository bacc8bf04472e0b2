"""Pixel work runs in the worker pool, never on the event loop; bulk data honours Range;
the pool gives light work a thread while it starts, returns each call's outcome (whatever
its callers do meanwhile), and replaces a worker that dies.

The event loop test drives a real server (``localdicom serve`` in a subprocess, with its
process pool) from threads: while several slow JPEG 2000 decodes are running, QIDO requests
from another thread must be answered, many more of them than there are decodes. The test
orders events (requests sent, answers received); it does not time them.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from localdicom.dicom.header import NotDicom
from localdicom.workers import SHARED_BYTES, Workers
from tests.helpers import SAMPLES, process_tree
from tests.helpers.http import url_path
from tests.helpers.live import LiveServer, request, stow_file

JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
UNCOMPRESSED = 'multipart/related; type="application/octet-stream"'
SIZE = 2048
#: A decode shorter than this leaves too few queries room to be answered while it runs.
MIN_DECODE_SECONDS = 0.3
CONCURRENT_FRAME_REQUESTS = 4
#: Queries that must be answered while every frame request waits for its decode. A loop that
#: ran the decodes itself could answer one query between two decodes at most, fewer than
#: there are decodes; a free loop answers dozens (a query is tens of milliseconds, a decode
#: most of a second, on a 2-CPU machine with both workers busy).
MINIMUM_QUERIES = 2 * CONCURRENT_FRAME_REQUESTS


# the event loop stays free -----------------------------------------------------------------


@dataclass(frozen=True)
class BigInstance:
    path: Path
    dataset: Dataset
    decode_seconds: float

    @property
    def frame_url(self) -> str:
        ds = self.dataset
        return (
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/frames/1"
        )


def big_jpeg_2000(path: Path) -> Dataset:
    """A 2048x2048 16-bit image (smooth shapes plus noise), JPEG 2000 lossless, at ``path``."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    noise = np.random.default_rng(7).integers(0, 4096, (SIZE, SIZE))
    pixels = ((np.sin(x / 50) + np.cos(y / 70)) * 8000 + 20000 + noise).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.compress(JPEG_2000_LOSSLESS)
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.fixture(scope="module")
def big_instance(tmp_path_factory: pytest.TempPathFactory) -> BigInstance:
    path = tmp_path_factory.mktemp("big") / "big-j2k.dcm"
    ds = big_jpeg_2000(path)
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        pixel_array(path)
        timings.append(time.perf_counter() - start)
    return BigInstance(path, ds, min(timings))


#: Numbers events (a request sent, an answer received) in the order they happen, across
#: threads: itertools.count hands out each number once.
EVENTS = itertools.count()


@dataclass(frozen=True)
class Exchange:
    """One request: the numbers of its sending and of its answer's arrival, in EVENTS."""

    sent: int
    answered: int
    status: int
    size: int


def exchange(url: str, accept: str) -> Exchange:
    sent = next(EVENTS)
    reply = request(url, accept=accept)
    return Exchange(sent, next(EVENTS), reply.status, len(reply.body))


def queries_during(
    server: LiveServer, instance: BigInstance, count: int
) -> tuple[list[Exchange], list[Exchange]]:
    """Start ``count`` uncompressed-frame requests, and QIDO repeatedly until they are done.

    Returns (frame requests, QIDO requests), each numbered in the order of events.
    """
    frames_url = server.url + instance.frame_url
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(exchange, frames_url, UNCOMPRESSED) for _ in range(count)]
        time.sleep(0.05)  # let the frame requests reach the server first
        queries = []
        done = threading.Event()
        while not done.is_set():
            queries.append(exchange(f"{server.url}/studies", "application/dicom+json"))
            done.wait(0.02)
            if all(future.done() for future in futures):
                done.set()
        frames = [future.result() for future in futures]
    return frames, queries


def assert_loop_was_free(frames: list[Exchange], queries: list[Exchange]) -> None:
    assert all(frame.status == 200 for frame in frames), frames
    assert all(frame.size > SIZE * SIZE * 2 for frame in frames), frames  # 8 MiB each + heads
    assert all(query.status == 200 for query in queries), queries
    last_frame_sent = max(frame.sent for frame in frames)
    first_frame_answered = min(frame.answered for frame in frames)
    # sent after every frame request and answered before any frame: while every decode ran
    during = [q for q in queries if last_frame_sent < q.sent and q.answered < first_frame_answered]
    assert len(during) >= MINIMUM_QUERIES, (
        f"only {len(during)} of {len(queries)} queries were answered while "
        f"{len(frames)} frames were decoded",
        frames,
    )


def store_big(server: LiveServer, instance: BigInstance) -> None:
    if instance.decode_seconds < MIN_DECODE_SECONDS:
        pytest.skip(f"one decode takes {instance.decode_seconds:.2f} s: too fast to measure")
    reply = stow_file(server.url, instance.path)
    assert reply.status == 200, reply.text


@pytest.mark.slow
def test_queries_are_answered_while_frames_are_decoded(
    live_server: LiveServer, big_instance: BigInstance
) -> None:
    store_big(live_server, big_instance)
    warm_up = exchange(live_server.url + big_instance.frame_url, UNCOMPRESSED)
    assert warm_up.status == 200

    frames, queries = queries_during(live_server, big_instance, CONCURRENT_FRAME_REQUESTS)

    assert_loop_was_free(frames, queries)


@pytest.mark.slow
def test_first_pixel_request_does_not_block_queries(
    live_server: LiveServer, big_instance: BigInstance
) -> None:
    store_big(live_server, big_instance)

    frames, queries = queries_during(live_server, big_instance, CONCURRENT_FRAME_REQUESTS)

    assert_loop_was_free(frames, queries)


# bulk data ranges --------------------------------------------------------------------------


async def pixel_data_uri(client, path: Path) -> tuple[str, bytes]:
    """Store ``path``; the path of its Pixel Data BulkDataURI and the value pydicom reads."""
    response = await client.post(
        "/studies", data=path.read_bytes(), headers={"Content-Type": "application/dicom"}
    )
    assert response.status == 200, await response.text()
    ds = pydicom.dcmread(path)
    url = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/metadata"
    )
    response = await client.get(url)
    assert response.status == 200
    (document,) = await response.json(content_type=None)
    return url_path(document["7FE00010"]["BulkDataURI"]), ds.PixelData


async def get_range(client, url: str, byte_range: str | None):
    headers = {"Accept": "application/octet-stream"}
    if byte_range is not None:
        headers["Range"] = byte_range
    response = await client.get(url, headers=headers)
    return response, await response.read()


@pytest.fixture(params=["CT_small.dcm", "image_dfl.dcm"], ids=["positioned", "deflated"])
def bulk_file(request: pytest.FixtureRequest) -> Path:
    """A file whose pixel data is read at its offset, and one it must be inflated from."""
    path = get_testdata_file(request.param)
    if path is None:
        pytest.skip(f"{request.param} is not installed (pydicom-data)")
    return Path(path)


@pytest.mark.parametrize(
    ("byte_range", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-100", 100, 100),
        ("bytes=1000-", 1000, None),
        ("bytes=-64", -64, None),
        ("bytes=10-99999999", 10, None),  # a last byte past the end is the end
    ],
)
async def test_bulk_data_range(client, bulk_file: Path, byte_range: str, first, last) -> None:
    url, value = await pixel_data_uri(client, bulk_file)
    length = len(value)
    start = first % length
    stop = length - 1 if last is None else last

    response, body = await get_range(client, url, byte_range)

    assert response.status == 206, (response.status, body[:200])
    assert response.headers["Content-Range"] == f"bytes {start}-{stop}/{length}"
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert body == value[start : stop + 1]


async def test_bulk_data_without_range_is_whole(client, bulk_file: Path) -> None:
    url, value = await pixel_data_uri(client, bulk_file)
    response, body = await get_range(client, url, None)
    assert response.status == 200
    assert response.headers.get("Accept-Ranges") == "bytes"
    assert body == value


@pytest.mark.parametrize("byte_range", ["bytes=99999999-", "bytes=99999999-100000000"])
async def test_unsatisfiable_range_is_416(client, bulk_file: Path, byte_range: str) -> None:
    url, value = await pixel_data_uri(client, bulk_file)
    response, _ = await get_range(client, url, byte_range)
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{len(value)}"


async def test_zero_length_suffix_range_is_416(client) -> None:
    """RFC 9110 14.1.1: a suffix-range of length zero is not satisfiable."""
    url, _ = await pixel_data_uri(client, Path(get_testdata_file("CT_small.dcm")))
    response, _ = await get_range(client, url, "bytes=-0")
    assert response.status == 416, (response.status, response.headers.get("Content-Range"))


async def test_range_at_the_last_byte(client) -> None:
    url, value = await pixel_data_uri(client, Path(get_testdata_file("CT_small.dcm")))
    last = len(value) - 1
    response, body = await get_range(client, url, f"bytes={last}-{last}")
    assert response.status == 206
    assert body == value[-1:]
    response, _ = await get_range(client, url, f"bytes={last + 1}-")
    assert response.status == 416


async def test_multipart_bulk_data_is_the_whole_value(client) -> None:
    """The default (multipart) form has no ranges: one part, the whole value."""
    url, value = await pixel_data_uri(client, Path(get_testdata_file("CT_small.dcm")))
    response = await client.get(url, headers={"Range": "bytes=0-9"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("multipart/related")
    assert value in await response.read()


# the pool itself ----------------------------------------------------------------------------


def _die() -> None:
    """What a codec crashing on hostile data does to a worker."""
    os.kill(os.getpid(), signal.SIGKILL)


async def test_light_work_runs_in_a_thread_until_the_pool_is_up() -> None:
    workers = Workers(1)
    try:
        assert await workers.run_or_thread(os.getpid) == os.getpid()  # no waiting for the pool
        for _ in range(100):  # it was started meanwhile
            if await workers.run_or_thread(os.getpid) != os.getpid():
                break
            await asyncio.sleep(0.1)
        assert await workers.run_or_thread(os.getpid) != os.getpid()
    finally:
        workers.close()


async def test_a_dead_worker_fails_its_call_and_is_replaced() -> None:
    workers = Workers(1)
    try:
        first = await workers.run(os.getpid)
        with pytest.raises(BrokenProcessPool):
            await workers.run(_die)
        second = await workers.run(os.getpid)
        assert second not in (first, os.getpid())
    finally:
        workers.close()


async def test_a_worker_that_died_while_idle_is_replaced_before_a_call() -> None:
    workers = Workers(1)
    try:
        first = await workers.run(os.getpid)
        os.kill(first, signal.SIGKILL)  # as the OOM killer would, between two calls
        deadline = time.monotonic() + 10
        while _alive({first}) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        second = await workers.run(os.getpid)  # no BrokenProcessPool: nothing was running
        assert second not in (first, os.getpid())
    finally:
        workers.close()


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not picklable")


def _raise(exception: Exception) -> None:
    raise exception


def _fail_unpicklably() -> None:
    raise Unpicklable("codec said no")


async def test_an_exception_comes_back_as_raised_with_where_it_was_raised() -> None:
    workers = Workers(1)
    try:
        with pytest.raises(NotDicom, match="no preamble") as raised:
            await workers.run(_raise, NotDicom("no preamble"))
        assert "_raise" in str(raised.value.__cause__)  # the worker's traceback
        with pytest.raises(RuntimeError, match="codec said no"):
            await workers.run(_fail_unpicklably)
        assert await workers.run(os.getpid) != os.getpid()  # the worker is still there
    finally:
        workers.close()


async def test_calls_beyond_the_pool_size_wait_and_each_gets_its_own_answer() -> None:
    workers = Workers(2)
    try:
        answers = await asyncio.gather(*(workers.run(sum, [n, 1000]) for n in range(40)))
        assert answers == [n + 1000 for n in range(40)]
    finally:
        workers.close()


async def test_a_large_answer_comes_back_whole() -> None:
    workers = Workers(1)
    data = os.urandom(3 * 1024 * 1024) * 8  # 24 MB, more than is read ahead
    try:
        assert await workers.run(bytes, data) == data
    finally:
        workers.close()


def _received(label: str, data: memoryview) -> tuple[str, str, bool, str]:
    """What a worker was given: a view of page-aligned memory (aligned if a view of it
    starting one byte in still fits in a page), and its digest."""
    start = np.frombuffer(data, dtype=np.uint8).ctypes.data if len(data) else 0
    return label, type(data).__name__, start % mmap.PAGESIZE == 0, _digest(data)


def _digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_shared_bytes_reach_the_worker_as_a_page_aligned_view_after_its_arguments() -> None:
    """Through the memory shared with each worker where Linux gives memfd_create, pickled
    along with the call where they do not fit; either way a view of page-aligned memory
    (O_DIRECT writes need it), each call its own, with two workers taking turns."""
    workers = Workers(2)
    small = [[os.urandom(100_000 + n), os.urandom(n)] for n in range(12)]
    large = [os.urandom(SHARED_BYTES), b"1"]
    try:
        answers = await asyncio.gather(
            *(workers.run(_received, str(n), shared=chunks) for n, chunks in enumerate(small)),
            workers.run(_received, "large", shared=large),
        )
    finally:
        workers.close()
    assert answers == [
        *((str(n), "memoryview", True, _digest(b"".join(c))) for n, c in enumerate(small)),
        ("large", "memoryview", True, _digest(b"".join(large))),
    ]


async def test_shared_bytes_reach_a_thread_the_same_way_while_workers_start() -> None:
    workers = Workers(1)
    chunks = [os.urandom(5000), os.urandom(7)]
    try:
        answer = await workers.run_or_thread(_received, "early", shared=chunks)
        await workers.run(os.getpid)  # the worker it started is up before it is closed
    finally:
        workers.close()
    assert answer == ("early", "memoryview", True, _digest(b"".join(chunks)))


async def test_a_call_whose_caller_went_away_is_finished_before_the_next() -> None:
    """The worker's answer to an abandoned call must not become the answer of the next."""
    workers = Workers(1)
    try:
        await workers.run(os.getpid)  # started
        abandoned = asyncio.ensure_future(workers.run(_sleep_then_return, 0.5, "abandoned"))
        await asyncio.sleep(0.1)
        abandoned.cancel()
        answer = workers.run(_sleep_then_return, 0, "next")
        assert await asyncio.wait_for(answer, 10) == "next"  # not stuck, not "abandoned"
    finally:
        workers.close()


def _sleep_then_return(seconds: float, value: str) -> str:
    time.sleep(seconds)
    return value


@pytest.mark.slow
async def test_closed_workers_exit() -> None:
    workers = Workers(2)
    pids = set(await asyncio.gather(*(workers.run(_sleep_then_return_pid) for _ in range(2))))
    assert len(pids) == 2
    workers.close()
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _alive(pids)


def _sleep_then_return_pid() -> int:
    time.sleep(0.2)  # both workers busy at once: two processes
    return os.getpid()


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


@pytest.mark.slow
def test_a_killed_server_leaves_no_worker_behind(live_server: LiveServer) -> None:
    """SIGKILL gives the server no chance to stop its workers: they and the forkserver must
    still go (before, each such kill left ~170 MB of processes)."""
    sample = SAMPLES / "blue-circle.dcm"
    assert stow_file(live_server.url, sample).status == 200
    ds = pydicom.dcmread(sample, stop_before_pixels=True)
    rendered = (
        f"{live_server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/rendered"
    )
    assert request(rendered, accept="image/png").status == 200  # the pool is up now
    assert live_server.process is not None
    pid = live_server.process.pid
    processes = set(process_tree(pid)) - {pid}
    assert len(processes) >= 3, "a forkserver and its workers"
    live_server.process.kill()
    live_server.process.wait(timeout=10)
    live_server.process = None
    deadline = time.monotonic() + 10
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(processes)


WORKER_OF = """
import os, sys, time
from localdicom.workers import exit_with
if sys.argv[1] == "without pidfd":  # as on macOS
    del os.pidfd_open
exit_with(int(sys.argv[2]))
time.sleep(60)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["with pidfd", "without pidfd"])
def test_exit_with_ends_the_worker_soon_after_the_server(how: str) -> None:
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    worker = subprocess.Popen([sys.executable, "-c", WORKER_OF, how, str(server.pid)])
    try:
        server.wait()
        assert worker.wait(timeout=10) == 0  # not the 60 s it would sleep
    finally:
        worker.kill()
