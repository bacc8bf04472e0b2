"""localdicom against Orthanc (+ DICOMweb and GDCM plugins), side by side in one run.

    python -m benchmarks.compare                 # the full workload (a few minutes)
    python -m benchmarks.compare --smoke         # a tiny one, as CI runs it
    python -m benchmarks.compare --only STOW     # only the operations so named

Generates a deterministic dataset, starts both servers on empty storage on loopback, stores
the same data in each, then runs every operation against both, alternating which goes first,
for several rounds. Every answer is verified (UIDs, byte hashes, frame hashes, query result
sets) and failures are counted, so an error never looks fast. The clock covers sending the
request and receiving the whole answer; request bodies are built before it starts and answers
are checked after it stops, so the client's own hashing and parsing neither adds the same cost
to both servers' figures nor competes with them for the CPU. Searches, and one of the whole
series reads, go over a bare socket instead of aiohttp's client, whose own cost per request
(about 0.4 ms) or per byte is as large as what is measured. Prints one table: Orthanc's
figure, localdicom's, and the ratio (higher is better for localdicom), medians over rounds.
A store has two more rows: the CPU time each server spent per item, and the cache flushes
the disk made per item while it stored (read from the kernel's counters of the whole disk:
nothing else should write meanwhile). The flushes have no ratio: they say how each server
makes what it acknowledges durable, which its rate pays for.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pydicom

from benchmarks.dataset import ct_slice, uid
from benchmarks.servers import Server, localdicom, orthanc

Check = Callable[[], None]  # raises AssertionError when an answer is wrong
Answer = tuple[int, bytes | memoryview, str]  # status, body, Content-Type
Request = Callable[[], Awaitable[Check]]  # the timed exchange; its answer checked afterwards
BareRequest = Callable[["BareConnection"], Check]  # the same over a bare socket, blocking
EXPLICIT_LE = "1.2.840.10008.1.2.1"
FRAME_ACCEPT = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'
MODALITIES = ("CT", "MR", "US", "CR", "MG")
DICOM_JSON = "application/dicom+json"
SERIES_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
READ_AHEAD = 1 << 22  # room kept free when reading a body of unknown length
RATE, CPU, FLUSHES = "items/s", "CPU ms/item", "flushes/item"
#: Each unit's field of a Figure, and the suffix of its row when an operation has several.
UNITS = {
    RATE: ("rate", ""),
    "ms p50": ("p50", "p50"),
    "ms p95": ("p95", "p95"),
    CPU: ("cpu", "server CPU"),
    FLUSHES: ("flushes", "disk flushes"),
}
#: What is shown of an operation that stores: its rate, and the server's CPU time and the
#: disk's cache flushes per item stored (the flushes say how each server makes what it
#: acknowledges durable, which the rate pays for).
STORED = (RATE, CPU, FLUSHES)


@dataclass
class Workload:
    """Sizes of the dataset; the defaults are the issue's, --smoke shrinks them."""

    studies: int = 10
    series: int = 2
    instances: int = 100
    metadata_instances: int = 200
    small_studies: int = 100
    compressed: int = 20
    #: STOW requests per server and round: at concurrency 8, enough for each client to send
    #: a dozen, so that the figure is the steady rate rather than the start and the tail.
    stow_each: int = 100
    rounds: int = 3
    #: Searches per query and round: p95 is then the fifth slowest, not one stall.
    queries: int = 100


@dataclass
class Dataset:
    """Files on disk plus what the verification needs to know about them."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)  # SOP UID -> file
    digests: dict[str, str] = field(default_factory=dict)  # SOP UID -> sha256 of the file
    pixels: dict[str, str] = field(default_factory=dict)  # SOP UID -> sha256 of LE pixels
    where: dict[str, tuple[str, str]] = field(default_factory=dict)  # SOP -> (study, series)
    studies: dict[str, dict] = field(default_factory=dict)  # study UID -> attributes
    series: dict[str, list[str]] = field(default_factory=dict)  # series UID -> SOP UIDs
    stow_batches: dict[str, list[list[str]]] = field(default_factory=dict)

    def add(self, ds: pydicom.Dataset, name: str) -> str:
        path = self.folder / f"{name}.dcm"
        if not path.exists():
            ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        sop = str(ds.SOPInstanceUID)
        self.files[sop] = path
        self.digests[sop] = hashlib.sha256(data).hexdigest()
        array = pydicom.dcmread(path).pixel_array
        self.pixels[sop] = hashlib.sha256(np.ascontiguousarray(array, "<u2").tobytes()).hexdigest()
        study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        self.where[sop] = (study, series)
        self.series.setdefault(series, []).append(sop)
        self.studies.setdefault(
            study,
            {
                "PatientID": ds.PatientID,
                "PatientName": str(ds.PatientName),
                "StudyDate": ds.StudyDate,
                "modalities": set(),
            },
        )["modalities"].add(ds.Modality)
        return sop


def build(workload: Workload, folder: Path) -> Dataset:
    folder.mkdir(parents=True, exist_ok=True)
    data = Dataset(folder)
    for s in range(workload.studies):
        for r in range(workload.series):
            for i in range(workload.instances):
                ds = ct_slice(f"big-{s}", f"big-{s}-{r}", i, patient=f"BIG{s:02d}^CT")
                data.add(ds, f"big-{s}-{r}-{i}")
    for i in range(workload.metadata_instances):
        data.add(ct_slice("meta", "meta-series", i, size=64), f"meta-{i}")
    for s in range(workload.small_studies):
        modality = MODALITIES[s % len(MODALITIES)]
        date = f"20{10 + s % 12:02d}{1 + s % 12:02d}{1 + s % 28:02d}"
        for r in range(1 + s % 2):
            ds = ct_slice(
                f"small-{s}",
                f"small-{s}-{r}",
                0,
                size=64,
                date=date,
                patient=f"P{s:03d}^{'ABCDE'[s % 5]}NAME",
                modality=modality,
            )
            data.add(ds, f"small-{s}-{r}")
    for syntax in ("j2k", "jls"):
        for i in range(workload.compressed):
            data.add(ct_slice(f"c-{syntax}", f"c-{syntax}", i, syntax=syntax), f"{syntax}-{i}")
    for mode, size in (("c1", 1), ("c8", 1), ("batch", 20)):
        requests = workload.stow_each if size == 1 else max(1, workload.stow_each // 10)
        sops = [
            data.add(ct_slice(f"stow-{mode}", f"stow-{mode}", k), f"stow-{mode}-{k}")
            for k in range(workload.rounds * 2 * requests * size)  # 2 servers
        ]
        data.stow_batches[mode] = [sops[i : i + size] for i in range(0, len(sops), size)]
    return data


# HTTP ------------------------------------------------------------------------------------


def boundary_of(content_type: str) -> bytes:
    for parameter in content_type.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"').encode()
    raise AssertionError(f"no boundary in {content_type!r}")


def parts(body: bytes, content_type: str) -> list[bytes]:
    """The bodies of a multipart/related response."""
    delimiter = b"--" + boundary_of(content_type)
    chunks = body.split(b"\r\n" + delimiter)
    chunks[0] = chunks[0].split(delimiter, 1)[1]
    return [chunk.split(b"\r\n\r\n", 1)[1] for chunk in chunks[:-1]]


def stow_body(paths: list[Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + path.read_bytes()
            + b"\r\n"
            for path in paths
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


class Client:
    """Requests against one server, each verifying its answer."""

    def __init__(self, server: Server, session: aiohttp.ClientSession, data: Dataset):
        self.root, self.session, self.data = server.root, session, data

    def url(self, sop: str, suffix: str = "") -> str:
        study, series = self.data.where[sop]
        return f"{self.root}/studies/{study}/series/{series}/instances/{sop}{suffix}"

    async def get(self, url: str, accept: str) -> Answer:
        async with self.session.get(url, headers={"Accept": accept}) as response:
            body = await response.read()
            return response.status, body, response.headers.get("Content-Type", "")

    def stow(self, sops: list[str]) -> Request:
        body, content_type = stow_body([self.data.files[sop] for sop in sops])
        headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}

        async def request() -> Check:
            async with self.session.post(
                f"{self.root}/studies", data=body, headers=headers
            ) as response:
                status, answer = response.status, await response.read()

            def check() -> None:
                assert status == 200, f"{status} {answer[:200]!r}"
                items = json.loads(answer)["00081199"]["Value"]
                stored = {item["00081155"]["Value"][0] for item in items}
                assert stored == set(sops), "STOW did not reference every instance"

            return check

        return request

    def instance(self, sop: str) -> Request:
        async def request() -> Check:
            answer = await self.get(self.url(sop), SERIES_ACCEPT)
            return lambda: _check_parts(answer, [self.data.digests[sop]])

        return request

    def _series_path(self, series: str) -> tuple[str, list[str]]:
        sops = self.data.series[series]
        return f"studies/{self.data.where[sops[0]][0]}/series/{series}", sops

    def series(self, series: str) -> Request:
        path, sops = self._series_path(series)

        async def request() -> Check:
            answer = await self.get(f"{self.root}/{path}", SERIES_ACCEPT)
            return lambda: _check_parts(answer, [self.data.digests[sop] for sop in sops])

        return request

    def bare_series(self, series: str) -> BareRequest:
        """The whole series as stored, read with a bare socket: aiohttp's client spends as
        long reading 50 MB as a server takes to send it."""
        path, sops = self._series_path(series)

        def request(connection: BareConnection) -> Check:
            answer = connection.get(path, SERIES_ACCEPT)
            return lambda: _check_parts(answer, [self.data.digests[sop] for sop in sops])

        return request

    def metadata(self, series: str) -> Request:
        sops = self.data.series[series]

        async def request() -> Check:
            study = self.data.where[sops[0]][0]
            status, body, _ = await self.get(
                f"{self.root}/studies/{study}/series/{series}/metadata", DICOM_JSON
            )

            def check() -> None:
                assert status == 200, f"{status} {body[:200]!r}"
                got = {item["00080018"]["Value"][0] for item in json.loads(body)}
                assert got == set(sops), "metadata lists other instances"

            return check

        return request

    def frame(self, sop: str) -> Request:
        async def request() -> Check:
            answer = await self.get(self.url(sop, "/frames/1"), FRAME_ACCEPT)
            return lambda: _check_parts(answer, [self.data.pixels[sop]])

        return request

    def rendered(self, sop: str) -> Request:
        async def request() -> Check:
            status, body, content_type = await self.get(self.url(sop, "/rendered"), "image/jpeg")

            def check() -> None:
                assert status == 200, f"{status} {body[:200]!r}"
                assert body[:2] == b"\xff\xd8" and "image/jpeg" in content_type, "not a JPEG"

            return check

        return request

    def query(self, path: str, expected: set[str], tag: str, count: int | None = None) -> Request:
        """A search answering ``expected`` (its UIDs at ``tag``); with ``count``, a page:
        that many of them, whichever the server's order puts there."""

        async def request() -> Check:
            answer = await self.get(f"{self.root}/{path}", DICOM_JSON)
            return lambda: _check_matches(answer, path, expected, tag, count)

        return request

    def bare_query(
        self, path: str, expected: set[str], tag: str, count: int | None = None
    ) -> BareRequest:
        """:meth:`query` over a bare kept-alive socket: aiohttp's client costs about 0.4 ms
        a request, as much as localdicom's whole answer to a simple search, and would
        otherwise be most of what a 10x latency ratio measures."""

        def request(connection: BareConnection) -> Check:
            answer = connection.get(path, DICOM_JSON)
            return lambda: _check_matches(answer, path, expected, tag, count)

        return request


class BareConnection:
    """HTTP/1.1 GETs over one kept-alive socket, with about the least work a client can do:
    bodies are read straight into a buffer, for large ones the same from answer to answer
    (see ``_buffer``). Handles what the two servers send: a Content-Length, a chunked body,
    or one ended by closing the connection.

    A body read into that buffer (``borrowed``) is valid until the next request of any
    connection: check it before (``measure_bare`` does)."""

    #: Kept from answer to answer and from connection to connection (they are used one at a
    #: time), grown when an answer needs more, never shrunk. A new buffer per answer cost this
    #: client a page fault per 4 KiB received, 50-70 ms of CPU for a 50 MB series on a
    #: machine of two cores: more than either server spent sending it, so the whole-series
    #: rate measured the client. Small bodies (searches) get their own, from reused memory.
    _buffer = bytearray()
    SHARED_FROM = 1 << 20

    def __init__(self, root: str):
        target = urlsplit(root)
        self.prefix, self.host = target.path, target.netloc
        self.address = (target.hostname, target.port)
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(self.address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending, self.closed, self.borrowed = b"", False, False

    def close(self) -> None:
        self.sock.close()

    def get(self, path: str, accept: str) -> Answer:
        if self.closed:  # by the server, after its last answer
            self.close()
            self._connect()
        request = (
            f"GET {self.prefix}/{path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: {accept}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.pending:
            self.pending += self._receive()
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = self._exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = self._chunked()
        else:  # ended by closing the connection (Orthanc's answer with a whole series)
            assert headers.get("connection") == "close", f"no length: {head!r}"
            body = self._to_the_end()
            self.closed = True
        return int(lines[0].split()[1]), body, headers.get("content-type", "")

    def _receive(self) -> bytes:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    @classmethod
    def _room(cls, size: int, keep: int = 0) -> memoryview:
        """The buffer, at least ``size`` bytes long; its first ``keep`` bytes kept if it grows
        (a new one: a view of the old one may still be held)."""
        if len(cls._buffer) < size:
            grown = bytearray(max(size, 2 * len(cls._buffer)))
            grown[:keep] = cls._buffer[:keep]
            cls._buffer = grown
        return memoryview(cls._buffer)

    def _exactly(self, length: int) -> memoryview:
        self.borrowed = length >= self.SHARED_FROM
        view = self._room(length) if self.borrowed else memoryview(bytearray(length))
        have = min(length, len(self.pending))
        view[:have], self.pending = self.pending[:have], self.pending[have:]
        while have < length:
            count = self.sock.recv_into(view[have:length])
            if not count:
                raise ConnectionError("the server closed the connection mid-body")
            have += count
        return view[:length]

    def _to_the_end(self) -> memoryview:
        self.borrowed = True
        have = len(self.pending)
        view = self._room(have + READ_AHEAD)
        view[:have], self.pending = self.pending, b""
        while count := self.sock.recv_into(view[have:]):
            have += count
            if len(view) - have < READ_AHEAD:
                view = self._room(have + READ_AHEAD, keep=have)
        return view[:have]

    def _chunked(self) -> memoryview:
        chunks = []
        while True:
            while b"\r\n" not in self.pending:
                self.pending += self._receive()
            size_line, _, self.pending = self.pending.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = self._exactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                self.borrowed = False
                return memoryview(b"".join(chunks))
            chunks.append(bytes(chunk[:-2]))


def _check_matches(
    answer: Answer, path: str, expected: set[str], tag: str, count: int | None
) -> None:
    status, view, _ = answer
    body = bytes(view)
    assert status in (200, 204), f"{status} {body[:200]!r}"
    items = json.loads(body) if status == 200 else []
    got = {item[tag]["Value"][0] for item in items}
    if count is None:
        assert got == expected, f"{path}: {len(got)} results, expected {len(expected)}"
    else:
        assert len(items) == len(got) == count, f"{path}: {len(items)} results, not {count}"
        assert got <= expected, f"{path}: results that do not match"


def _check_parts(answer: Answer, digests: list[str]) -> None:
    """A 200 multipart answer whose parts hash to ``digests`` (in any order)."""
    status, view, content_type = answer
    body = bytes(view)
    assert status == 200, f"{status} {body[:200]!r}"
    got = sorted(hashlib.sha256(part).hexdigest() for part in parts(body, content_type))
    assert got == sorted(digests), "the parts differ from the originals"


# measuring ---------------------------------------------------------------------------------


@dataclass
class Figure:
    rate: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    errors: int = 0
    requests: int = 0
    #: CPU time the server (all its processes) spent per item, in ms.
    cpu: float = 0.0
    #: Disk cache flushes per item while the server stored (:func:`flushes_per_item`).
    flushes: float = math.nan


class Tally:
    """Latencies, answers to check and errors of one measurement."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.checks: list[Check] = []
        self.figure = Figure()

    def failed(self, exc: Exception) -> None:  # counted, and the first few shown
        self.figure.errors += 1
        if self.figure.errors <= 3:
            print(f"  error: {exc!s:.200}")

    def check(self, check: Check) -> None:
        try:
            check()
        except Exception as exc:
            self.failed(exc)

    def result(self, requests: int, elapsed: float) -> Figure:
        """The figure, once every answer was checked (after the clock stopped)."""
        for check in self.checks:
            self.check(check)
        self.figure.rate = requests / elapsed
        self.figure.requests = requests
        ordered = sorted(self.latencies)
        self.figure.p50 = statistics.median(ordered)
        self.figure.p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        return self.figure


async def measure(requests: list[Request], concurrency: int) -> Figure:
    queue = list(reversed(requests))
    tally = Tally()

    async def worker() -> None:
        while queue:
            request = queue.pop()
            started = time.perf_counter()
            try:
                tally.checks.append(await request())
            except Exception as exc:
                tally.failed(exc)
            tally.latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally.result(len(requests), time.perf_counter() - started)


def measure_bare(root: str, requests: list[BareRequest]) -> Figure:
    """One after the other over one kept-alive connection, opened before the clock starts
    (and opened again after an error, which leaves it in an unknown state). An answer read
    into the buffer the next one reuses is checked as soon as it is in, with the clock
    stopped; the others after the clock stopped, so that searches follow each other as
    fast as they can."""
    tally = Tally()
    connection = BareConnection(root)
    elapsed = 0.0
    try:
        for request in requests:
            sent = time.perf_counter()
            try:
                tally.checks.append(request(connection))
            except Exception as exc:
                tally.failed(exc)
                connection.close()
                connection = BareConnection(root)
            taken = time.perf_counter() - sent
            elapsed += taken
            tally.latencies.append(taken * 1000)
            if connection.borrowed:
                tally.check(tally.checks.pop())
    finally:
        connection.close()
    return tally.result(len(requests), elapsed)


class PeakMemory(threading.Thread):
    """Samples the memory of a server (with its worker processes) every second: the peak of
    each of RSS and PSS (see ``Server.memory``).

    Not more often: reading smaps_rollup costs the kernel about 10 ms for localdicom's five
    processes, and competes with their own memory management; sampled every 0.1 s, it
    slowed localdicom's one-at-a-time STOW by 4-14% in a probe, and Orthanc (one process)
    less."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self.running = server, {"Rss": 0, "Pss": 0}, True

    def run(self) -> None:
        while self.running:
            memory = self.server.memory()
            for kind in self.peak:
                self.peak[kind] = max(self.peak[kind], memory[kind])
            time.sleep(1)


@dataclass
class Operation:
    name: str
    #: "items/s" (higher is better), "ms p50", "ms p95" or "CPU ms/item" (lower is better):
    #: one row of the table each, from the same measurement.
    units: tuple[str, ...]
    make: Callable[[Client, int], list]  # (client, round) -> requests (BareRequests if bare)
    concurrency: int = 1
    items_per_request: int = 1
    bare: bool = False  # over a bare socket (BareConnection), one request at a time


async def measure_operation(op: Operation, client: Client, round_: int, count: int | None = None):
    """The operation's requests of a round (or the first ``count`` of them) measured."""
    requests = op.make(client, round_)[:count]
    if op.bare:
        return await asyncio.to_thread(measure_bare, client.root, requests)
    return await measure(requests, op.concurrency)


def operations(data: Dataset, workload: Workload) -> list[Operation]:
    big = uid("big-0-0")
    meta = uid("meta-series")
    native = data.series[big]
    j2k = data.series[uid("c-j2k")]
    jpeg_ls = data.series[uid("c-jls")]
    studies = data.studies
    first = next(iter(studies))

    def stow(mode: str) -> Callable[[Client, int], list[Request]]:
        """Each (server, round) gets instances of its own: a re-store would measure nothing."""
        batches = data.stow_batches[mode]
        per = len(batches) // (2 * workload.rounds)
        calls = iter(range(2 * workload.rounds))

        def make(client: Client, _round: int) -> list[Request]:
            k = next(calls)
            return [client.stow(batch) for batch in batches[k * per : (k + 1) * per]]

        return make

    def matching(predicate: Callable[[dict], bool]) -> set[str]:
        return {s for s, a in studies.items() if predicate(a)}

    study_of_big = data.where[native[0]][0]
    # (name, path, expected UIDs, the tag they are at, the count of a page or None)
    queries = [
        (
            "QIDO study, exact PatientID",
            "studies?PatientID=P007",
            matching(lambda a: a["PatientID"] == "P007"),
            "0020000D",
            None,
        ),
        (
            # the floor under every search: the HTTP exchange, and a lookup that finds nothing
            "QIDO study, no match",
            "studies?PatientID=NOBODY",
            set(),
            "0020000D",
            None,
        ),
        (
            "QIDO study, wildcard PatientName",
            "studies?PatientName=P01*",
            matching(lambda a: a["PatientName"].startswith("P01")),
            "0020000D",
            None,
        ),
        (
            "QIDO study, date range",
            "studies?StudyDate=20150101-20171231",
            matching(lambda a: "20150101" <= a["StudyDate"] <= "20171231"),
            "0020000D",
            None,
        ),
        (
            "QIDO study, ModalitiesInStudy",
            "studies?ModalitiesInStudy=MR",
            matching(lambda a: "MR" in a["modalities"]),
            "0020000D",
            None,
        ),
        (
            "QIDO study, includefield",
            "studies?PatientID=P003&includefield=StudyDescription",
            matching(lambda a: a["PatientID"] == "P003"),
            "0020000D",
            None,
        ),
        (
            "QIDO study, limit/offset",
            "studies?limit=10&offset=20",
            set(studies),
            "0020000D",
            min(10, max(0, len(studies) - 20)),
        ),
        (
            "QIDO series of a study",
            f"studies/{first}/series",
            {s for s, sops in data.series.items() if data.where[sops[0]][0] == first},
            "0020000E",
            None,
        ),
        (
            "QIDO series, Modality=MR",
            "series?Modality=MR",
            {
                s
                for s, sops in data.series.items()
                if "MR" in studies[data.where[sops[0]][0]]["modalities"]
            },
            "0020000E",
            None,
        ),
        (
            "QIDO instances of a series",
            f"studies/{study_of_big}/series/{big}/instances",
            set(native),
            "00080018",
            None,
        ),
        (
            "QIDO instances of a series, limit/offset",
            f"studies/{study_of_big}/series/{big}/instances?limit=20&offset=40",
            set(native),
            "00080018",
            min(20, max(0, len(native) - 40)),
        ),
        (
            "QIDO instance by SOPInstanceUID",
            f"instances?SOPInstanceUID={native[-1]}",
            {native[-1]},
            "00080018",
            None,
        ),
    ]
    ops = [
        # with the servers' CPU time per instance (on a machine of few cores shared with the
        # client, what decides the rate at concurrency 8) and the disk's flushes
        Operation("STOW 1/request, c1", STORED, stow("c1")),
        Operation("STOW 1/request, c8", STORED, stow("c8"), concurrency=8),
        Operation("STOW 20/request, c1", STORED, stow("batch"), items_per_request=20),
    ]
    latency = ("ms p50", "ms p95")
    for name, *query in queries:
        ops.append(
            Operation(
                name,
                latency,
                lambda c, _r, query=query: [c.bare_query(*query)] * workload.queries,
                bare=True,
            )
        )
    name, *query = queries[0]
    ops.append(
        Operation(
            f"{name}, aiohttp client",
            latency,
            lambda c, _r: [c.query(*query)] * workload.queries,
        )
    )
    ops += [
        Operation("WADO instance, c1", (RATE,), lambda c, _r: [c.instance(s) for s in native]),
        Operation(
            "WADO instance, c8",
            (RATE,),
            lambda c, _r: [c.instance(s) for s in native],
            concurrency=8,
        ),
        Operation(
            "WADO whole series",
            (RATE,),
            lambda c, _r: [c.series(big)],
            items_per_request=len(native),
        ),
        Operation(
            "WADO whole series, bare socket",
            (RATE,),
            lambda c, _r: [c.bare_series(big)],
            items_per_request=len(native),
            bare=True,
        ),
        Operation(
            f"series metadata, {len(data.series[meta])} instances",
            ("ms p50",),
            lambda c, _r: [c.metadata(meta)] * 10,
        ),
        Operation("frame uncompressed, c1", (RATE,), lambda c, _r: [c.frame(s) for s in native]),
        Operation(
            "frame uncompressed, c8",
            (RATE,),
            lambda c, _r: [c.frame(s) for s in native],
            concurrency=8,
        ),
        Operation("rendered JPEG", (RATE,), lambda c, _r: [c.rendered(s) for s in native[:40]]),
        Operation("frame JPEG-LS decoded", (RATE,), lambda c, _r: [c.frame(s) for s in jpeg_ls]),
        # Last: Orthanc 1.10's GDCM plugin was seen to crash decoding these (then restarted).
        Operation("frame JPEG 2000 decoded", (RATE,), lambda c, _r: [c.frame(s) for s in j2k]),
    ]
    return ops


async def load(client: Client, data: Dataset, skip: set[str]) -> None:
    """Store the base dataset (everything but the STOW sets) 20 instances per request."""
    sops = [sop for sop in data.files if sop not in skip]
    for start in range(0, len(sops), 20):
        (await client.stow(sops[start : start + 20])())()


async def run(workload: Workload, folder: Path, only: str | None = None) -> None:
    print("generating the dataset ...", flush=True)
    data = build(workload, folder / "data")
    settle_disk()
    stow_sops = {sop for batches in data.stow_batches.values() for b in batches for sop in b}
    # Both with their defaults, under which each flushes what it stores to disk before it
    # answers (Orthanc's SyncStorageArea, localdicom's --fsync).
    servers = [orthanc(folder / "orthanc"), localdicom(folder / "localdicom")]
    peaks = []
    for server in servers:
        server.start()
        peak = PeakMemory(server)
        peak.start()
        peaks.append(peak)
    results: dict[tuple[str, str], list[Figure]] = {}
    crashes = {server.name: 0 for server in servers}
    try:
        async with aiohttp.ClientSession(
            # Idle connections are dropped before Orthanc closes them (it does after 0.6-1 s):
            # a POST sent on one just as the server closes it fails, which measures the race,
            # not the server.
            connector=aiohttp.TCPConnector(limit=16, keepalive_timeout=0.5),
            timeout=aiohttp.ClientTimeout(300),
        ) as session:
            clients = [Client(server, session, data) for server in servers]
            for client in clients:
                print(f"storing the dataset in {client.root} ...", flush=True)
                await load(client, data, stow_sops)
            ops = [op for op in operations(data, workload) if only is None or only in op.name]
            pairs = list(zip(clients, servers, strict=True))
            for op in ops:  # warm-up: first connections, worker processes, caches
                if "STOW" not in op.name:
                    for client, server in pairs:
                        revive(server, crashes)
                        await measure_operation(op, client, 0, count=1)
            for round_ in range(workload.rounds):
                print(f"round {round_ + 1}/{workload.rounds} ...", flush=True)
                order = pairs if round_ % 2 == 0 else pairs[::-1]
                for op in ops:
                    for client, server in order:
                        revive(server, crashes)
                        cpu, flushes = server.cpu_seconds(), server.disk_flushes()
                        figure = await measure_operation(op, client, round_)
                        items = figure.requests * op.items_per_request
                        figure.cpu = (server.cpu_seconds() - cpu) * 1000 / max(items, 1)
                        figure.flushes = flushes_per_item(flushes, server.disk_flushes(), items)
                        figure.rate *= op.items_per_request
                        results.setdefault((op.name, client.root), []).append(figure)
    finally:
        for peak in peaks:
            peak.running = False
        for server in servers:
            server.stop()
    report(workload, ops, servers, results, [peak.peak for peak in peaks], crashes)


def settle_disk(seconds: float = 6) -> None:
    """Write everything back, then wait: on ext4 without a journal (as on the development
    machine), the inode allocator skips inodes freed in the last 5 s, or 5 minutes while their
    inode table is unwritten. Files deleted just before a run (an earlier run's storage) made
    every file either server created 5-10 times dearer in CPU (40 us per create settled,
    190-340 us after deletions). It does not help where many files were deleted in the last
    minutes: a fresh folder under /tmp, 40 s after 5000 deletions there and a sync, still took
    0.7-1.3 ms per create, against 60 us under /var/tmp; set TMPDIR to run elsewhere."""
    os.sync()
    time.sleep(seconds)


def revive(server: Server, crashes: dict[str, int]) -> None:
    """Restart a server that died or is dying (on the same storage), and count it.

    A server that crashes on a request can take a moment to exit after the request failed:
    asking it something first keeps that crash from failing the next operation instead."""
    if server.process is None or (server.process.poll() is None and server.answers()):
        return
    server.stop()  # waits for a dying process; ends a hung one
    crashes[server.name] += 1
    print(f"  {server.name} stopped answering (exit code {server.process.returncode}); restarting")
    server.start()


def report(workload, ops, servers, results, peaks, crashes) -> None:
    """The table, the servers' peak memory and how often each had to be restarted."""
    names = [server.name for server in servers]
    print(f"\n{workload}\n")
    print(table_header(names))
    for op in ops:
        for unit in op.units:
            row = f"{op.name} {UNITS[unit][1]}".strip() if len(op.units) > 1 else op.name
            print(table_row(row, unit, [results[(op.name, server.root)] for server in servers]))
    for kind, name in (("Pss", "PSS, process tree"), ("Rss", "RSS, summed over the process tree")):
        mib = [peak[kind] / 1024 for peak in peaks]
        ratio = mib[0] / max(mib[1], 1)
        print(f"| peak memory ({name}) | MiB | {mib[0]:.0f} | {mib[1]:.0f} | {ratio:.2f} | |")
    print(f"| crashes (restarted) | | {crashes[names[0]]} | {crashes[names[1]]} | | |")


def flushes_per_item(before: int | None, after: int | None, items: int) -> float:
    """Disk flushes per item between two readings of :meth:`Server.disk_flushes`; NaN
    where the disk does not count them."""
    if before is None or after is None:
        return math.nan
    return (after - before) / max(items, 1)


def table_header(names: list[str]) -> str:
    """The head of the table, the two servers named in the order of their columns."""
    return (
        f"| operation | unit | {names[0]} | {names[1]} | ratio | errors ({names[0]}/{names[1]}) |\n"
        "| --- | --- | ---: | ---: | ---: | ---: |"
    )


def table_row(name: str, unit: str, figures: list[list[Figure]]) -> str:
    """One line of the table: medians over rounds; "failed" for a server that answered
    wrongly even once."""
    pick = UNITS[unit][0]
    values = [statistics.median(getattr(f, pick) for f in each) for each in figures]
    errors = [sum(f.errors for f in each) for each in figures]
    if any(errors):
        shown, ratio = (
            ["failed" if e else _figure(v) for v, e in zip(values, errors, strict=True)],
            "n/a",
        )
    else:
        shown = [_figure(v) for v in values]
        better, worse = (values[1], values[0]) if unit == RATE else (values[0], values[1])
        ratio = f"{better / worse:.2f}" if worse else "n/a"  # e.g. no CPU tick in a tiny run
    if unit == FLUSHES:  # neither better nor worse: how much each made durable, and when
        ratio = ""
    return f"| {name} | {unit} | {shown[0]} | {shown[1]} | {ratio} | {errors[0]}/{errors[1]} |"


def _figure(value: float) -> str:
    """One decimal, or two below 1 (a round trip of a tenth of a millisecond); "n/a" for
    what was not measured (NaN)."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if value < 1 else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny workload, as CI runs it")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument(
        "--only", metavar="TEXT", help='only the operations whose name holds TEXT (e.g. "STOW")'
    )
    args = parser.parse_args()
    workload = Workload()
    if args.smoke:
        workload = Workload(
            studies=1,
            series=1,
            instances=5,
            metadata_instances=10,
            small_studies=10,
            compressed=2,
            stow_each=4,
            rounds=1,
            queries=3,
        )
    if args.rounds:
        workload.rounds = args.rounds
    if args.keep:
        asyncio.run(run(workload, args.keep, args.only))
    else:
        with tempfile.TemporaryDirectory(prefix="localdicom-compare-") as folder:
            asyncio.run(run(workload, Path(folder), args.only))


if __name__ == "__main__":
    main()
