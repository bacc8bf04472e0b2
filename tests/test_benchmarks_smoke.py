"""The benchmarks run, in their smallest size: they are measured by hand, never here.

The comparison with Orthanc needs the Debian packages orthanc, orthanc-dicomweb and
orthanc-gdcm, which .ci/run installs; elsewhere the test skips and says so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from benchmarks.servers import free_port, localdicom
from tests.helpers import REPOSITORY

pytestmark = [
    pytest.mark.external,  # Orthanc; dcmtk's storescu and getscu for the DICOM benchmark
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("Orthanc") is None and not os.environ.get("CI"),
        reason="Orthanc is not installed (apt-get install orthanc orthanc-dicomweb orthanc-gdcm)",
    ),
]


def smoke(benchmark: str) -> str:
    """The table ``python -m benchmarks.<benchmark> --smoke`` prints; it must exit 0."""
    return run(benchmark, "--smoke")


def run(benchmark: str, *arguments: str) -> str:
    """What ``python -m benchmarks.<benchmark> ARGUMENTS`` prints; it must exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{benchmark}", *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_compare_smoke_runs_and_localdicom_answers_everything_right():
    table = smoke("compare")
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ")]
    measured = [row for row in rows if re.fullmatch(r"\d+/\d+", row[-2].strip())]
    assert len(measured) >= 20, table
    for row in measured:
        assert row[-2].strip().endswith("/0"), f"localdicom answered wrongly: {'|'.join(row)}"
    flushes = [row for row in measured if row[2].strip() == "flushes/item"]
    assert len(flushes) == 3, "one row per STOW-RS measurement"
    for row in flushes:  # each acknowledged instance was flushed to the disk, where counted
        ours = row[4].strip()
        assert ours == "n/a" or float(ours) >= 1, f"{row[1]}: {ours} flushes per instance"


def test_dimse_smoke_prints_the_table_and_nothing_answered_wrongly():
    table = smoke("dimse")
    rows = [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in table.splitlines()
        if line.startswith("| C-")
    ]
    names = {
        row[0].removesuffix(" server CPU").removesuffix(" disk flushes").rsplit(" p", 1)[0]
        for row in rows
    }
    assert len([n for n in names if n.startswith("C-STORE")]) == 2, table
    assert len([n for n in names if n.startswith("C-ECHO")]) == 1, table
    assert len([n for n in names if n.startswith("C-FIND")]) == 3, table
    assert len([n for n in names if n.startswith("C-GET")]) == 1, table
    number = re.compile(r"\d+\.\d\d?")
    for operation, unit, orthanc, ours, _ratio, errors in rows:
        if unit == "flushes/item" and ours == "n/a":  # a disk the kernel does not count
            continue
        assert number.fullmatch(orthanc), f"Orthanc: {operation}: {orthanc}"
        assert number.fullmatch(ours), f"localdicom: {operation}: {ours}"
        assert errors == "0/0", f"wrong answers: {operation}: {errors}"
        if unit == "flushes/item":  # each acknowledged C-STORE was flushed to the disk
            assert float(ours) >= 1, f"{operation}: {ours} flushes per instance"


def test_transfer_smoke_prints_pull_and_push_against_orthanc():
    table = smoke("transfer")  # it checks that every destination holds every instance
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| pu")]
    assert [row[0].strip() for row in rows] == ["pull", "push"], table
    assert all(re.fullmatch(r"\d+\.\d\d", cell.strip()) for row in rows for cell in row[1:3])


def test_pull_ab_pulls_each_checkout_every_round_and_prints_seconds_and_cpu():
    table = run("pull_ab", ".", ".", "--count", "3", "--rounds", "2", "--settle", "0")
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| /")]
    assert [row[0].strip() for row in rows] == [str(REPOSITORY)] * 2, table
    for row in rows:  # it checks that every pull stored every instance
        assert len(row[2].split(",")) == len(row[4].split(",")) == 2, "every counted round"
        assert all(re.fullmatch(r"\d+\.\d\d", cell.strip()) for cell in (row[1], row[3])), row


def test_stow_ab_stores_new_instances_each_round_and_prints_rate_and_cpu(live_server):
    """Orthanc is not needed here: any DICOMweb server is a side of the A/B."""
    assert live_server.process is not None
    pid = str(live_server.process.pid)
    table = run("stow_ab", live_server.url, "--pid", pid, "--rounds", "2", "--count", "3")
    (row,) = [line.split("|")[1:-1] for line in table.splitlines() if "127.0.0.1" in line]
    assert re.fullmatch(r"\d+\.\d", row[1].strip()), row
    assert len(row[2].split(",")) == len(row[3].split(",")) == 2, "every counted round"
    assert all(re.fullmatch(r"\d+\.\d", ms.strip()) for ms in row[3].split(",")), row
    counted = {path.stem for path in live_server.archive.rglob("*.dcm")}
    assert len(counted) == 3 * 3, "the warm-up round and the two counted, each new instances"


def test_cstore_ab_sends_new_instances_each_round_and_prints_rate_and_cpu(tmp_path):
    """Orthanc is not needed here either: a localdicom listener is a side of the A/B."""
    port = str(free_port())
    server = localdicom(tmp_path, "--dicom-port", port)
    server.start()
    try:
        assert server.process is not None
        pid = str(server.process.pid)
        arguments = ["--pid", pid, "--rounds", "2", "--count", "3"]
        table = run("cstore_ab", port, *arguments, "--associations", "1", "--associations", "2")
    finally:
        server.stop()
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith(f"| {port}")]
    assert [row[1].strip() for row in rows] == ["1", "2"], table
    for row in rows:
        assert re.fullmatch(r"\d+\.\d", row[2].strip()), row
        assert len(row[3].split(",")) == len(row[4].split(",")) == 2, "every counted round"
        assert all(re.fullmatch(r"\d+\.\d", ms.strip()) for ms in row[4].split(",")), row
    stored = {path.stem for path in (tmp_path / "archive").rglob("*.dcm")}
    assert len(stored) == 3 * 2 * 3, "each round, for each count of associations, new instances"


def test_http_floor_times_a_bare_application_whose_every_answer_is_right():
    table = smoke("http_floor")
    rows = [line.split("|")[1:-1] for line in table.splitlines() if re.match(r"\| \d", line)]
    assert len(rows) == 1, table
    _, p50, p95, errors = (cell.strip() for cell in rows[0])
    assert 0 < float(p50) <= float(p95), table
    assert errors == "0", table
