"""A bounded load test on loopback: many clients at once, a mix of every kind of request,
every answer checked; prints the throughput per operation and the errors.

    python -m benchmarks.load                           # 60 s, concurrency 16, a new server
    python -m benchmarks.load --duration 10 --no-fsync  # shorter, server without fsync
    python -m benchmarks.load --url http://127.0.0.1:8042 --duration 30

Without ``--url`` a server is started on an empty archive in a temporary folder (with the
server's defaults, so ``--fsync``). The archive is first given 4 series of 25 CT slices of
128x128; then ``--concurrency`` clients send requests for ``--duration`` seconds, each picking
one at random:

    stow       STOW-RS of one new instance (application/dicom); the answer names it
    qido       QIDO-RS at the study, series or instance level; the expected matches
    wado       an instance as stored; its SHA-256 is that of what was stored
    metadata   a seeded series' metadata; one item per instance, the right SOP UIDs
    frames     frame 1 of an instance, as stored; the exact pixel bytes

An answer with another status, other content, a timeout or a connection error is an error.
The exit status is 1 if there was any. ``tests/test_load.py`` runs the same code for 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.dataset import PREFIX, ct_slice, uid

OPERATIONS = ("stow", "qido", "wado", "metadata", "frames")
WEIGHTS = (2, 3, 2, 1, 2)
SIZE = 128
FRAME_BYTES = SIZE * SIZE * 2
AS_STORED = "application/dicom; transfer-syntax=*"
FRAME_AS_STORED = "application/octet-stream; transfer-syntax=*"
DICOM_JSON = "application/dicom+json"


@dataclass(frozen=True)
class Stored:
    study: str
    series: str
    sop: str
    digest: str
    frame: bytes

    @property
    def path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"


def encode(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def describe(study: str, series: str, sop: str, data: bytes) -> Stored:
    """Native single-frame pixel data is the file's last element: the frame is its tail."""
    return Stored(study, series, sop, hashlib.sha256(data).hexdigest(), data[-FRAME_BYTES:])


class NewInstances:
    """New instances for STOW-RS, made by changing the SOP Instance UID of one template, so
    that making them costs the client nothing; the UIDs are unique to this run."""

    def __init__(self) -> None:
        ds = ct_slice("load-study-stow", "load-series-stow", 0, size=SIZE)
        self.run = f"{random.SystemRandom().randrange(10**8):08d}"
        self.template_uid = self._uid(0)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = self.template_uid
        self.template = encode(ds)
        assert self.template.count(self.template_uid.encode()) == 2
        self.study, self.series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        self.count = 0

    def _uid(self, number: int) -> str:
        return f"{PREFIX}1{self.run}{number:012d}"

    def next(self) -> tuple[str, bytes]:
        self.count += 1
        sop = self._uid(self.count)
        return sop, self.template.replace(self.template_uid.encode(), sop.encode())


@dataclass
class Figures:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    concurrency: int = 0

    @property
    def total(self) -> int:
        return sum(len(values) for values in self.latencies.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def error(self, operation: str, message: str) -> None:
        self.errors[operation] += 1
        if len(self.messages) < 20:
            self.messages.append(f"{operation}: {message}")


class Load:
    def __init__(self, url: str, session: aiohttp.ClientSession, rng: random.Random) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self.rng = rng
        self.seeded: dict[str, list[Stored]] = {}  # series UID -> its instances
        self.stored: list[Stored] = []
        self.new = NewInstances()

    async def seed(self, series_count: int = 4, instances: int = 25) -> None:
        for number in range(series_count):
            study, series = f"load-study-{number // 2}", f"load-series-{number}"
            datasets = [ct_slice(study, series, i, size=SIZE) for i in range(instances)]
            items = []
            for ds in datasets:
                data = encode(ds)
                items.append(
                    (
                        data,
                        describe(
                            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, data
                        ),
                    )
                )
            boundary = uuid.uuid4().hex
            body = (
                b"".join(
                    f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + data
                    + b"\r\n"
                    for data, _ in items
                )
                + f"--{boundary}--\r\n".encode()
            )
            content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
            async with self.session.post(
                f"{self.url}/studies", data=body, headers={"Content-Type": content_type}
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"seeding failed: {response.status} {await response.text()}")
            self.seeded[uid(series)] = [stored for _, stored in items]
            self.stored += [stored for _, stored in items]

    # the operations: each returns None when the answer is right, else what is wrong --------

    async def stow(self) -> str | None:
        sop, data = self.new.next()
        headers = {"Content-Type": "application/dicom", "Accept": DICOM_JSON}
        async with self.session.post(f"{self.url}/studies", data=data, headers=headers) as response:
            if response.status != 200:
                return f"status {response.status}: {(await response.text())[:200]}"
            body = await response.json(content_type=None)
        referenced = [item["00081155"]["Value"][0] for item in body["00081199"]["Value"]]
        if referenced != [sop]:
            return f"the answer names {referenced}, not {sop}"
        self.stored.append(describe(self.new.study, self.new.series, sop, data))
        return None

    async def qido(self) -> str | None:
        series_uid = self.rng.choice(list(self.seeded))
        instances = self.seeded[series_uid]
        study = instances[0].study
        level = self.rng.choice(["studies", "series", "instances"])
        if level == "studies":
            path, expected = f"/studies?StudyInstanceUID={study}", {study}
            tag = "0020000D"
        elif level == "series":
            path, expected = f"/studies/{study}/series?SeriesInstanceUID={series_uid}", {series_uid}
            tag = "0020000E"
        else:
            path = f"/studies/{study}/series/{series_uid}/instances?includefield=all"
            expected, tag = {i.sop for i in instances}, "00080018"
        async with self.session.get(self.url + path, headers={"Accept": DICOM_JSON}) as response:
            if response.status != 200:
                return f"{path}: status {response.status}"
            found = {item[tag]["Value"][0] for item in await response.json(content_type=None)}
        return None if found == expected else f"{path}: {len(found)} matches, not {len(expected)}"

    async def wado(self) -> str | None:
        instance = self.rng.choice(self.stored)
        async with self.session.get(
            self.url + instance.path, headers={"Accept": AS_STORED}
        ) as response:
            if response.status != 200:
                return f"status {response.status}"
            data = await response.read()
        return None if hashlib.sha256(data).hexdigest() == instance.digest else "other bytes"

    async def metadata(self) -> str | None:
        series_uid = self.rng.choice(list(self.seeded))
        instances = self.seeded[series_uid]
        url = f"{self.url}/studies/{instances[0].study}/series/{series_uid}/metadata"
        async with self.session.get(url, headers={"Accept": DICOM_JSON}) as response:
            if response.status != 200:
                return f"status {response.status}"
            items = await response.json(content_type=None)
        found = sorted(item["00080018"]["Value"][0] for item in items)
        return None if found == sorted(i.sop for i in instances) else "other instances"

    async def frames(self) -> str | None:
        instance = self.rng.choice(self.stored)
        url = f"{self.url}{instance.path}/frames/1"
        async with self.session.get(url, headers={"Accept": FRAME_AS_STORED}) as response:
            if response.status != 200:
                return f"status {response.status}"
            data = await response.read()
        return None if data == instance.frame else f"{len(data)} other bytes"


async def run_load(
    url: str, *, duration: float = 60, concurrency: int = 16, seed: int = 0
) -> Figures:
    """Seed the archive, then run the mix for ``duration`` seconds; every answer checked."""
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency)
    figures = Figures(concurrency=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        load = Load(url, session, random.Random(seed))
        await load.seed()
        operations = {name: getattr(load, name) for name in OPERATIONS}
        started = time.monotonic()
        deadline = started + duration

        async def client(number: int) -> None:
            rng = random.Random(f"{seed}-{number}")
            while time.monotonic() < deadline:
                (name,) = rng.choices(OPERATIONS, WEIGHTS)
                began = time.monotonic()
                try:
                    problem = await operations[name]()
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                figures.latencies[name].append(time.monotonic() - began)
                if problem is not None:
                    figures.error(name, problem)

        await asyncio.gather(*(client(n) for n in range(concurrency)))
        figures.seconds = time.monotonic() - started
    return figures


def format_report(figures: Figures) -> str:
    rows = [("operation", "requests", "errors", "per s", "p50 ms", "p95 ms", "p99 ms")]
    for name in OPERATIONS:
        values = sorted(figures.latencies.get(name, []))
        if not values:
            rows.append((name, "0", str(figures.errors.get(name, 0)), "0", "-", "-", "-"))
            continue
        rows.append(
            (
                name,
                str(len(values)),
                str(figures.errors.get(name, 0)),
                f"{len(values) / figures.seconds:.1f}",
                f"{statistics.median(values) * 1000:.1f}",
                f"{values[int(len(values) * 0.95)] * 1000:.1f}",
                f"{values[int(len(values) * 0.99)] * 1000:.1f}",
            )
        )
    rows.append(
        (
            "all",
            str(figures.total),
            str(figures.error_count),
            f"{figures.total / figures.seconds:.1f}",
            "",
            "",
            "",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"{figures.seconds:.0f} s at concurrency {figures.concurrency}:",
        *(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ),
    ]
    lines += [f"error: {message}" for message in figures.messages]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one on a new archive)")
    parser.add_argument("--duration", type=float, default=60, help="seconds (default 60)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fsync", action="store_true", help="start the server with --no-fsync")
    args = parser.parse_args()
    if args.url:
        figures = asyncio.run(
            run_load(args.url, duration=args.duration, concurrency=args.concurrency, seed=args.seed)
        )
        peak = None
    else:
        from benchmarks.servers import localdicom

        with tempfile.TemporaryDirectory(prefix="localdicom-load-") as folder:
            server = localdicom(Path(folder), *(["--no-fsync"] if args.no_fsync else []))
            server.start()
            try:
                figures = asyncio.run(
                    run_load(
                        server.root,
                        duration=args.duration,
                        concurrency=args.concurrency,
                        seed=args.seed,
                    )
                )
                peak = server.memory_kib()
            finally:
                server.stop()
    print(format_report(figures))
    if peak is not None:
        print(f"server memory (PSS) at the end: {peak / 1024:.0f} MiB")
    sys.exit(1 if figures.error_count else 0)


if __name__ == "__main__":
    main()
