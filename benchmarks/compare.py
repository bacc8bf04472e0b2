"""localdicom against Orthanc (+ DICOMweb and GDCM plugins), side by side in one run.

    python -m benchmarks.compare                 # the full workload (a few minutes)
    python -m benchmarks.compare --smoke         # a tiny one, as CI runs it

Generates a deterministic dataset, starts both servers on empty storage on loopback, stores
the same data in each, then runs every operation against both, alternating which goes first,
for several rounds. Every answer is verified (UIDs, byte hashes, frame hashes, query result
sets) and failures are counted, so an error never looks fast. The clock covers sending the
request and receiving the whole answer; request bodies are built before it starts and answers
are checked after it stops, so the client's own hashing and parsing neither adds the same cost
to both servers' figures nor competes with them for the CPU. Prints one table: Orthanc's
figure, localdicom's, and the ratio (higher is better for localdicom), medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
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
Request = Callable[[], Awaitable[Check]]  # the timed exchange; its answer checked afterwards
EXPLICIT_LE = "1.2.840.10008.1.2.1"
FRAME_ACCEPT = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'
MODALITIES = ("CT", "MR", "US", "CR", "MG")


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
    queries: int = 40


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

    async def get(self, url: str, accept: str) -> tuple[int, bytes, str]:
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
            answer = await self.get(
                self.url(sop), 'multipart/related; type="application/dicom"; transfer-syntax=*'
            )
            return lambda: _check_parts(answer, [self.data.digests[sop]])

        return request

    def series(self, series: str, minimal_client: bool = False) -> Request:
        """The whole series as stored; ``minimal_client`` reads it with a bare socket instead
        of aiohttp, whose own cost per byte would otherwise weigh as much as the servers'."""
        sops = self.data.series[series]
        study = self.data.where[sops[0]][0]
        url = f"{self.root}/studies/{study}/series/{series}"
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'

        async def request() -> Check:
            if minimal_client:
                answer = await asyncio.to_thread(_get_with_a_socket, url, accept)
            else:
                answer = await self.get(url, accept)
            return lambda: _check_parts(answer, [self.data.digests[sop] for sop in sops])

        return request

    def metadata(self, series: str) -> Request:
        sops = self.data.series[series]

        async def request() -> Check:
            study = self.data.where[sops[0]][0]
            status, body, _ = await self.get(
                f"{self.root}/studies/{study}/series/{series}/metadata", "application/dicom+json"
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

    def query(self, path: str, expected: set[str], tag: str) -> Request:
        async def request() -> Check:
            status, body, _ = await self.get(f"{self.root}/{path}", "application/dicom+json")

            def check() -> None:
                assert status in (200, 204), f"{status} {body[:200]!r}"
                answer = json.loads(body) if status == 200 else []
                got = {item[tag]["Value"][0] for item in answer}
                assert got == expected, f"{path}: {len(got)} results, expected {len(expected)}"

            return check

        return request


def _get_with_a_socket(url: str, accept: str) -> tuple[int, bytes, str]:
    """GET over a new connection that the server closes, read to its end into one buffer:
    about the least work a client can do per byte. The answer must not be chunked (neither
    server chunks these; a chunked one would fail the check)."""
    target = urlsplit(url)
    request = (
        f"GET {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\nAccept: {accept}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection((target.hostname, target.port)) as sock:
        sock.sendall(request.encode())
        received, buffer = bytearray(), bytearray(1 << 22)
        while count := sock.recv_into(buffer):
            received += buffer[:count]
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(":", 1) for line in lines[1:])
    content_type = next((v.strip() for k, v in headers.items() if k.lower() == "content-type"), "")
    return int(lines[0].split()[1]), body, content_type


def _check_parts(answer: tuple[int, bytes, str], digests: list[str]) -> None:
    """A 200 multipart answer whose parts hash to ``digests`` (in any order)."""
    status, body, content_type = answer
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


async def measure(requests: list[Request], concurrency: int) -> Figure:
    queue = list(reversed(requests))
    latencies: list[float] = []
    checks: list[Check] = []
    figure = Figure()

    def failed(exc: Exception) -> None:  # counted, and the first few shown
        figure.errors += 1
        if figure.errors <= 3:
            print(f"  error: {exc!s:.200}")

    async def worker() -> None:
        while queue:
            request = queue.pop()
            started = time.perf_counter()
            try:
                checks.append(await request())
            except Exception as exc:
                failed(exc)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    for check in checks:
        try:
            check()
        except Exception as exc:
            failed(exc)
    figure.rate = len(requests) / elapsed
    ordered = sorted(latencies)
    figure.p50 = statistics.median(ordered)
    figure.p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return figure


class PeakMemory(threading.Thread):
    """Samples the memory of a server (with its worker processes) every 0.1 s."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self.running = server, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.server.memory_kib())
            time.sleep(0.1)


@dataclass
class Operation:
    name: str
    unit: str  # "items/s" (higher is better) or "ms p50"/"ms p95" (lower is better)
    make: Callable[[Client, int], list[Request]]  # (client, round) -> requests
    concurrency: int = 1
    items_per_request: int = 1


def operations(data: Dataset, workload: Workload) -> list[Operation]:
    big = uid("big-0-0")
    meta = uid("meta-series")
    native = data.series[big]
    j2k = data.series[uid("c-j2k")]
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

    def study_query(path: str, predicate) -> Callable[[Client, int], list[Request]]:
        expected = {s for s, a in studies.items() if predicate(a)}
        return lambda c, _r: [c.query(path, expected, "0020000D")] * workload.queries

    queries = [
        (
            "QIDO study, exact PatientID",
            "studies?PatientID=P007",
            lambda a: a["PatientID"] == "P007",
        ),
        (
            "QIDO study, wildcard PatientName",
            "studies?PatientName=P01*",
            lambda a: a["PatientName"].startswith("P01"),
        ),
        (
            "QIDO study, date range",
            "studies?StudyDate=20150101-20171231",
            lambda a: "20150101" <= a["StudyDate"] <= "20171231",
        ),
        (
            "QIDO study, ModalitiesInStudy",
            "studies?ModalitiesInStudy=MR",
            lambda a: "MR" in a["modalities"],
        ),
        (
            "QIDO study, includefield",
            "studies?PatientID=P003&includefield=StudyDescription",
            lambda a: a["PatientID"] == "P003",
        ),
    ]
    ops = [
        Operation("STOW 1/request, c1", "items/s", stow("c1")),
        Operation("STOW 1/request, c8", "items/s", stow("c8"), concurrency=8),
        Operation("STOW 20/request, c1", "items/s", stow("batch"), items_per_request=20),
    ]
    for name, path, predicate in queries:
        make = study_query(path, predicate)
        ops += [Operation(f"{name} p50", "ms p50", make), Operation(f"{name} p95", "ms p95", make)]
    series_of_first = {s for s, sops in data.series.items() if data.where[sops[0]][0] == first}
    more = [
        ("QIDO series of a study", f"studies/{first}/series", series_of_first, "0020000E"),
        (
            "QIDO series, Modality=MR",
            "series?Modality=MR",
            {
                s
                for s, sops in data.series.items()
                if "MR" in studies[data.where[sops[0]][0]]["modalities"]
            },
            "0020000E",
        ),
        (
            "QIDO instances of a series",
            f"studies/{data.where[native[0]][0]}/series/{big}/instances",
            set(native),
            "00080018",
        ),
        (
            "QIDO instance by SOPInstanceUID",
            f"instances?SOPInstanceUID={native[-1]}",
            {native[-1]},
            "00080018",
        ),
    ]
    for name, path, expected, tag in more:

        def make(c, _r, path=path, expected=expected, tag=tag):
            return [c.query(path, expected, tag)] * workload.queries

        ops += [Operation(f"{name} p50", "ms p50", make), Operation(f"{name} p95", "ms p95", make)]
    ops += [
        Operation("WADO instance, c1", "items/s", lambda c, _r: [c.instance(s) for s in native]),
        Operation(
            "WADO instance, c8",
            "items/s",
            lambda c, _r: [c.instance(s) for s in native],
            concurrency=8,
        ),
        Operation(
            "WADO whole series",
            "items/s",
            lambda c, _r: [c.series(big)],
            items_per_request=len(native),
        ),
        Operation(
            "WADO whole series, minimal client",
            "items/s",
            lambda c, _r: [c.series(big, minimal_client=True)],
            items_per_request=len(native),
        ),
        Operation(
            f"series metadata, {len(data.series[meta])} instances",
            "ms p50",
            lambda c, _r: [c.metadata(meta)] * 10,
        ),
        Operation("frame uncompressed, c1", "items/s", lambda c, _r: [c.frame(s) for s in native]),
        Operation(
            "frame uncompressed, c8",
            "items/s",
            lambda c, _r: [c.frame(s) for s in native],
            concurrency=8,
        ),
        Operation("rendered JPEG", "items/s", lambda c, _r: [c.rendered(s) for s in native[:40]]),
        # Last: Orthanc 1.10's GDCM plugin was seen to crash decoding these (then restarted).
        Operation("frame JPEG 2000 decoded", "items/s", lambda c, _r: [c.frame(s) for s in j2k]),
    ]
    return ops


async def load(client: Client, data: Dataset, skip: set[str]) -> None:
    """Store the base dataset (everything but the STOW sets) 20 instances per request."""
    sops = [sop for sop in data.files if sop not in skip]
    for start in range(0, len(sops), 20):
        (await client.stow(sops[start : start + 20])())()


async def run(workload: Workload, folder: Path) -> None:
    print("generating the dataset ...", flush=True)
    data = build(workload, folder / "data")
    stow_sops = {sop for batches in data.stow_batches.values() for b in batches for sop in b}
    servers = [orthanc(folder / "orthanc"), localdicom(folder / "localdicom", "--no-fsync")]
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
            ops = operations(data, workload)
            pairs = list(zip(clients, servers, strict=True))
            for op in ops:  # warm-up: first connections, worker processes, caches
                if "STOW" not in op.name:
                    for client, server in pairs:
                        revive(server, crashes)
                        await measure(op.make(client, 0)[:1], 1)
            for round_ in range(workload.rounds):
                print(f"round {round_ + 1}/{workload.rounds} ...", flush=True)
                order = pairs if round_ % 2 == 0 else pairs[::-1]
                for op in ops:
                    for client, server in order:
                        revive(server, crashes)
                        figure = await measure(op.make(client, round_), op.concurrency)
                        figure.rate *= op.items_per_request
                        results.setdefault((op.name, client.root), []).append(figure)
    finally:
        for peak in peaks:
            peak.running = False
        for server in servers:
            server.stop()
    report(workload, ops, servers, results, [peak.peak for peak in peaks], crashes)


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
    """The table; a figure of a server that answered wrongly even once is not shown."""
    names = [server.name for server in servers]
    print(f"\n{workload}\n")
    print(
        f"| operation | unit | {names[0]} | {names[1]} | ratio | errors ({names[0]}/{names[1]}) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for op in ops:
        values, errors = [], []
        for server in servers:
            figures = results[(op.name, server.root)]
            errors.append(sum(f.errors for f in figures))
            pick = {"items/s": "rate", "ms p50": "p50", "ms p95": "p95"}[op.unit]
            values.append(statistics.median(getattr(f, pick) for f in figures))
        if any(errors):
            pairs = zip(values, errors, strict=True)
            shown, ratio = ["failed" if e else f"{v:.1f}" for v, e in pairs], "n/a"
        else:
            shown = [f"{v:.1f}" for v in values]
            ratio = (
                f"{values[1] / values[0] if op.unit == 'items/s' else values[0] / values[1]:.2f}"
            )
        print(
            f"| {op.name} | {op.unit} | {shown[0]} | {shown[1]} | {ratio} | "
            f"{errors[0]}/{errors[1]} |"
        )
    print(
        f"| peak memory (PSS, with workers) | MiB | {peaks[0] / 1024:.0f} | "
        f"{peaks[1] / 1024:.0f} | {peaks[0] / max(peaks[1], 1):.2f} | |"
    )
    print(f"| crashes (restarted) | | {crashes[names[0]]} | {crashes[names[1]]} | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny workload, as CI runs it")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
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
        asyncio.run(run(workload, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="localdicom-compare-") as folder:
            asyncio.run(run(workload, Path(folder)))


if __name__ == "__main__":
    main()
