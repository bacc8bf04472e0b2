"""The floor under every QIDO-RS search on aiohttp: the time a bare application takes to
answer a GET with a fixed body.

    python -m benchmarks.http_floor              # 3 runs of 5,000 requests
    python -m benchmarks.http_floor --smoke

An aiohttp application with one route, answering every GET with the same short DICOM JSON
body, runs in its own process; it is asked one request after another over one kept-alive
socket by the bare client of :mod:`benchmarks.compare` (``BareConnection``,
``measure_bare``), the client that times the searches there. What it measures is the
exchange alone, with no search behind it: issue 22 asks for QIDO-RS answers 10 times
faster than Orthanc's at p50 and p95, which is 0.13-0.19 ms for the four searches Orthanc
answers in 1.3-1.9 ms, and no search served by aiohttp answers faster than this.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from benchmarks.compare import BareConnection, Check, measure_bare
from benchmarks.servers import Server, free_port

BODY = b'[{"00100020": {"vr": "LO", "Value": ["PID-1"]}}]'
JSON = "application/dicom+json"


def serve(port: int) -> None:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type=JSON)

    application = web.Application()
    application.router.add_get("/studies", answer)
    web.run_app(application, host="127.0.0.1", port=port, print=None)


def fixed_body(connection: BareConnection) -> Check:
    status, body, _ = connection.get("studies?PatientID=PID-1", JSON)
    return lambda: _check(status, bytes(body))


def _check(status: int, body: bytes) -> None:
    if status != 200 or body != BODY:
        raise AssertionError(f"answered {status} {body[:80]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a tiny run")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    count, runs = (50, 1) if args.smoke else (args.requests, args.runs)
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.http_floor", "--serve", str(port)]
    with tempfile.TemporaryDirectory() as folder:
        server = Server("bare aiohttp", command, f"http://127.0.0.1:{port}", Path(folder) / "log")
        server.start(ready_path="/studies")
        try:
            measure_bare(server.root, [fixed_body] * min(count, 500))  # warm-up, not counted
            figures = [measure_bare(server.root, [fixed_body] * count) for _ in range(runs)]
        finally:
            server.stop()
    print(f"a bare aiohttp application, one fixed body, {count} GETs per run")
    print()
    print("| run | p50 ms | p95 ms | errors |")
    print("| --- | ---: | ---: | ---: |")
    for number, figure in enumerate(figures, 1):
        print(f"| {number} | {figure.p50:.3f} | {figure.p95:.3f} | {figure.errors} |")


if __name__ == "__main__":
    main()
