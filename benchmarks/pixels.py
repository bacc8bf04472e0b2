"""Pixel-data speed: frames, decoded frames and rendered images, next to the codec alone.

    python -m benchmarks.pixels [--count 40] [--rounds 3]

Stores a 512x512 16-bit CT series twice (uncompressed and JPEG 2000 lossless) in a fresh
localdicom, then measures over HTTP at concurrency 1 and 8: uncompressed frames served as
stored, JPEG 2000 frames decoded to uncompressed, and rendered JPEGs. Next to each HTTP figure
it prints what the codec does alone in this process (pydicom + pylibjpeg decode, numpy +
Pillow render), so Python glue on the server side shows as the gap between the two. Every
answer is checked (frame bytes against pydicom's decode, JPEG signature), so an error can
never look fast.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np
import pydicom
from pydicom.pixels import pixel_array

from benchmarks.dataset import write_series
from benchmarks.servers import localdicom
from localdicom.dicom.decoding import preferred_plugin
from localdicom.dicom.render import RenderParams, render_frame

UNCOMPRESSED = 'multipart/related; type="application/octet-stream"'
AS_STORED = UNCOMPRESSED + "; transfer-syntax=*"


def multipart_body(body: bytes, content_type: str) -> bytes:
    """The single part of a multipart/related response."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    part = body.split(b"--" + boundary)[1]
    return part.split(b"\r\n\r\n", 1)[1][:-2]


async def store(session: aiohttp.ClientSession, root: str, paths: list[Path]) -> None:
    for path in paths:
        async with session.post(
            f"{root}/studies",
            data=path.read_bytes(),
            headers={"Content-Type": "application/dicom"},
        ) as response:
            assert response.status == 200, await response.text()


async def measure(
    requests: list[Callable[[], Awaitable[None]]], concurrency: int
) -> tuple[float, float]:
    """Run every request once with ``concurrency`` in flight: (per second, median ms)."""
    queue = list(requests)
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            request = queue.pop()
            started = time.perf_counter()
            await request()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return len(requests) / elapsed, statistics.median(latencies)


def frame_request(session, url: str, accept: str, expected: str):
    async def request() -> None:
        async with session.get(url, headers={"Accept": accept}) as response:
            body = await response.read()
            assert response.status == 200, body[:200]
            frame = multipart_body(body, response.headers["Content-Type"])
            assert hashlib.sha256(frame).hexdigest() == expected, "wrong frame bytes"

    return request


def rendered_request(session, url: str):
    async def request() -> None:
        async with session.get(url, headers={"Accept": "image/jpeg"}) as response:
            body = await response.read()
            assert response.status == 200 and body[:2] == b"\xff\xd8", body[:200]

    return request


def codec_rates(paths: list[Path]) -> tuple[float, float]:
    """Frames/s of pydicom's decode alone (with the plugin the server tries first), and
    renders/s of render_frame alone."""
    syntax = str(pydicom.dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID)
    plugin = preferred_plugin(syntax)
    started = time.perf_counter()
    arrays = [pixel_array(path, decoding_plugin=plugin) for path in paths]
    decode = len(paths) / (time.perf_counter() - started)
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    started = time.perf_counter()
    for array in arrays:
        render_frame(array, header, RenderParams())
    return decode, len(paths) / (time.perf_counter() - started)


async def run(count: int, rounds: int, folder: Path) -> list[tuple[str, float, float, str]]:
    native = write_series(folder / "data", "study-pixels", "series-native", count)
    j2k = write_series(folder / "data", "study-pixels", "series-j2k", count, syntax="j2k")
    server = localdicom(folder / "server", "--no-fsync")
    server.start()
    rows = []
    try:
        async with aiohttp.ClientSession() as session:
            await store(session, server.root, native + j2k)
            for label, paths, accept in (
                ("uncompressed frame, as stored", native, AS_STORED),
                ("JPEG 2000 frame decoded", j2k, UNCOMPRESSED),
            ):
                requests = []
                for path in paths:
                    ds = pydicom.dcmread(path)
                    expected = np.ascontiguousarray(ds.pixel_array, "<u2").tobytes()
                    url = (
                        f"{server.root}/studies/{ds.StudyInstanceUID}/series/"
                        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"
                    )
                    digest = hashlib.sha256(expected).hexdigest()
                    requests.append(frame_request(session, url, accept, digest))
                for concurrency in (1, 8):
                    rate, median = best(await repeat(requests, concurrency, rounds))
                    rows.append((f"{label}, c{concurrency}", rate, median, "frames/s"))
            renders = []
            for path in native:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                renders.append(
                    rendered_request(
                        session,
                        (
                            f"{server.root}/studies/{ds.StudyInstanceUID}/series/"
                            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered"
                        ),
                    )
                )
            for concurrency in (1, 8):
                rate, median = best(await repeat(renders, concurrency, rounds))
                rows.append((f"rendered JPEG, c{concurrency}", rate, median, "images/s"))
    finally:
        server.stop()
    decode, render = codec_rates(j2k)
    rows.append(("codec alone: JPEG 2000 decode, 1 core", decode, 1000 / decode, "frames/s"))
    rows.append(("codec alone: render to JPEG, 1 core", render, 1000 / render, "images/s"))
    return rows


async def repeat(requests, concurrency: int, rounds: int) -> list[tuple[float, float]]:
    return [await measure(requests, concurrency) for _ in range(rounds)]


def best(results: list[tuple[float, float]]) -> tuple[float, float]:
    """The median round by rate."""
    results = sorted(results)
    return results[len(results) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=40, help="slices per series")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="localdicom-bench-") as folder:
        rows = asyncio.run(run(args.count, args.rounds, Path(folder)))
    print(f"\n512x512 16-bit CT, {args.count} instances, median of {args.rounds} rounds\n")
    print(f"| {'operation':<40} | {'rate':>9} | {'unit':<9} | {'median ms':>9} |")
    print(f"| {'-' * 40} | {'-' * 8}: | {'-' * 9} | {'-' * 8}: |")
    for label, rate, median, unit in rows:
        print(f"| {label:<40} | {rate:>9.1f} | {unit:<9} | {median:>9.1f} |")


if __name__ == "__main__":
    main()
