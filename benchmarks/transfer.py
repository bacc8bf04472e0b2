"""``localdicom pull`` and ``push`` against Orthanc's own DICOMweb client, side by side in
one run.

    python -m benchmarks.transfer FOLDER [--count 1000] [--rounds 3]   # the full workload
    python -m benchmarks.transfer --smoke         # a tiny one, as the tests run it

Generates synthetic 512x512 CT instances (cached in FOLDER, ~0.5 MB each) and stores them in
a source Orthanc (DICOMweb plugin). Then:

- pull: ``localdicom pull SOURCE --all`` into a new archive (a fresh process, start-up
  included, one flush at the end), against a new Orthanc that has the source among its
  ``DicomWeb.Servers`` retrieving the same study (``POST /dicom-web/servers/source/retrieve``,
  WADO-RS, stored with its SyncStorageArea);
- push: ``localdicom push TARGET --all`` from that archive to an empty Orthanc, against an
  Orthanc sending the study it holds to another empty Orthanc
  (``POST /dicom-web/servers/target/stow``, STOW-RS).

Every destination is checked afterwards (it holds every instance). Each round writes to
destinations nobody wrote before (a new archive, new Orthancs; Orthanc's pusher started
again to name its new target), and deletes the previous round's copies only before it
starts, then waits :data:`INODE_REUSE` seconds: on an ext4 without a journal (this
project's benchmark machine: ``/proc/fs/jbd2`` is empty), creating a file skips every inode
freed in the last 60 s, reading each one's inode table entry (Linux fs/ext4/ialloc.c,
``recently_deleted``, "in no journal mode"); a pull right after the previous round's copies
were deleted spent 13 % of its CPU there (``perf``), a cost a laptop's journaled ext4 never
has. Before each timed run everything is written back and the disk
left alone for ``SETTLE`` seconds. Prints, for every run (``--rounds``, Orthanc first in
each), seconds and instances/s for each side, localdicom's speed-up (Orthanc's seconds /
localdicom's), the CPU seconds of each side's client (localdicom's process; the Orthanc that
retrieves or sends, read from /proc), which other load on the machine inflates less than the
seconds, and the load average before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks.dataset import uid, write_series
from benchmarks.servers import Server, as_installed, orthanc

STUDY, SERIES = "transfer-bench-study", "transfer-bench-series"
#: Seconds waited after a sync before each timed run (:func:`settle`).
SETTLE = 6
#: Seconds after which ext4 without a journal allocates a freed inode again (RECENTCY_MIN
#: in Linux fs/ext4/ialloc.c, once the inode table block is written back), and one more.
INODE_REUSE = 61


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


@dataclass(frozen=True)
class Timing:
    """One side of one run: seconds, and the CPU seconds of the client that moved the data
    (localdicom's process; the Orthanc whose DICOMweb client retrieved or sent)."""

    seconds: float
    cpu: float


@dataclass(frozen=True)
class Row:
    name: str
    orthanc: Timing
    ours: Timing
    #: The 1-minute load average just before the run (the machine is shared).
    load: float


def localdicom(*args: str) -> Timing:
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "localdicom", *args], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"localdicom {args[0]} failed: {done.stdout}{done.stderr}")
    return Timing(seconds, _children_cpu() - cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_post(server: Server, url: str, body: dict) -> Timing:
    """A call that keeps ``server`` busy until it answers, with the CPU it took."""
    cpu = server.cpu_seconds()
    started = time.perf_counter()
    post(url, json.dumps(body).encode())
    return Timing(time.perf_counter() - started, server.cpu_seconds() - cpu)


def settle(seconds: float) -> None:
    """Write everything back and wait before a timed run: on this ext4, files deleted just
    before (the previous run's) make every file created for a while after several times
    dearer in CPU (see benchmarks.compare), and localdicom creates two per instance."""
    subprocess.run(["sync"], check=True)
    time.sleep(seconds)


def clear_round(work: Path, number: int, pause: float) -> None:
    """Delete the copies of round ``number`` in ``work`` (its servers are stopped), if any,
    then wait until ext4 without a journal takes freed inodes again (:data:`INODE_REUSE`;
    no wait for a run without pauses), so that no timed run creates files where files were
    just deleted, and the page cache holds one round's copies at most."""
    folder = work / f"round-{number}"
    if not folder.exists():
        return
    shutil.rmtree(folder)
    settle(INODE_REUSE if pause else 0)


def check(server: Server, count: int) -> None:
    if (held := instances_in(server)) != count:
        raise RuntimeError(f"{server.root} holds {held} instances, not {count}")


class Bench:
    """The servers of a run: a source Orthanc with the data, an Orthanc per round that pulls
    from it, an Orthanc that pushes to another, and the empty targets of both pushes."""

    def __init__(self, work: Path, files: list[Path], pause: float) -> None:
        self.work = work
        #: Seconds to let the disk settle before each timed run.
        self.pause = pause
        self.count = len(files)
        self.servers: list[Server] = []
        self.source = self.start(orthanc(work / "source"))
        for path in files:
            post(rest(self.source) + "/instances", path.read_bytes(), "application/dicom")
        self.pusher = self.start(orthanc(work / "pusher"))
        for path in files:
            post(rest(self.pusher) + "/instances", path.read_bytes(), "application/dicom")
        self.pusher.stop()  # started again each round, to send to that round's target
        #: What the last pull stored, which the push sends.
        self.archive = work / "archive"

    def start(self, server: Server) -> Server:
        self.servers.append(server)
        server.start()
        return server

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def pull(self, number: int) -> Row:
        """Pull into a new Orthanc and a new archive (see the module docstring), which stay:
        the push that follows sends this archive."""
        load = os.getloadavg()[0]
        sources = {"source": [self.source.root + "/"]}
        puller = self.start(orthanc_with(self.work / f"round-{number}" / "puller", sources))
        resources = {"Resources": [{"Study": uid(STUDY)}]}
        url = rest(puller) + "/dicom-web/servers/source/retrieve"
        settle(self.pause)
        theirs = timed_post(puller, url, resources)
        check(puller, self.count)
        puller.stop()
        self.archive = self.work / f"round-{number}" / "archive"
        settle(self.pause)
        ours = localdicom("pull", self.source.root, "-a", str(self.archive), "--all", "-j", "4")
        if (held := sum(1 for _ in self.archive.glob("*/*/*.dcm"))) != self.count:
            raise RuntimeError(f"the archive holds {held} instances, not {self.count}")
        return Row("pull", theirs, ours, load)

    def push(self, number: int) -> Row:
        """Push what the last pull stored to a new Orthanc, against Orthanc's pusher sending
        the same to another new one (see the module docstring)."""
        load = os.getloadavg()[0]
        target_ours = self.start(orthanc(self.work / f"round-{number}" / "target-ours"))
        target_theirs = self.start(orthanc(self.work / f"round-{number}" / "target-theirs"))
        pusher = self.start(
            orthanc_with(self.work / "pusher", {"target": [target_theirs.root + "/"]})
        )
        settle(self.pause)
        ours = localdicom("push", target_ours.root, "-a", str(self.archive), "--all")
        check(target_ours, self.count)
        with urllib.request.urlopen(rest(pusher) + "/studies", timeout=60) as response:
            study_ids = json.loads(response.read())
        url = rest(pusher) + "/dicom-web/servers/target/stow"
        settle(self.pause)
        theirs = timed_post(pusher, url, {"Resources": study_ids})
        check(target_theirs, self.count)
        for server in (target_ours, target_theirs, pusher):
            server.stop()
        return Row("push", theirs, ours, load)


def run(folder: Path, count: int, rounds: int, pause: float = SETTLE) -> list[Row]:
    """Pull then push, ``rounds`` times; Orthanc first in each."""
    files = write_series(folder / "data", STUDY, SERIES, count)
    as_installed()
    work = Path(tempfile.mkdtemp(prefix="transfer-bench-", dir=folder))
    bench = None
    try:
        bench = Bench(work, files, pause)
        rows = []
        for number in range(rounds):
            clear_round(work, number - 1, pause)
            rows += [bench.pull(number), bench.push(number)]
    finally:
        if bench is not None:
            bench.stop()
        shutil.rmtree(work, ignore_errors=True)  # the last round's copies; the cache stays
    return sorted(rows, key=lambda row: row.name)


def table(rows: list[Row], count: int) -> list[str]:
    lines = [
        f"{count} instances of 512x512 CT (~0.5 MB each); CPU: the client's (localdicom's "
        "process, the Orthanc that retrieves or sends)",
        "",
        "| transfer | Orthanc s | localdicom s | Orthanc inst/s | localdicom inst/s | speed-up "
        "| Orthanc CPU s | localdicom CPU s | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        theirs, ours = row.orthanc, row.ours
        lines.append(
            f"| {row.name} | {theirs.seconds:.2f} | {ours.seconds:.2f} | "
            f"{count / theirs.seconds:.0f} | {count / ours.seconds:.0f} | "
            f"{theirs.seconds / ours.seconds:.2f} | {theirs.cpu:.2f} | {ours.cpu:.2f} | "
            f"{row.load:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", help="where instances are cached")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="pull and push this many times")
    parser.add_argument("--smoke", action="store_true", help="a tiny workload")
    args = parser.parse_args()
    count = 10 if args.smoke else args.count
    folder = args.folder or Path(tempfile.mkdtemp(prefix="transfer-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        rows = run(folder, count, args.rounds, 0 if args.smoke else SETTLE)
    finally:
        if args.folder is None:  # no cache asked for
            shutil.rmtree(folder, ignore_errors=True)
    for line in table(rows, count):
        print(line)


if __name__ == "__main__":
    main()
