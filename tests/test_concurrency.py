"""Concurrent requests on one archive: the final state is exact, no request gets a 5xx, and
the index and the folder agree, also after a restart.

Each test runs against ``localdicom serve`` in a subprocess (``live_server``) with many
requests in flight at once from an aiohttp client; instances are small generated CT slices,
made before the requests start so that the client does not throttle the load.
"""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pydicom
import pytest

from tests.helpers import ct_slice, free_port, uid
from tests.helpers.live import LiveServer

pytestmark = pytest.mark.slow

AS_STORED = "application/dicom; transfer-syntax=*"
DICOM_JSON = "application/dicom+json"


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str
    data: bytes

    @property
    def path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"


def make(study: str, series: str, index: int, **changes: str) -> Instance:
    ds = ct_slice(study, series, index, size=32)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return Instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, buffer.getvalue())


def multipart(instances: list[Instance]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + i.data + b"\r\n"
        for i in instances
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return body + f"--{boundary}--\r\n".encode(), content_type


async def stow(session: aiohttp.ClientSession, url: str, instances: list[Instance]) -> int:
    if len(instances) == 1:
        body, content_type = instances[0].data, "application/dicom"
    else:
        body, content_type = multipart(instances)
    headers = {"Content-Type": content_type, "Accept": DICOM_JSON}
    async with session.post(f"{url}/studies", data=body, headers=headers) as response:
        await response.read()
        return response.status


async def listed(session: aiohttp.ClientSession, url: str, query: str = "") -> set[str]:
    async with session.get(f"{url}/instances{query}") as response:
        assert response.status == 200, await response.text()
        return {item["00080018"]["Value"][0] for item in await response.json()}


def on_disk(archive: Path) -> dict[str, Path]:
    return {path.stem: path for path in archive.glob("*/*/*.dcm")}


async def assert_index_and_disk_agree(server: LiveServer, sent: dict[str, bytes]) -> set[str]:
    """QIDO lists exactly the .dcm files, each whole and with its sidecar, before and after a
    restart; no upload is left behind. Returns the listed SOP Instance UIDs."""
    async with aiohttp.ClientSession() as session:
        before = await listed(session, server.url)
    server.restart()
    async with aiohttp.ClientSession() as session:
        after = await listed(session, server.url)
    files = on_disk(server.archive)
    assert before == after == set(files)
    for sop, path in files.items():
        assert path.read_bytes() == sent[sop]
        assert path.with_suffix(".json").is_file()
    assert list((server.archive / ".incoming").iterdir()) == []
    assert [p for p in server.archive.rglob("*.tmp")] == []
    return after


async def test_parallel_stows_into_one_series(live_server: LiveServer):
    instances = [make("one-study", "one-series", index) for index in range(240)]
    batches = [instances[i : i + 3] for i in range(0, 120, 3)] + [[i] for i in instances[120:]]
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:
        statuses = await asyncio.gather(*(stow(session, live_server.url, b) for b in batches))
        assert Counter(statuses) == {200: len(batches)}
        async with session.get(f"{live_server.url}/series") as response:
            (series,) = await response.json()
        assert series["00201209"]["Value"] == [240]  # NumberOfSeriesRelatedInstances
        metadata_url = (
            f"{live_server.url}/studies/{instances[0].study}/series/{instances[0].series}"
        )
        async with session.get(f"{metadata_url}/metadata") as response:
            assert len(await response.json()) == 240
    stored = await assert_index_and_disk_agree(live_server, {i.sop: i.data for i in instances})
    assert stored == {i.sop for i in instances}


async def test_parallel_stows_of_the_same_instance(live_server: LiveServer):
    same = make("same-study", "same-series", 0)
    variants = [make("same-study", "same-series", 0, SeriesDescription=f"v{n}") for n in range(16)]
    assert len({v.sop for v in variants}) == 1 and len({v.data for v in variants}) == 16
    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(
            *(stow(session, live_server.url, [same]) for _ in range(16))
        )
        assert Counter(statuses) == {200: 16}  # one stored, fifteen already present
        other = make("same-study", "same-series", 1)
        others = [make("same-study", "same-series", 1, PatientID=f"p{n}") for n in range(16)]
        statuses = await asyncio.gather(*(stow(session, live_server.url, [o]) for o in others))
        assert Counter(statuses) == {200: 1, 409: 15}  # the first wins, the rest conflict
        winner = others[statuses.index(200)]
        url = f"{live_server.url}{other.path}"
        async with session.get(url, headers={"Accept": AS_STORED}) as response:
            assert await response.read() == winner.data
    sent = {same.sop: same.data, winner.sop: winner.data}
    assert await assert_index_and_disk_agree(live_server, sent) == set(sent)
    del variants


async def test_parallel_overwrites_leave_one_whole_instance(archive_dir: Path):
    server = LiveServer(archive_dir, free_port(), extra_args=("--overwrite",))
    server.start()
    try:
        variants = [
            make("over-study", "over-series", 0, SeriesDescription=f"variant {n}")
            for n in range(16)
        ]
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                statuses = await asyncio.gather(
                    *(stow(session, server.url, [v]) for v in random.sample(variants, 16))
                )
                assert Counter(statuses) == {200: 16}
                url = f"{server.url}{variants[0].path}"
                async with session.get(url, headers={"Accept": AS_STORED}) as response:
                    data = await response.read()
                async with session.get(f"{url}/metadata") as response:
                    (metadata,) = await response.json()
                described = metadata["0008103E"]["Value"][0]  # SeriesDescription
                assert pydicom.dcmread(io.BytesIO(data)).SeriesDescription == described
        sent = {variants[0].sop: data}
        assert await assert_index_and_disk_agree(server, sent) == set(sent)
    finally:
        server.stop()


@dataclass
class Timed:
    status: int = 0
    sent_at: float = 0.0
    answered_at: float = 0.0


async def timed(coroutine) -> Timed:
    loop = asyncio.get_running_loop()
    result = Timed(sent_at=loop.time())
    result.status = await coroutine
    result.answered_at = loop.time()
    return result


async def delete(session: aiohttp.ClientSession, url: str) -> int:
    async with session.delete(url) as response:
        await response.read()
        return response.status


async def test_stow_racing_delete_of_the_same_series(live_server: LiveServer):
    """Each round: 4 instances stored, then 28 more sent while the series is deleted. A STOW
    answered before the DELETE was sent is gone; one sent after the DELETE was answered is
    there; the ones in between are there or not, but index and folder agree."""
    rng = random.Random(99)
    sent: dict[str, bytes] = {}
    kept: set[str] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        for round_ in range(6):
            instances = [make(f"race-{round_}", f"race-series-{round_}", n) for n in range(32)]
            sent.update((i.sop, i.data) for i in instances)
            series_url = (
                f"{live_server.url}/studies/{instances[0].study}/series/{instances[0].series}"
            )
            assert await stow(session, live_server.url, instances[:4]) == 200

            async def later(seconds: float, coroutine):
                await asyncio.sleep(seconds)
                return await timed(coroutine)

            stows = [
                later(n * 0.002, stow(session, live_server.url, [i]))
                for n, i in enumerate(instances[4:])
            ]
            deletion = later(rng.uniform(0.0, 0.05), delete(session, series_url))
            *results, deleted = await asyncio.gather(*stows, deletion)
            assert deleted.status == 204
            assert Counter(r.status for r in results) == {200: 28}
            present = await listed(
                session, live_server.url, f"?SeriesInstanceUID={instances[0].series}"
            )
            for instance, result in zip(instances[4:], results, strict=True):
                if result.answered_at < deleted.sent_at:
                    assert instance.sop not in present
                if result.sent_at > deleted.answered_at:
                    assert instance.sop in present
            assert not present & {i.sop for i in instances[:4]}
            kept |= present
    assert await assert_index_and_disk_agree(live_server, sent) == kept


async def test_stow_racing_delete_of_the_same_instance(live_server: LiveServer):
    instance = make("flip-study", "flip-series", 0)
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(30):
            statuses += await asyncio.gather(
                stow(session, live_server.url, [instance]),
                delete(session, f"{live_server.url}{instance.path}"),
                stow(session, live_server.url, [instance]),
            )
    assert set(statuses) <= {200, 204, 404}, Counter(statuses)
    await assert_index_and_disk_agree(live_server, {instance.sop: instance.data})


async def test_qido_and_metadata_during_heavy_stow(live_server: LiveServer):
    """8 writers store 240 instances into 4 series while 4 readers query and fetch metadata;
    every read is a 200 and never shows fewer instances than were acknowledged before it
    was sent, nor an instance that was not sent."""
    series_names = [f"busy-{n}" for n in range(4)]
    instances = [make("busy-study", series_names[n % 4], n) for n in range(240)]
    study = instances[0].study
    series_uids = [uid(name) for name in series_names]
    sent = {i.sop: i.data for i in instances}
    acknowledged: set[str] = set()
    queue = list(instances)
    reads: Counter[str] = Counter()
    problems: list[str] = []
    writing = True

    async def writer(session: aiohttp.ClientSession) -> None:
        while queue:
            batch = [queue.pop() for _ in range(min(2, len(queue)))]
            status = await stow(session, live_server.url, batch)
            if status != 200:
                problems.append(f"STOW {status}")
            acknowledged.update(i.sop for i in batch)

    async def reader(session: aiohttp.ClientSession, number: int) -> None:
        rng = random.Random(number)
        while writing:
            floor = set(acknowledged)
            series = rng.choice(series_uids)
            kind = rng.choice(["qido", "qido-series", "metadata", "instance-metadata"])
            if kind == "qido":
                found = await listed(session, live_server.url)
            elif kind == "qido-series":
                found = await listed(session, live_server.url, f"?SeriesInstanceUID={series}")
                floor = {sop for sop in floor if sop in by_series[series]}
            elif kind == "metadata":
                url = f"{live_server.url}/studies/{study}/series/{series}/metadata"
                async with session.get(url) as response:
                    if response.status == 404 and not floor & by_series[series]:
                        continue  # the series has no instance yet
                    if response.status != 200:
                        problems.append(f"metadata {response.status}")
                        continue
                    found = {item["00080018"]["Value"][0] for item in await response.json()}
                floor = {sop for sop in floor if sop in by_series[series]}
            else:
                if not floor:
                    continue
                sop = rng.choice(sorted(floor))
                url = f"{live_server.url}/studies/{study}/series/{where[sop]}/instances/{sop}"
                async with session.get(f"{url}/metadata") as response:
                    if response.status != 200:
                        problems.append(f"instance metadata {response.status}")
                        continue
                    found = {(await response.json())[0]["00080018"]["Value"][0]}
                floor = {sop}
            reads[kind] += 1
            if not floor <= found:
                problems.append(f"{kind}: {len(floor - found)} acknowledged instances missing")
            if not found <= set(sent):
                problems.append(f"{kind}: an instance that was not sent")

    by_series = {s: set() for s in series_uids}
    where = {}
    for i in instances:
        by_series[i.series].add(i.sop)
        where[i.sop] = i.series
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        readers = [asyncio.create_task(reader(session, n)) for n in range(4)]
        await asyncio.gather(*(writer(session) for _ in range(8)))
        writing = False
        await asyncio.gather(*readers)
    print(f"\nreads during STOW: {dict(reads)}, problems: {len(problems)}")
    assert not problems, problems[:10]
    assert sum(reads.values()) > 50, reads
    assert await assert_index_and_disk_agree(live_server, sent) == set(sent)
