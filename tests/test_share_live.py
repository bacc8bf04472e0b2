"""The zip download from a running server: a client that hangs up mid-zip, and a series of
5 GiB streamed while the server's memory stays flat (ZIP64 at the end of the stream).

The large series is made of sparse files (a header, then Pixel Data of zeros the file
system does not store), written straight into the archive's layout and indexed by
``localdicom reindex``: 5 GiB to send without 5 GiB on the disk.
"""

from __future__ import annotations

import http.client
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom.tag import Tag

from benchmarks.dataset import ct_slice
from localdicom.cli import main
from tests.helpers import SAMPLES, STUDY_UID, free_port, process_tree
from tests.helpers.corpus import pydicom_file
from tests.helpers.live import LiveServer, request, stow_file

JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
MIB = 1024 * 1024


def archive_files(archive: Path) -> set[Path]:
    """Every file of the archive but the server's own bookkeeping (its announcement)."""
    return {
        path for path in archive.rglob("*") if path.is_file() and path.name != ".localdicom-server"
    }


def open_zip(server: LiveServer, path: str, accept: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    connection.request("GET", path, headers={"Accept": accept})
    response = connection.getresponse()
    assert response.status == 200, response.read()[:300]
    return response


def test_a_client_that_hangs_up_mid_zip_leaves_nothing_behind(live_server):
    for path in [*SAMPLES.glob("*.dcm"), pydicom_file("CT_small.dcm")]:
        assert stow_file(live_server.url, path).status == 200
    before = archive_files(live_server.archive)
    accept = f"application/zip; transfer-syntax={JPEG_2000_LOSSLESS}"
    for _ in range(3):
        response = open_zip(live_server, f"/studies/{STUDY_UID}", accept)
        assert response.read(1000).startswith(b"PK\x03\x04")
        response.close()  # the socket goes, mid-entry
    time.sleep(1)
    # the server answers, the whole zip still comes, and nothing was written anywhere
    reply = request(f"{live_server.url}/studies/{STUDY_UID}", accept=accept)
    assert reply.status == 200 and reply.body.startswith(b"PK\x03\x04")
    assert archive_files(live_server.archive) == before
    log = live_server.log.read_text()
    assert "Traceback" not in log and " 500 " not in log
    # export reads the same archive beside the server, and writes nothing into it
    dest = live_server.archive.parent / "export.zip"
    exported = CliRunner().invoke(
        main, ["export", str(live_server.archive), str(dest), "--all", "--zip"]
    )
    assert exported.exit_code == 0, exported.output
    assert len(zipfile.ZipFile(dest).namelist()) == 4
    assert archive_files(live_server.archive) == before


# 5 GiB ------------------------------------------------------------------------------------


def sparse_instance(archive: Path, index: int, frames: int) -> tuple[str, str, int]:
    """A 1024x1024 16-bit CT of ``frames`` frames in the layout, its pixel data a hole."""
    ds = ct_slice("big-study", "big-series", index, size=32)
    del ds.PixelData
    ds.Rows = ds.Columns = 1024
    ds.NumberOfFrames = frames
    folder = archive / ds.StudyInstanceUID / ds.SeriesInstanceUID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    length = 1024 * 1024 * 2 * frames
    with path.open("r+b") as fp:
        fp.seek(0, 2)
        tag = Tag("PixelData")
        fp.write(struct.pack("<HH2sHI", tag.group, tag.element, b"OW", 0, length))
        fp.truncate(fp.tell() + length)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, path.stat().st_size


def rss(pid: int) -> int:
    """Resident memory of the server and its worker processes, in bytes."""
    total = 0
    for process in process_tree(pid):
        try:
            status = Path(f"/proc/{process}/status").read_text()
        except OSError:
            continue
        total += next(
            (
                int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith("VmRSS")
            ),
            0,
        )
    return total


@pytest.mark.slow
def test_a_5_gib_series_streams_at_flat_server_memory(tmp_path):
    archive = tmp_path / "archive"
    sizes = [sparse_instance(archive, index, 512)[2] for index in range(5)]  # 5 x 1 GiB
    study, series, size = sparse_instance(archive, 5, 16)
    sizes.append(size)
    reindex = subprocess.run(
        [sys.executable, "-m", "localdicom", "reindex", str(archive)],
        capture_output=True,
        text=True,
    )
    assert reindex.returncode == 0, reindex.stdout + reindex.stderr
    server = LiveServer(archive, free_port())
    server.start()
    try:
        assert server.process is not None
        pid = server.process.pid
        baseline = rss(pid)
        peak, done = [baseline], threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak.append(rss(pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        response = open_zip(server, f"/studies/{study}/series/{series}", "application/zip")
        received, tail, early = 0, b"", None
        while chunk := response.read(MIB):
            received += len(chunk)
            tail = (tail + chunk)[-MIB:]
            if early is None and received > 1024**3:
                early = max(peak)  # what the server settled at, a fifth of the way
        done.set()
        sampler.join()
    finally:
        server.stop()
    stored = sum(sizes)
    assert stored > 5 * 1024**3 and received > stored
    # the ZIP64 end of central directory record (APPNOTE 4.3.14) and its locator
    end = tail.rindex(b"PK\x06\x06")
    entries = struct.unpack_from("<Q", tail, end + 32)[0]
    assert entries == 6 and tail.rfind(b"PK\x06\x07") > end
    growth, late = max(peak) - baseline, max(peak) - early
    print(f"server RSS {baseline / MIB:.0f} MiB, peak {max(peak) / MIB:.0f} MiB", received)
    # flat: nothing more after the first GiB, and a bounded working set (read buffers,
    # the allocator's arenas of the reading threads) before it
    assert late < 32 * MIB, f"the server grew by {late / MIB:.0f} MiB after the first GiB"
    assert growth < 200 * MIB, f"the server grew by {growth / MIB:.0f} MiB"
