"""``localdicom pull`` and ``push`` against Orthanc's own DICOMweb client, side by side in
one run.

    python -m benchmarks.transfer FOLDER [--count 1000]   # the full workload
    python -m benchmarks.transfer --smoke                  # a tiny one, as the tests run it

Generates synthetic 512x512 CT instances (cached in FOLDER, ~0.5 MB each) and stores them in
a source Orthanc (DICOMweb plugin). Then:

- pull: ``localdicom pull SOURCE --all`` into an empty archive (a fresh process, start-up
  included, one flush at the end), against a second Orthanc that has the source among its
  ``DicomWeb.Servers`` retrieving the same study (``POST /dicom-web/servers/source/retrieve``,
  WADO-RS, stored with its SyncStorageArea);
- push: ``localdicom push TARGET --all`` from that archive to an empty Orthanc, against the
  second Orthanc sending the study it holds to another empty Orthanc
  (``POST /dicom-web/servers/target/stow``, STOW-RS).

Every destination is checked afterwards (it holds every instance). Prints seconds and
instances/s for each side and localdicom's speed-up (Orthanc's seconds / localdicom's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.dataset import uid, write_series
from benchmarks.servers import Server, orthanc

STUDY, SERIES = "transfer-bench-study", "transfer-bench-series"


def post(url: str, data: bytes, content_type: str = "application/json") -> bytes:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=3600) as response:
        return response.read()


def rest(server: Server) -> str:
    return server.root.removesuffix("/dicom-web")


def instances_in(server: Server) -> int:
    with urllib.request.urlopen(rest(server) + "/statistics", timeout=60) as response:
        return int(json.loads(response.read())["CountInstances"])


def orthanc_with(folder: Path, servers: dict[str, str]) -> Server:
    """An Orthanc whose DICOMweb client knows ``servers`` (name -> DICOMweb root)."""
    dicomweb = {"Enable": True, "Root": "/dicom-web/", "Servers": servers}
    return orthanc(folder, DicomWeb=dicomweb)


def localdicom(*args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "localdicom", *args], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"localdicom {args[0]} failed: {done.stdout}{done.stderr}")
    return seconds


def timed_post(url: str, body: dict) -> float:
    started = time.perf_counter()
    post(url, json.dumps(body).encode())
    return time.perf_counter() - started


def run(folder: Path, count: int) -> list[tuple[str, float, float]]:
    files = write_series(folder / "data", STUDY, SERIES, count)
    work = Path(tempfile.mkdtemp(prefix="transfer-bench-", dir=folder))
    servers: list[Server] = []

    def start(server: Server) -> Server:
        servers.append(server)
        server.start()
        return server

    try:
        source = start(orthanc(work / "source"))
        for path in files:
            post(rest(source) + "/instances", path.read_bytes(), "application/dicom")
        puller = start(orthanc_with(work / "puller", {"source": [source.root + "/"]}))
        orthanc_pull = timed_post(
            rest(puller) + "/dicom-web/servers/source/retrieve",
            {"Resources": [{"Study": uid(STUDY)}]},
        )
        archive = work / "archive"
        ours_pull = localdicom("pull", source.root, "-a", str(archive), "--all", "-j", "4")
        target_ours = start(orthanc(work / "target-ours"))
        ours_push = localdicom("push", target_ours.root, "-a", str(archive), "--all")
        target_theirs = start(orthanc(work / "target-theirs"))
        pusher = start(orthanc_with(work / "pusher", {"target": [target_theirs.root + "/"]}))
        for path in files:
            post(rest(pusher) + "/instances", path.read_bytes(), "application/dicom")
        with urllib.request.urlopen(rest(pusher) + "/studies", timeout=60) as response:
            study_ids = json.loads(response.read())
        orthanc_push = timed_post(
            rest(pusher) + "/dicom-web/servers/target/stow", {"Resources": study_ids}
        )
        held = [instances_in(puller), instances_in(target_ours), instances_in(target_theirs)]
        held.append(sum(1 for _ in archive.glob("*/*/*.dcm")))
        if held != [count] * 4:
            raise RuntimeError(f"a destination does not hold every instance: {held}")
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)  # five copies of the data; the cache stays
    return [("pull", orthanc_pull, ours_pull), ("push", orthanc_push, ours_push)]


def table(rows: list[tuple[str, float, float]], count: int) -> list[str]:
    lines = [
        f"{count} instances of 512x512 CT (~0.5 MB each)",
        "",
        "| transfer | Orthanc s | localdicom s | Orthanc inst/s | localdicom inst/s | speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, theirs, ours in rows:
        lines.append(
            f"| {name} | {theirs:.2f} | {ours:.2f} | {count / theirs:.0f} | "
            f"{count / ours:.0f} | {theirs / ours:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", help="where instances are cached")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="a tiny workload")
    args = parser.parse_args()
    count = 10 if args.smoke else args.count
    folder = args.folder or Path(tempfile.mkdtemp(prefix="transfer-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        rows = run(folder, count)
    finally:
        if args.folder is None:  # no cache asked for
            shutil.rmtree(folder, ignore_errors=True)
    for line in table(rows, count):
        print(line)


if __name__ == "__main__":
    main()
