"""localdicom's DICOM side (DIMSE) against Orthanc's, side by side in one run.

    python -m benchmarks.dimse            # the full workload (a few minutes)
    python -m benchmarks.dimse --smoke    # a tiny one, as the tests run it

Generates synthetic 512x512 CT instances once, starts both servers on empty storage on
loopback with their default durability (Orthanc's SyncStorageArea, localdicom's --fsync), and
measures, with C++ clients where the client's own cost would otherwise weigh (dcmtk):

- C-STORE (PS3.4 B): storescu sending a folder over one association, and four storescu
  processes each sending a quarter over an association of its own; each server gets instances
  it does not hold yet, and afterwards is asked (QIDO-RS) whether it holds every one of them;
- C-FIND (PS3.4 C, Study Root): a bare requestor over one kept association
  (:mod:`benchmarks.bare_find`: pynetdicom's own requestor costs milliseconds per query,
  more than the servers), the same query many times; every answer's result set is checked
  against what was stored. C-ECHO (PS3.7 9.1.5) the same way: the round trip of a request
  that asks for nothing, the floor under every query;
- C-GET (PS3.4 C.4.3) of a whole series: getscu, each instance written as received
  (``+B``); the instances received are checked after the clock stopped.

Every client, and Orthanc, runs with Nagle's algorithm off (TCP_NODELAY), which dcmtk
leaves on: otherwise a message of several PDUs waits for a delayed ACK, and what
is measured is the kernel's 40 ms timer. localdicom runs as it ships.

A server that answers a service with a failure status (a service localdicom does not provide
yet) gets "n/a" in its column instead of a figure. Prints one table as benchmarks.compare
does: Orthanc's figure, localdicom's and the ratio (higher is better for localdicom), medians
over rounds, with the server's CPU time and the disk's cache flushes per instance stored;
C-STORE is measured once per server (a second round would store nothing new).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydicom.dataset import Dataset

from benchmarks.bare_find import BareFind, decoded
from benchmarks.compare import (
    CPU,
    RATE,
    STORED,
    UNITS,
    Figure,
    Tally,
    flushes_per_item,
    settle_disk,
    table_header,
    table_row,
)
from benchmarks.dataset import ct_slice, uid, write_series
from benchmarks.servers import Server, free_port, localdicom, orthanc

CALLING = "BENCH"  # the AE title of every client here, known to Orthanc as a modality
DCMTK = Path("/usr/bin")  # not PATH: pynetdicom installs scripts named storescu, getscu ...
#: dcmtk leaves Nagle's algorithm on unless its TCP_NODELAY variable says otherwise: getscu
#: then acknowledges each instance 40 ms late (40 instances in 1.9 s from Orthanc, 0.12 s
#: without), which measures the kernel's delayed ACK, not the server.
CLIENT_ENVIRONMENT = {**os.environ, "TCP_NODELAY": "1"}
MODALITIES = ("CT", "MR", "US", "CR", "MG")
LATENCY = ("ms p50", "ms p95")


@dataclass
class Workload:
    """Sizes; the defaults are the full run, --smoke shrinks them."""

    store: int = 500  # instances per C-STORE measurement
    get: int = 200  # instances of the series C-GET retrieves
    small_studies: int = 100  # one small instance each: something for study queries to sift
    finds: int = 200  # queries per C-FIND measurement and round
    gets: int = 2  # C-GETs of the series per round
    rounds: int = 3


@dataclass
class Node:
    """A server and its DICOM side."""

    server: Server
    ae_title: str
    port: int

    @property
    def name(self) -> str:
        return self.server.name


@dataclass
class Data:
    folder: Path
    store_one: list[Path]  # sent over one association
    store_four: list[Path]  # sent over four
    get_study: str
    get_series: str
    get_sops: set[str]
    studies: dict[str, dict]  # study UID -> PatientID, StudyDate (the small studies)


def build(workload: Workload, folder: Path) -> Data:
    """The instances, written once (kept from run to run with --keep)."""
    small: dict[str, dict] = {}
    for s in range(workload.small_studies):
        path = folder / "small" / f"small-{s:03d}.dcm"
        ds = ct_slice(
            f"small-{s}",
            f"small-{s}",
            0,
            size=64,
            patient=f"P{s:03d}^{'ABCDE'[s % 5]}NAME",
            date=f"20{10 + s % 12:02d}{1 + s % 12:02d}{1 + s % 28:02d}",
            modality=MODALITIES[s % len(MODALITIES)],
        )
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
        small[str(ds.StudyInstanceUID)] = {"PatientID": ds.PatientID, "StudyDate": ds.StudyDate}
    write_series(folder / "get", "get-study", "get-series", workload.get)
    return Data(
        folder,
        write_series(folder / "store-one", "store-study", "store-one", workload.store),
        write_series(folder / "store-four", "store-study", "store-four", workload.store),
        uid("get-study"),
        uid("get-series"),
        {uid(f"get-series/{i}") for i in range(workload.get)},
        small,
    )


# the servers ---------------------------------------------------------------------------------


def start(folder: Path) -> list[Node]:
    """Orthanc, then localdicom, each with its DICOM server on a port of its own."""
    orthanc_port, localdicom_port = free_port(), free_port()
    nodes = [
        Node(
            orthanc(
                folder / "orthanc",
                DicomServerEnabled=True,
                DicomAet="ORTHANC",
                DicomPort=orthanc_port,
                # C-FIND and C-GET are answered to known modalities only
                DicomModalities={"bench": [CALLING, "127.0.0.1", free_port()]},
            ),
            "ORTHANC",
            orthanc_port,
        ),
        Node(
            localdicom(folder / "localdicom", "--dicom-port", str(localdicom_port)),
            "LOCALDICOM",
            localdicom_port,
        ),
    ]
    # dcmtk, in Orthanc, leaves Nagle's algorithm on unless its TCP_NODELAY variable says
    # otherwise: each C-FIND answer (a command PDU, then an identifier PDU) then waits for the
    # client's delayed ACK, 40 ms of the kernel's (47 ms a query in a probe, 5 ms without).
    # Orthanc is measured at its best: a server that leaves it on pays for it here.
    nodes[0].server.command[:0] = ["env", "TCP_NODELAY=1"]
    for node in nodes:
        node.server.start()
    return nodes


def dcmtk(tool: str, node: Node, *args: str) -> list[str]:
    return [str(DCMTK / tool), "-aet", CALLING, "-aec", node.ae_title, "127.0.0.1", str(node.port)]


def stored_count(node: Node, study: str, series: str) -> int:
    """How many instances of a series the server holds, by QIDO-RS (both speak DICOMweb)."""
    url = f"{node.server.root}/studies/{study}/series/{series}/instances"
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return len(json.loads(body)) if body else 0


# C-STORE ---------------------------------------------------------------------------------------


def c_store(node: Node, series: str, files: list[Path], associations: int) -> Figure:
    """``files`` (the series so named) sent by ``associations`` storescu processes at once,
    each its share."""
    tally, cpu, flushes = Tally(), node.server.cpu_seconds(), node.server.disk_flushes()
    elapsed, ended = send_at_once(dcmtk("storescu", node), files, associations)
    tally.figure.cpu = (node.server.cpu_seconds() - cpu) * 1000 / len(files)
    tally.figure.flushes = flushes_per_item(flushes, node.server.disk_flushes(), len(files))
    for code, output in ended:
        if code:
            tally.failed(RuntimeError(f"storescu exited {code}: {output[-300:]!r}"))
    tally.latencies.append(elapsed * 1000)
    study, series_uid = uid("store-study"), uid(series)
    tally.checks.append(lambda: _all_stored(node, study, series_uid, len(files)))
    return tally.result(len(files), elapsed)


def send_at_once(
    storescu: list[str], files: list[Path], associations: int
) -> tuple[float, list[tuple[int, bytes]]]:
    """``files`` split among ``associations`` storescu processes (the command ``storescu``,
    each its share of the files appended) run at once: the seconds until the last ended,
    and each one's exit code and output."""
    shares = [files[k::associations] for k in range(associations)]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [*storescu, *map(str, share)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=CLIENT_ENVIRONMENT,
        )
        for share in shares
    ]
    outputs = [process.communicate()[0] for process in processes]
    elapsed = time.perf_counter() - started
    return elapsed, [(p.returncode, out) for p, out in zip(processes, outputs, strict=True)]


def _all_stored(node: Node, study: str, series: str, count: int) -> None:
    held = stored_count(node, study, series)
    assert held == count, f"{node.name} holds {held} of the {count} instances sent"


def load(node: Node, folders: list[Path]) -> None:
    """Store what the other operations need, unmeasured: the folders at once, one association
    each, so that whatever a server starts for concurrent stores is running before anything
    is timed (localdicom's worker processes start on the first concurrent upload: about a
    second of CPU that the four-association C-STORE otherwise paid)."""
    processes = [
        subprocess.Popen(
            [*dcmtk("storescu", node), "+sd", str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=CLIENT_ENVIRONMENT,
        )
        for folder in folders
    ]
    outputs = [process.communicate()[0] for process in processes]
    for folder, process, output in zip(folders, processes, outputs, strict=True):
        if process.returncode:
            raise RuntimeError(f"loading {folder} into {node.name}: {output[-500:]!r}")


# C-FIND ---------------------------------------------------------------------------------------


class Unsupported(Exception):
    """The server answered the service with a failure status: it does not provide it."""


def query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _echoed(final: int, matches: list[Dataset]) -> None:
    assert final == 0x0000 and not matches, f"C-ECHO answered 0x{final:04X}"


def c_find(node: Node, identifier: Dataset | None, check: Callable, repetitions: int) -> Figure:
    """The same query (a C-ECHO when ``identifier`` is None) ``repetitions`` times over one
    association (:class:`BareFind`); raises Unsupported if the first answer is a failure
    status. An association that breaks ends the measurement, with an error counted. The
    clock covers sending the prepared request and reading every response; the identifiers
    are decoded and checked after it stopped."""
    try:
        client = BareFind(node.port, node.ae_title, CALLING)
    except ConnectionError as error:
        raise Unsupported(str(error)) from error
    tally, elapsed = Tally(), 0.0
    try:
        for repetition in range(repetitions):
            request = client.echo_request() if identifier is None else client.request(identifier)
            started = time.perf_counter()
            try:
                final, matches = client.find(request)
            except (ConnectionError, ValueError) as exc:
                tally.latencies.append((time.perf_counter() - started) * 1000)
                tally.failed(exc)
                break
            taken = time.perf_counter() - started
            if final != 0x0000 and repetition == 0:
                raise Unsupported(f"status 0x{final:04X}")
            elapsed += taken
            tally.latencies.append(taken * 1000)
            tally.checks.append(
                lambda final=final, matches=matches: check(final, [decoded(m) for m in matches])
            )
    finally:
        client.release()
    return tally.result(repetitions, max(elapsed, 1e-9))


def expect(tag: str, expected: set[str]) -> Callable[[int, list[Dataset]], None]:
    def check(final: int, matches: list[Dataset]) -> None:
        assert final == 0x0000, f"final status 0x{final:04X}"
        got = [str(match.get(tag, "")) for match in matches]
        assert sorted(got) == sorted(expected), f"{len(got)} matches, expected {len(expected)}"

    return check


def find_operations(data: Data) -> dict[str, tuple[Dataset | None, Callable]]:
    """Name -> (identifier, check). Return keys are asked for as a viewer asks for them. The
    C-ECHO (no identifier) is the floor under every query: the round trip of a request,
    framing and dispatch included, before the server does any work for it."""
    studies = data.studies
    in_range = {s for s, a in studies.items() if "20150101" <= a["StudyDate"] <= "20171231"}
    study_keys = {"StudyInstanceUID": "", "PatientName": "", "StudyDate": "", "PatientID": ""}
    return {
        "C-ECHO, a request that asks for nothing": (None, _echoed),
        "C-FIND study, exact PatientID": (
            query("STUDY", **{**study_keys, "PatientID": "P007"}),
            expect("StudyInstanceUID", {s for s, a in studies.items() if a["PatientID"] == "P007"}),
        ),
        "C-FIND study, date range": (
            query("STUDY", **{**study_keys, "StudyDate": "20150101-20171231"}),
            expect("StudyInstanceUID", in_range),
        ),
        f"C-FIND image, the {len(data.get_sops)} instances of a series": (
            query(
                "IMAGE",
                StudyInstanceUID=data.get_study,
                SeriesInstanceUID=data.get_series,
                SOPInstanceUID="",
                InstanceNumber="",
                SOPClassUID="",
            ),
            expect("SOPInstanceUID", data.get_sops),
        ),
    }


# C-GET ----------------------------------------------------------------------------------------


def c_get(node: Node, data: Data, into: Path) -> Figure:
    """The whole series retrieved by getscu; raises Unsupported if nothing came."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    command = [*dcmtk("getscu", node), "-S", "+B", "-od", str(into)]
    command += ["-k", "QueryRetrieveLevel=SERIES"]
    command += ["-k", f"StudyInstanceUID={data.get_study}"]
    command += ["-k", f"SeriesInstanceUID={data.get_series}"]
    tally, cpu = Tally(), node.server.cpu_seconds()
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, env=CLIENT_ENVIRONMENT
    )
    elapsed = time.perf_counter() - started
    tally.figure.cpu = (node.server.cpu_seconds() - cpu) * 1000 / len(data.get_sops)
    received = {path.name for path in into.iterdir()}  # getscu +B: named by SOP UID
    if not received:
        raise Unsupported(f"nothing received: {(result.stdout + result.stderr)[-200:]!r}")
    tally.latencies.append(elapsed * 1000)
    tally.checks.append(lambda: _got_series(received, data.get_sops, result))
    figure = tally.result(1, elapsed)
    figure.rate *= len(data.get_sops)
    return figure


def _got_series(received: set[str], expected: set[str], result) -> None:
    assert result.returncode == 0, f"getscu exited {result.returncode}: {result.stdout[-300:]}"
    assert received == expected, f"{len(received & expected)} of {len(expected)} instances"


# the run ---------------------------------------------------------------------------------------

Results = dict[tuple[str, str], list[Figure] | None]  # (operation, server) -> figures; None: n/a
Operation = tuple[str, tuple[str, ...]]  # name, units


def measure(results: Results, operation: str, node: Node, run: Callable[[], Figure]) -> None:
    if results.get((operation, node.name), []) is None:
        return  # known not to be provided
    try:
        figure = run()
    except Unsupported as exc:
        print(f"  {node.name} does not answer {operation}: {exc}")
        results[(operation, node.name)] = None
        return
    results.setdefault((operation, node.name), []).append(figure)


def run(workload: Workload, folder: Path) -> None:
    print("generating the dataset ...", flush=True)
    data = build(workload, folder / "data")
    settle_disk()
    nodes = start(folder)
    results: Results = {}
    try:
        for node in nodes:  # first: by then, what a server does once started is done
            print(f"storing the C-FIND and C-GET data in {node.name} ...", flush=True)
            load(node, [data.folder / "small", data.folder / "get"])
        operations = stores(nodes, data, results)
        operations += retrievals(workload, nodes, data, results, folder / "got")
    finally:
        for node in nodes:
            node.server.stop()
    report(workload, operations, nodes, results)


def stores(nodes: list[Node], data: Data, results: Results) -> list[Operation]:
    """The C-STORE measurements, once per server, alternating which goes first."""
    operations = []
    for index, (label, series, files, count) in enumerate(
        [
            ("one association", "store-one", data.store_one, 1),
            ("four associations", "store-four", data.store_four, 4),
        ]
    ):
        name = f"C-STORE {len(files)} CT 512x512, {label}"
        operations.append((name, STORED))
        for node in nodes if index % 2 == 0 else nodes[::-1]:
            print(f"{name}: {node.name} ...", flush=True)
            measure(results, name, node, partial(c_store, node, series, files, count))
    return operations


def retrievals(
    workload: Workload, nodes: list[Node], data: Data, results: Results, into: Path
) -> list[Operation]:
    """The C-FIND and C-GET measurements, over rounds, alternating which server goes first."""
    finds = find_operations(data)
    get_name = f"C-GET series of {len(data.get_sops)}"
    for round_ in range(workload.rounds):
        print(f"round {round_ + 1}/{workload.rounds} ...", flush=True)
        for node in nodes if round_ % 2 == 0 else nodes[::-1]:
            for name, (identifier, check) in finds.items():
                measure(
                    results, name, node, partial(c_find, node, identifier, check, workload.finds)
                )
            for _ in range(workload.gets):
                measure(results, get_name, node, partial(c_get, node, data, into))
    return [*((name, LATENCY) for name in finds), (get_name, (RATE, CPU))]


def report(
    workload: Workload, operations: list[Operation], nodes: list[Node], results: Results
) -> None:
    print(f"\n{workload}\n")
    print(table_header([node.name for node in nodes]))
    for name, units in operations:
        for unit in units:
            row = f"{name} {UNITS[unit][1]}".strip() if len(units) > 1 else name
            figures = [results.get((name, node.name)) for node in nodes]
            if all(figures):
                print(table_row(row, unit, figures))
            else:  # a server without the service: the other's figure alone, no ratio
                cells = [cell(each, unit) for each in figures]
                errors = [str(sum(f.errors for f in each)) if each else "-" for each in figures]
                print(f"| {row} | {unit} | {cells[0]} | {cells[1]} | n/a | {'/'.join(errors)} |")


def cell(figures: list[Figure] | None, unit: str) -> str:
    """One server's column, as table_row shows it; "n/a" where it lacks the service."""
    if not figures:
        return "n/a"
    if any(figure.errors for figure in figures):
        return "failed"
    return f"{statistics.median(getattr(figure, UNITS[unit][0]) for figure in figures):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny workload")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    workload = Workload()
    if args.smoke:
        workload = Workload(store=8, get=4, small_studies=10, finds=3, gets=1, rounds=1)
    if args.rounds:
        workload.rounds = args.rounds
    if args.keep:
        run(workload, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="localdicom-dimse-") as folder:
            run(workload, Path(folder))


if __name__ == "__main__":
    main()
