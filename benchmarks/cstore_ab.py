"""C-STORE rates of several running DICOM listeners, in interleaved rounds: an A/B of two builds.

    python -m localdicom serve /scratch/a --port 8101 --dicom-port 11201 &      # one build
    (cd ../other-checkout && python -m localdicom serve /scratch/b --port 8102 --dicom-port 11202 &)
    python -m benchmarks.cstore_ab 11201 11202                   # over one and four associations
    python -m benchmarks.cstore_ab 11201 11202 --pid PID_A --pid PID_B  # and CPU per instance

Each round sends every listener COUNT 512x512 CT slices it has never seen (a new series each
time, written to a scratch folder and flushed before the clock starts) with dcmtk's storescu,
as :mod:`benchmarks.dimse` does (Nagle's algorithm off): over one association, or split
among several storescu processes at once, one association each. The listeners take turns,
in the opposite order every other round, so that a machine whose speed drifts favours none;
the first round of each is a warm-up and not counted. Prints every round's rate and the
median, and with a ``--pid`` per listener the CPU its process tree spent per instance, which
moves less with the machine's state than the rate. Any C-STORE SCP works (``--ae-title``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import uuid
from pathlib import Path

from pydicom.dataset import Dataset

from benchmarks.dataset import ct_slice, uid
from benchmarks.dimse import CALLING, DCMTK, send_at_once
from benchmarks.servers import pids_for, tree_cpu_seconds


def new_series(slices: list[Dataset], folder: Path) -> list[Path]:
    """``slices`` under a series (and SOP Instance UIDs) nobody has seen, written to
    ``folder`` and flushed."""
    name = f"cstore-ab/{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    paths = []
    for index, ds in enumerate(slices):
        ds.SeriesInstanceUID = uid(name)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid(f"{name}/{index}")
        path = folder / f"{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    os.sync()  # their write-back is not measured
    return paths


def send(port: int, ae_title: str, files: list[Path], associations: int) -> float:
    """Instances stored per second: ``files`` split among ``associations`` storescu."""
    storescu = [str(DCMTK / "storescu"), "-aet", CALLING, "-aec", ae_title]
    elapsed, ended = send_at_once([*storescu, "127.0.0.1", str(port)], files, associations)
    for code, output in ended:
        if code:
            raise SystemExit(f"storescu to port {port} exited {code}: {output[-500:]!r}")
    return len(files) / elapsed


def compare(
    listeners: dict[int, int | None],
    ae_title: str,
    rounds: int,
    count: int,
    associations: list[int],
) -> None:
    slices = [ct_slice("cstore-ab", "cstore-ab", index) for index in range(count)]
    ports = list(listeners)
    rates = {(port, each): [] for port in ports for each in associations}
    cpu = {key: [] for key in rates}
    with tempfile.TemporaryDirectory() as scratch:
        for number in range(rounds + 1):
            for each in associations:
                for port in ports if number % 2 == 0 else ports[::-1]:
                    folder = Path(scratch) / f"{number}-{each}-{port}"
                    files = new_series(slices, folder)
                    pid = listeners[port]
                    before = tree_cpu_seconds(pid) if pid else 0.0
                    rate = send(port, ae_title, files, each)
                    if number:  # the first round warms each listener up
                        rates[(port, each)].append(rate)
                        if pid:
                            spent = tree_cpu_seconds(pid) - before
                            cpu[(port, each)].append(spent / count * 1000)
                    shutil.rmtree(folder)
    print("| port | associations | instances/s, median | every round | CPU ms per instance |")
    print("| --- | ---: | ---: | --- | --- |")
    for port, each in rates:
        listed = ", ".join(f"{rate:.0f}" for rate in rates[(port, each)])
        spent = ", ".join(f"{ms:.1f}" for ms in cpu[(port, each)]) if listeners[port] else "-"
        median = statistics.median(rates[(port, each)])
        print(f"| {port} | {each} | {median:.1f} | {listed} | {spent} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ports", nargs="+", type=int, metavar="PORT", help="DICOM ports")
    parser.add_argument("--ae-title", default="LOCALDICOM", help="the listeners' AE title")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--count", type=int, default=500, help="instances per round")
    parser.add_argument(
        "--associations",
        type=int,
        action="append",
        help="storescu processes at once (repeatable; default: 1, then 4)",
    )
    parser.add_argument(
        "--pid", type=int, action="append", default=[], help="each listener's process, in order"
    )
    options = parser.parse_args()
    pids = pids_for(parser, options.pid, options.ports, "port")
    listeners = dict(zip(options.ports, pids, strict=True))
    associations = options.associations or [1, 4]
    compare(listeners, options.ae_title, options.rounds, options.count, associations)


if __name__ == "__main__":
    main()
