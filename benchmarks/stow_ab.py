"""STOW-RS rates of several running servers, in interleaved rounds: an A/B of two builds.

    python -m localdicom serve /scratch/a --port 8101 &            # one build
    (cd ../other-checkout && python -m localdicom serve /scratch/b --port 8102 &)
    python -m benchmarks.stow_ab http://127.0.0.1:8101 http://127.0.0.1:8102 --concurrency 8
    python -m benchmarks.stow_ab URL_A URL_B --pid PID_A --pid PID_B   # and CPU per instance

Each round sends every server COUNT new 512x512 CT slices (``benchmarks.dataset``, a new
series each time: nothing is a re-send), one per request, CONCURRENCY at a time; the servers
take turns, in the opposite order every other round, so a machine whose speed drifts (a
shared one) favours none. The rate of every round is printed, and the median; with a
``--pid`` per server (the server's process), also the CPU its process tree (worker
processes included) spent per instance, read from /proc, which moves less with other load
than the rate. Bodies are built before the clock starts; the first round of each server is
a warm-up and not counted. Any DICOMweb base URL works (Orthanc's ``/dicom-web`` too).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
import uuid

import aiohttp

from benchmarks.dataset import ct_slice
from benchmarks.servers import pids_for, tree_cpu_seconds


def request_body(study: str, series: str, index: int) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    ct_slice(study, series, index).save_as(buffer, enforce_file_format=True)
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + buffer.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


async def one_round(
    session: aiohttp.ClientSession, root: str, bodies: list[tuple[bytes, str]], concurrency: int
) -> float:
    """Instances stored per second."""
    waiting = list(reversed(bodies))

    async def sender() -> None:
        while waiting:
            body, content_type = waiting.pop()
            headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
            async with session.post(f"{root}/studies", data=body, headers=headers) as answer:
                text = await answer.text()
                assert answer.status == 200, f"{root}: {answer.status} {text[:200]}"

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return len(bodies) / (time.perf_counter() - started)


async def compare(
    servers: dict[str, int | None], rounds: int, count: int, concurrency: int
) -> None:
    rates: dict[str, list[float]] = {root: [] for root in servers}
    cpu: dict[str, list[float]] = {root: [] for root in servers}
    roots = list(servers)
    async with aiohttp.ClientSession() as session:
        for number in range(rounds + 1):
            for root in roots if number % 2 == 0 else roots[::-1]:
                series = f"stow-ab-{uuid.uuid4().hex}"
                bodies = [request_body("stow-ab", series, index) for index in range(count)]
                pid = servers[root]
                before = tree_cpu_seconds(pid) if pid else 0.0
                rate = await one_round(session, root, bodies, concurrency)
                if number:  # the first round warms each server up
                    rates[root].append(rate)
                    if pid:
                        cpu[root].append((tree_cpu_seconds(pid) - before) / count * 1000)
    print(f"| server | c{concurrency} instances/s, median | every round | CPU ms per instance |")
    print("| --- | ---: | --- | --- |")
    for root in roots:
        listed = ", ".join(f"{rate:.0f}" for rate in rates[root])
        spent = ", ".join(f"{ms:.1f}" for ms in cpu[root]) if servers[root] else "-"
        print(f"| {root} | {statistics.median(rates[root]):.1f} | {listed} | {spent} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("roots", nargs="+", metavar="URL", help="DICOMweb base URLs")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--count", type=int, default=200, help="instances per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--pid", type=int, action="append", default=[], help="each server's process, in order"
    )
    options = parser.parse_args()
    pids = pids_for(parser, options.pid, options.roots, "URL")
    servers = dict(zip(options.roots, pids, strict=True))
    asyncio.run(compare(servers, options.rounds, options.count, options.concurrency))


if __name__ == "__main__":
    main()
