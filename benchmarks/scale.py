"""How localdicom holds up as the archive grows: start time, index memory, QIDO, metadata.

    python -m benchmarks.scale --sizes 10000,100000,300000 [--folder /big/disk/tmp]
    python -m benchmarks.scale --sizes 1000000 --starts first,second --folder /big/disk/tmp

For each size, writes an archive of small instances (64x64, realistic CT headers) straight
into the archive layout, sidecars included: one template instance is described once and
copied with its UIDs, patient attributes and instance number replaced by values of the same
length, which is what makes a million instances take minutes rather than hours (13 on two
busy cores, 16 GB); an archive already built in the folder is used again, and so is its
snapshot (the first start on a new one reads every sidecar: 27 minutes at a million). Then
starts the server on it twice and reports: time from launch to the first answer, resident
memory per instance of the index (against a server on an empty archive), QIDO p95 at study,
series and instance level, a study-level QIDO on a series attribute the index does not hold
(Performed Procedure Step ID, one value per series: matched from the sidecars), and the
metadata of a 1,000-instance series (first request and repeat). A third start promotes that
attribute into the index (``--index-attribute``) and measures the same. Last, the archive is
imported into another (``localdicom import --link``) and the first start on that one is
measured: what a user meets right after importing a large dataset. ``--starts`` picks among
those four (the third leaves a snapshot of its own attributes, which the next plain start on
that archive does not use: it reads every sidecar).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.dataset import ct_slice
from benchmarks.servers import Server, localdicom
from localdicom.archive import sidecar
from localdicom.dicom.describing import describe

ROOT = "1.2.826.0.1.3680043.8.498"
# Placeholders and the formats that replace them: each the same length as its placeholder.
FIELDS = {
    "study": (f"{ROOT}.1" + "9" * 9, f"{ROOT}.1{{study:09d}}"),
    "series": (f"{ROOT}.2" + "9" * 12, f"{ROOT}.2{{study:09d}}{{series:03d}}"),
    "sop": (f"{ROOT}.3" + "9" * 18, f"{ROOT}.3{{study:09d}}{{series:03d}}{{index:06d}}"),
    "patient": ("PID99999999", "PID{study:08d}"),
    "date": ("29991231", "20{year:02d}{month:02d}{day:02d}"),
    "step": ("PPS99999999", "PPS{study:05d}{series:03d}"),
}
#: A series attribute (General Series module, PS3.3 C.7.3.1) the index does not hold.
NOT_INDEXED = "PerformedProcedureStepID"
#: The starts measured on each archive, in this order: (label, extra options of ``serve``).
STARTS = {
    "first": ("first start", ()),
    "second": ("second start", ()),
    "indexed": (f"--index-attribute {NOT_INDEXED}", ("--index-attribute", NOT_INDEXED)),
    "import": ("first start after import", ()),
}
MODALITIES = ("CT", "MR", "CR", "US", "MG")
FIXED_MTIME_NS = 1_700_000_000 * 10**9
METADATA_SERIES = 1000
#: Instance Number (IS, PS3.5 6.2: leading spaces allowed) in the template, replaced once in
#: each file and sidecar by the instance's own, padded to the same length.
NUMBER = "987654"


def template() -> tuple[bytes, str]:
    """A 64x64 CT instance with placeholders, and its sidecar JSON text."""
    ds = ct_slice("t", "t", 0, size=64, patient="NAME^PID99999999", date="29991231")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = FIELDS["study"][0], FIELDS["series"][0]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = FIELDS["sop"][0]
    ds.PatientID, ds.Modality, ds.InstanceNumber = "PID99999999", "CT", NUMBER
    setattr(ds, NOT_INDEXED, FIELDS["step"][0])
    path = Path(tempfile.mkdtemp()) / "template.dcm"
    ds.save_as(path, enforce_file_format=True)
    with path.open("rb") as fp:
        header = describe(fp)
    document = sidecar.document(header, "DIGEST", path.stat().st_size, FIXED_MTIME_NS)
    return path.read_bytes(), document.decode()


def values(study: int, series: int, index: int) -> dict[str, str]:
    year, month, day = study % 20 + 5, study % 12 + 1, study % 28 + 1
    numbers = {
        "study": study,
        "series": series,
        "index": index,
        "year": year,
        "month": month,
        "day": day,
    }
    return {name: form.format(**numbers) for name, (_, form) in FIELDS.items()}


def fill(text: str | bytes, replacements: dict[str, str]) -> str | bytes:
    for name, (placeholder, _) in FIELDS.items():
        new = replacements[name]
        if isinstance(text, bytes):
            text = text.replace(placeholder.encode(), new.encode())
        else:
            text = text.replace(placeholder, new)
    return text


def layout(total: int) -> list[tuple[int, int, int]]:
    """(study, series, count): one 500-instance series, the rest in 2 x 50 per study."""
    plan = [(0, 0, METADATA_SERIES)]
    study = 1
    remaining = total - METADATA_SERIES
    while remaining > 0:
        for series in range(2):
            count = min(50, remaining)
            if count:
                plan.append((study, series, count))
                remaining -= count
        study += 1
    return plan


def build(archive: Path, total: int) -> None:
    dcm, sidecar = template()
    for study, series, count in layout(total):
        names = values(study, series, 0)
        folder = archive / names["study"] / names["series"]
        folder.mkdir(parents=True, exist_ok=True)
        modality = MODALITIES[study % len(MODALITIES)]
        for index in range(count):
            names = values(study, series, index)
            # The number first: a UID or digest filled in could hold its placeholder.
            number = f"{index + 1:>6}"
            data = fill(dcm.replace(NUMBER.encode(), number.encode(), 1), names)
            data = data.replace(b"CT\x00\x00", modality.encode() + b"\x00\x00", 1)
            path = folder / f"{names['sop']}.dcm"
            path.write_bytes(data)
            os.utime(path, ns=(FIXED_MTIME_NS, FIXED_MTIME_NS))
            text = fill(sidecar.replace(NUMBER, number, 1), names)
            text = text.replace("DIGEST", hashlib.sha256(data).hexdigest())
            path.with_suffix(".json").write_text(text)


def import_copy(folder: Path) -> Path:
    """FOLDER/imported: what ``localdicom import --link`` makes of the built archive, as a
    user's first import does (its first start is the one a user meets next)."""
    imported = folder / "imported"
    shutil.rmtree(imported, ignore_errors=True)
    command = ["import", str(folder / "archive"), "-a", str(imported / "archive"), "--link"]
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "localdicom", *command], check=True, stdout=subprocess.DEVNULL
    )
    print(f"  imported in {time.perf_counter() - started:.0f} s", flush=True)
    return imported


def timed_get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
    return (time.perf_counter() - started) * 1000, body


def p95(urls: list[str]) -> float:
    times = sorted(timed_get(url)[0] for url in urls)
    return times[min(len(times) - 1, int(len(times) * 0.95))]


def measure(server: Server, total: int, baseline_kib: int, unindexed: int) -> dict[str, float]:
    started = time.perf_counter()
    server.start(timeout=3600)  # a first start at a million reads every sidecar: minutes
    start_s = time.perf_counter() - started
    memory = server.memory_kib()
    studies = len(layout(total)) // 2
    picks = [1 + (k * 7919) % max(studies - 1, 1) for k in range(30)]
    root = server.root
    study_urls = [f"{root}/studies?PatientID=PID{s:08d}" for s in picks]
    series_urls = [f"{root}/studies/{values(s, 0, 0)['study']}/series" for s in picks]
    instance_urls = [f"{root}/instances?SOPInstanceUID={values(s, 1, 7)['sop']}" for s in picks]
    step_urls = [f"{root}/studies?{NOT_INDEXED}={values(s, 1, 0)['step']}" for s in picks]
    step_urls = step_urls[: unindexed if NOT_INDEXED not in server.command else len(picks)]
    if step_urls:
        (found,) = json.loads(timed_get(step_urls[0])[1])
        assert found["0020000D"]["Value"] == [values(picks[0], 1, 0)["study"]]
    names = values(0, 0, 0)
    metadata = f"{root}/studies/{names['study']}/series/{names['series']}/metadata"
    first, body = timed_get(metadata)
    assert len(json.loads(body)) == METADATA_SERIES
    repeat = statistics.median(timed_get(metadata)[0] for _ in range(5))
    figures = {
        "load average": os.getloadavg()[0],
        "start s": start_s,
        "index bytes/instance": (memory - baseline_kib) * 1024 / total,
        "QIDO study p95 ms": p95(study_urls),
        "QIDO series p95 ms": p95(series_urls),
        "QIDO instance p95 ms": p95(instance_urls),
        "QIDO study, series attribute not indexed, p95 ms": p95(step_urls)
        if step_urls
        else math.nan,
        f"metadata {METADATA_SERIES} first ms": first,
        f"metadata {METADATA_SERIES} repeat ms": repeat,
    }
    if server.process is not None:  # it saves the snapshot as it stops: a minute at a million
        server.process.terminate()
        server.process.wait(timeout=600)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,300000")
    parser.add_argument("--folder", type=Path, help="where to build (needs ~1.6 GB per 100k)")
    parser.add_argument(
        "--starts",
        default=",".join(STARTS),
        help="which starts to measure, of " + ", ".join(STARTS) + " (at a million, the "
        "indexed and import rows read every sidecar again: minutes each)",
    )
    parser.add_argument(
        "--unindexed",
        type=int,
        default=30,
        help="searches on the attribute not indexed, where it is not (each reads the sidecars "
        "of every study: seconds at 100,000 instances)",
    )
    args = parser.parse_args()
    base = Path(args.folder or tempfile.mkdtemp(prefix="localdicom-scale-"))
    empty = localdicom(base / "empty", "--no-fsync")
    empty.start()
    baseline = empty.memory_kib()
    empty.stop()
    rows = []
    for total in (int(size) for size in args.sizes.split(",")):
        folder = base / f"n{total}"
        if not (folder / "archive").exists():
            print(f"building {total} instances ...", flush=True)
            started = time.perf_counter()
            build(folder / "archive", total)
            print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
        for start in args.starts.split(","):
            if start == "import":
                server = localdicom(import_copy(folder), "--no-fsync")
            else:
                server = localdicom(folder, "--no-fsync", *STARTS[start][1])
            figures = measure(server, total, baseline, args.unindexed)
            rows.append((total, STARTS[start][0], figures))
            print(total, STARTS[start][0], figures, flush=True)
    names = list(rows[0][2])
    print("\n| instances | start | " + " | ".join(names) + " |")
    print("| ---: | --- | " + " | ".join("---:" for _ in names) + " |")
    for total, start, figures in rows:
        cells = " | ".join(f"{figures[name]:.1f}" for name in names)
        print(f"| {total} | {start} | {cells} |")


if __name__ == "__main__":
    main()
