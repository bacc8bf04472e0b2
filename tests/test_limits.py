"""What STOW-RS refuses beyond tests/test_errors.py, and how the archive fares meanwhile.

* Size limits (``Settings.max_request_bytes``, ``max_part_bytes``): a 413 that says which,
  whether the size was declared (Content-Length) or only found while streaming (chunked).
* Clients that stall mid-upload (``Settings.upload_timeout``) or leave: the upload is dropped.
* A full disk: a 507 whose Store Instances Response says FailureReason 0xA700; nothing half
  written, no stored instance lost. Simulated by failing writes with ENOSPC inside the archive
  (:class:`SmallDisk`), and for real on a small tmpfs where mounting one is allowed.
* A large upload streams to disk: the server's peak RSS stays bounded (200 MB by default,
  2 GB with ``LOCALDICOM_SLOW_TESTS=1``).
* Malformed input test_errors.py does not cover: a repeated boundary, huge part headers,
  a preamble with garbage after it, a dataset without File Meta Information, NUL and leading
  zeros in UIDs inside the dataset, and a fuzz of mutated bodies; a property test of the QIDO
  parameter parser.

Every test ends with the archive as it was (``Stocked.assert_unchanged``: files, QIDO answers,
empty upload area) or with exactly what was acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import logging
import os
import random
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from localdicom.app import Settings, make_app
from localdicom.dicom.qido import LEVELS, QueryError, parse_query
from tests.helpers import (
    SERIES_CIRCLE,
    SOP_BLUE_CIRCLE,
    SOP_GREEN_SQUARE,
    SOP_RED_TRIANGLE,
    STUDY_UID,
    app_settings,
    ct_slice,
    free_port,
)
from tests.helpers.disk import SmallDisk
from tests.helpers.http import raw_stow
from tests.helpers.live import LiveServer
from tests.helpers.stocked import (
    BOUNDARY,
    STOW_TYPE,
    Stocked,
    assert_error,
    assert_store_failure,
    derived,
    failure_reasons,
    files_of,
    multipart,
    new_instance,
    request,
    stock,
    stow,
)

MB = 1000 * 1000
AS_STORED = "application/dicom; transfer-syntax=*"


@pytest.fixture
async def stocked(client, archive_dir: Path) -> Stocked:
    return await stock(client, archive_dir)


async def stocked_app(aiohttp_client, archive: Path, **options: Any) -> Stocked:
    """An app with these Settings on an archive holding the three samples (stored by an app
    with the default settings, which the limits under test might refuse)."""
    await (
        await stock(await aiohttp_client(make_app(app_settings(archive))), archive)
    ).client.close()
    stocked = Stocked(await aiohttp_client(make_app(app_settings(archive, **options))), archive)
    await stocked.take_snapshot()
    return stocked


async def streamed(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A body without Content-Length: aiohttp sends it chunked, so the server only learns
    its size by reading it."""
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def temporary_files(archive: Path) -> list[Path]:
    return [p for p in archive.rglob("*") if p.suffix in (".tmp", ".part") and p.is_file()]


# size limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_request_over_the_request_limit_is_413(aiohttp_client, archive_dir, declared):
    first, second = new_instance()[1], new_instance()[1]
    body = multipart(first, second)
    limit = len(first) + 1000  # the first part fits, the request does not
    stocked = await stocked_app(aiohttp_client, archive_dir, max_request_bytes=limit)
    answer = await stow(stocked.client, body if declared else streamed(body))
    assert_error(answer, 413, f"larger than {limit} bytes", "nothing")
    await stocked.assert_unchanged()


async def test_request_of_exactly_the_request_limit_is_stored(aiohttp_client, archive_dir):
    body = multipart(new_instance()[1])
    stocked = await stocked_app(aiohttp_client, archive_dir, max_request_bytes=len(body))
    for data in (body, streamed(body)):
        answer = await stow(stocked.client, data)
        assert answer.status == 200, answer.text


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_part_over_the_part_limit_is_413_and_stores_no_other_part(
    aiohttp_client, archive_dir, declared
):
    small = derived(SOPInstanceUID=generate_uid(), PixelData=b"\0" * 1000, Rows=10, Columns=100)
    large = new_instance()[1]
    body = multipart(small, large)
    stocked = await stocked_app(aiohttp_client, archive_dir, max_part_bytes=len(small) + 10)
    answer = await stow(stocked.client, body if declared else streamed(body))
    assert_error(answer, 413, f"a part is larger than {len(small) + 10} bytes", "nothing")
    await stocked.assert_unchanged()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_single_instance_over_the_part_limit_is_413(aiohttp_client, archive_dir, declared):
    body = new_instance()[1]
    stocked = await stocked_app(aiohttp_client, archive_dir, max_part_bytes=len(body) - 1)
    data = body if declared else streamed(body)
    answer = await stow(stocked.client, data, "application/dicom")
    assert_error(answer, 413, f"larger than {len(body) - 1} bytes", "nothing")
    await stocked.assert_unchanged()


async def test_instance_of_exactly_the_part_limit_is_stored(aiohttp_client, archive_dir):
    body = new_instance()[1]
    stocked = await stocked_app(aiohttp_client, archive_dir, max_part_bytes=len(body))
    assert (await stow(stocked.client, multipart(body))).status == 200
    again = new_instance()[1]
    assert (await stow(stocked.client, streamed(again), "application/dicom")).status == 200


def test_default_limits_are_documented_values():
    settings = Settings(archive=Path("unused"))
    assert settings.max_request_bytes is None
    assert settings.max_part_bytes == 4 * 1024**3
    assert settings.upload_timeout == 60


# clients that stall or leave -------------------------------------------------------------


def _partial_bodies() -> Iterator[Any]:
    _, whole = new_instance()
    _, cut = new_instance()
    sent = multipart(whole, close=False) + f"--{BOUNDARY}\r\n\r\n".encode() + cut[:200_000]
    full = multipart(whole, cut)
    yield pytest.param(STOW_TYPE, sent, len(full), id="multipart-after-one-whole-part")
    yield pytest.param("application/dicom", cut[:200_000], len(cut), id="single-instance")


@pytest.mark.parametrize(("content_type", "sent", "length"), list(_partial_bodies()))
async def test_stalled_upload_is_408_and_leaves_nothing(
    aiohttp_client, archive_dir, content_type, sent, length
):
    stocked = await stocked_app(aiohttp_client, archive_dir, upload_timeout=0.5)
    server = stocked.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    started = time.monotonic()
    writer.write(raw_stow(content_type, length) + sent)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)  # the server closes: EOF
    waited = time.monotonic() - started
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer[:300]
    assert b"sent nothing for 0.5 s" in rest and b"nothing of the request was stored" in rest
    assert waited >= 0.5, waited  # not before the client was silent that long
    await stocked.assert_unchanged()
    assert (await stow(stocked.client, multipart(new_instance()[1]))).status == 200


@pytest.mark.parametrize(("content_type", "sent", "length"), list(_partial_bodies()))
async def test_client_leaving_mid_upload_leaves_nothing(
    aiohttp_client, archive_dir, caplog, content_type, sent, length
):
    stocked = await stocked_app(aiohttp_client, archive_dir)
    server = stocked.client.server
    _, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(raw_stow(content_type, length) + sent)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    deadline = time.monotonic() + 5
    while list((archive_dir / ".incoming").iterdir()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # let the handler finish
    await stocked.assert_unchanged()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert (await stow(stocked.client, multipart(new_instance()[1]))).status == 200


# a full disk -----------------------------------------------------------------------------


def assert_out_of_resources(answer) -> None:
    assert_store_failure(answer, 507, 0xA700, "No space left on device")
    assert "00081199" not in answer.json()


@pytest.mark.parametrize(
    "free",
    [
        pytest.param(lambda size: 0, id="nothing-fits"),
        pytest.param(lambda size: size // 2, id="half-the-instance-fits"),
        pytest.param(lambda size: size, id="the-instance-fits-its-sidecar-does-not"),
    ],
)
@pytest.mark.parametrize("content_type", [STOW_TYPE, "application/dicom"])
async def test_full_disk_is_507_a700_and_writes_nothing(
    stocked: Stocked, monkeypatch, free, content_type
):
    _, body = new_instance()
    data = multipart(body) if content_type == STOW_TYPE else body
    disk = SmallDisk(stocked.archive, free(len(body))).install(monkeypatch)
    assert_out_of_resources(await stow(stocked.client, data, content_type))
    assert disk.failures == 1
    await stocked.assert_unchanged()
    assert temporary_files(stocked.archive) == []
    disk.free = None  # space again: the same request now succeeds
    assert (await stow(stocked.client, data, content_type)).status == 200


async def test_full_disk_for_every_part_is_507_and_for_the_change_feed_too(
    stocked: Stocked, monkeypatch
):
    first, second, third = (new_instance()[1] for _ in range(3))
    disk = SmallDisk(stocked.archive, 0).install(monkeypatch)
    answer = await stow(stocked.client, multipart(first, second, third))
    assert answer.status == 507, answer.text
    assert failure_reasons(answer) == [0xA700] * 3
    await stocked.assert_unchanged()
    # a failure for another reason besides: a client error, so 409 as the standard says
    disk.free = len(b"not DICOM")
    answer = await stow(stocked.client, multipart(b"not DICOM", first))
    assert answer.status == 409, answer.text
    assert failure_reasons(answer) == [0xC000, 0xA700]
    await stocked.assert_unchanged()
    # room for the second instance and its sidecar, then for the third but not its sidecar:
    # the disk is then full, and the second cannot be recorded in the change feed either,
    # so it is not stored (no instance the feed does not list)
    disk.free = None
    assert (await stow(stocked.client, multipart(first))).status == 200
    await stocked.take_snapshot()
    sidecar = next(stocked.archive.rglob("*.json"), None)
    assert sidecar is not None
    disk.free = len(second) + len(third) + sidecar.stat().st_size * 3 // 2
    answer = await stow(stocked.client, multipart(second, third))
    assert answer.status == 507, answer.text
    assert failure_reasons(answer) == [0xA700, 0xA700]
    assert temporary_files(stocked.archive) == []
    await stocked.assert_unchanged()


async def test_full_disk_during_overwrite_keeps_the_stored_instance(
    aiohttp_client, archive_dir, monkeypatch
):
    stocked = await stocked_app(aiohttp_client, archive_dir, overwrite=True)
    replacement = derived(SeriesDescription="a replacement")
    disk = SmallDisk(archive_dir, len(replacement)).install(monkeypatch)  # no room for sidecar
    assert_out_of_resources(await stow(stocked.client, multipart(replacement)))
    await stocked.assert_unchanged()
    disk.free = None
    assert (await stow(stocked.client, multipart(replacement))).status == 200
    assert files_of(archive_dir) != stocked.files


async def test_full_disk_at_startup_still_serves(aiohttp_client, archive_dir, monkeypatch, caplog):
    first = await stocked_app(aiohttp_client, archive_dir)
    await first.client.close()  # writes the index snapshot
    (archive_dir / ".index-snapshot").unlink()
    files = files_of(archive_dir)
    SmallDisk(archive_dir, 0).install(monkeypatch)
    with caplog.at_level(logging.WARNING):
        client = await aiohttp_client(make_app(app_settings(archive_dir)))
    assert "index snapshot could not be written" in caplog.text
    listed = await request(client, "GET", "/instances")
    assert sorted(item["00080018"]["Value"][0] for item in listed.json()) == sorted(
        [SOP_BLUE_CIRCLE, SOP_GREEN_SQUARE, SOP_RED_TRIANGLE]
    )
    assert files_of(archive_dir) == files
    assert temporary_files(archive_dir) == []


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


@pytest.mark.slow
@pytest.mark.external
def test_real_full_disk_on_a_small_tmpfs(tmp_path: Path):
    """A real ENOSPC: an 8 MiB file system and 2.9 MB instances. Needs root and mount(2)."""
    archive = tmp_path / "archive"
    if not _mount_tmpfs(archive, "8m"):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    server = LiveServer(archive, free_port())
    try:
        server.start()
        acknowledged: dict[str, bytes] = {}
        statuses = []
        for _ in range(5):
            sop, body = new_instance()
            response = requests.post(
                f"{server.url}/studies",
                data=body,
                headers={"Content-Type": "application/dicom"},
                timeout=30,
            )
            statuses.append(response.status_code)
            if response.status_code == 200:
                acknowledged[sop] = body
            else:
                assert response.status_code == 507, response.text
                reasons = [i["00081197"]["Value"][0] for i in response.json()["00081198"]["Value"]]
                assert reasons == [0xA700]
                assert "No space left on device" in response.headers["Warning"]
        assert 200 in statuses and 507 in statuses, statuses
        server.restart()
        listed = requests.get(f"{server.url}/instances", timeout=30).json()
        assert {item["00080018"]["Value"][0] for item in listed} == set(acknowledged)
        for sop, body in acknowledged.items():
            url = f"{server.url}/studies/{STUDY_UID}/series/{SERIES_CIRCLE}/instances/{sop}"
            got = requests.get(url, headers={"Accept": AS_STORED}, timeout=30)
            assert got.content == body
        assert temporary_files(archive) == []
        dcms = sorted(p.stem for p in archive.rglob("*.dcm"))
        assert dcms == sorted(acknowledged)
        assert sorted(p.stem for p in archive.rglob("*.json")) == dcms
    finally:
        server.stop()
        subprocess.run(["umount", str(archive)], check=False)


# a large upload streams to disk ------------------------------------------------------------

FRAME = 1024 * 1024 * 2  # 1024 x 1024, 16 bits


def large_instance_header(frames: int) -> tuple[str, bytes]:
    """A Part 10 header whose last element, Pixel Data, declares ``frames`` frames of
    zeros; the body is this header followed by that many zero bytes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows = ds.Columns = 1024
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = frames
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    pixel_data = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * FRAME)
    return str(ds.SOPInstanceUID), buffer.getvalue() + pixel_data


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(value.split()[0]) * 1024
    return values


def upload_streamed(server: LiveServer, header: bytes, zeros: int) -> tuple[int, str, int]:
    """POST header + zeros with http.client, 1 MiB at a time, sampling the server's RSS
    meanwhile; (status, sha256 of what was sent, highest RSS sampled)."""
    digest = hashlib.sha256(header)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    connection.putrequest("POST", "/studies")
    connection.putheader("Content-Type", "application/dicom")
    connection.putheader("Content-Length", str(len(header) + zeros))
    connection.endheaders()
    connection.send(header)
    chunk = bytes(1024 * 1024)
    highest = 0
    for sent in range(0, zeros, len(chunk)):
        piece = chunk[: min(len(chunk), zeros - sent)]
        connection.send(piece)
        digest.update(piece)
        if sent % (64 * len(chunk)) == 0:
            highest = max(highest, _memory(server.process.pid)["VmRSS"])
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, digest.hexdigest(), highest


SLOW = os.environ.get("LOCALDICOM_SLOW_TESTS") == "1"


@pytest.mark.slow
@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(100, id="200MB"),
        pytest.param(
            1000,
            id="2GB",
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(not SLOW, reason="set LOCALDICOM_SLOW_TESTS=1"),
            ],
        ),
    ],
)
def test_large_upload_streams_to_disk_with_bounded_memory(live_server: LiveServer, frames):
    sop, header = large_instance_header(frames)
    before = _memory(live_server.process.pid)
    started = time.monotonic()
    status, sent_digest, sampled = upload_streamed(live_server, header, frames * FRAME)
    seconds = time.monotonic() - started
    after = _memory(live_server.process.pid)
    size = len(header) + frames * FRAME
    print(
        f"\n{size / MB:.0f} MB upload in {seconds:.1f} s: server RSS {before['VmRSS'] / MB:.0f}"
        f" MB before, peak {after['VmHWM'] / MB:.0f} MB (sampled {sampled / MB:.0f} MB)"
    )
    assert status == 200
    assert after["VmHWM"] < 300 * MB
    assert after["VmHWM"] - before["VmHWM"] < 100 * MB
    (stored,) = live_server.archive.rglob(f"{sop}.dcm")
    assert stored.stat().st_size == size
    found = requests.get(f"{live_server.url}/instances?SOPInstanceUID={sop}", timeout=30).json()
    url = found[0]["00081190"]["Value"][0]
    frame = requests.get(
        f"{url}/frames/{frames}",
        headers={"Accept": "application/octet-stream; transfer-syntax=*"},
        timeout=60,
    )
    assert frame.status_code == 200 and frame.content == bytes(FRAME)
    received = hashlib.sha256()
    with requests.get(url, headers={"Accept": AS_STORED}, stream=True, timeout=300) as response:
        for chunk in response.iter_content(1024 * 1024):
            received.update(chunk)
    assert received.hexdigest() == sent_digest
    assert _memory(live_server.process.pid)["VmHWM"] < 300 * MB


# malformed input that test_errors.py does not cover ----------------------------------------


async def test_boundary_parameter_given_twice_is_400(stocked: Stocked):
    body = multipart(new_instance()[1])
    for content_type in (
        f'multipart/related; type="application/dicom"; boundary={BOUNDARY}; boundary=other',
        f"multipart/related; boundary={BOUNDARY}; type=application/dicom; BOUNDARY={BOUNDARY}",
    ):
        answer = await stow(stocked.client, body, content_type)
        assert_error(answer, 400, "boundary parameter more than once", "nothing stored")
    await stocked.assert_unchanged()


async def test_repeated_delimiter_is_400(stocked: Stocked):
    dash = f"--{BOUNDARY}\r\n".encode()
    body = multipart(new_instance()[1])
    assert body.startswith(dash)
    answer = await stow(stocked.client, dash + body)
    assert_error(answer, 400, "delimiter is repeated", "nothing stored")
    await stocked.assert_unchanged()


async def test_part_header_line_that_is_not_a_header_is_400(stocked: Stocked):
    _, instance = new_instance()
    body = multipart(instance, headers="Content-Type: application/dicom\r\nthis is no header")
    answer = await stow(stocked.client, body)
    assert_error(answer, 400, "not a header field", "'this is no header'")
    await stocked.assert_unchanged()


@pytest.mark.parametrize("size", [70 * 1024, 2 * 1024 * 1024])
async def test_huge_part_headers_are_400(stocked: Stocked, size):
    _, instance = new_instance()
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\nX-Big: ".encode()
    body = head + b"a" * size + b"\r\n\r\n" + instance + f"\r\n--{BOUNDARY}--\r\n".encode()
    answer = await stow(stocked.client, body)
    assert_error(answer, 400, "headers are larger than 64 KiB", "nothing stored")
    await stocked.assert_unchanged()


async def test_huge_http_header_is_400(stocked: Stocked):
    """aiohttp's parser refuses a header line over 8190 bytes before any handler runs."""
    _, body = new_instance()
    answer = await stow(stocked.client, multipart(body), headers={"X-Big": "a" * 100_000})
    assert answer.status == 400
    assert "Traceback" not in answer.text and len(answer.text) < 2000
    await stocked.assert_unchanged()


def _part10_variants() -> Iterator[Any]:
    _, good = new_instance()
    preamble = bytes(128) + b"DICM"
    no_meta = "no File Meta Information"
    yield pytest.param(preamble, no_meta, id="preamble-only")
    garbage = random.Random(7).randbytes(50_000)
    yield pytest.param(preamble + garbage, no_meta, id="preamble-then-garbage")
    yield pytest.param(preamble + b"\x02\x00" * 1000, no_meta, id="preamble-then-repeated-bytes")
    yield pytest.param(good[:132] + garbage, no_meta, id="preamble-then-garbage-after-DICM")
    meta_end = good.index(b"\x08\x00\x05\x00")  # SpecificCharacterSet: the dataset's start
    yield pytest.param(good[:meta_end] + garbage, "lacks", id="meta-header-then-garbage")
    ds = pydicom.dcmread(io.BytesIO(good))
    bare = pydicom.dcmread(io.BytesIO(good))
    del bare.file_meta
    bare.preamble = None
    raw = io.BytesIO()  # the dataset alone, as pydicom writes it without enforce_file_format
    bare.save_as(raw, enforce_file_format=False, implicit_vr=False, little_endian=True)
    assert raw.getvalue()[:4] == b"\x08\x00\x05\x00"
    yield pytest.param(raw.getvalue(), "not a DICOM Part 10 file", id="no-meta-no-preamble")
    del ds.file_meta.TransferSyntaxUID
    without_syntax = io.BytesIO()
    ds.save_as(without_syntax, enforce_file_format=False, implicit_vr=False, little_endian=True)
    yield pytest.param(without_syntax.getvalue(), no_meta, id="meta-without-syntax")


@pytest.mark.parametrize(("body", "reason"), list(_part10_variants()))
@pytest.mark.parametrize("content_type", [STOW_TYPE, "application/dicom"])
async def test_broken_part10_file_is_409_cannot_understand(
    stocked: Stocked, body, reason, content_type
):
    data = multipart(body) if content_type == STOW_TYPE else body
    answer = await stow(stocked.client, data, content_type)
    assert_store_failure(answer, 409, 0xC000, reason)
    await stocked.assert_unchanged()


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SOPInstanceUID", "1.2.3\x004.5"),
        ("SOPInstanceUID", "\x00"),
        ("SeriesInstanceUID", "1.2\x00/../.."),
        ("SOPInstanceUID", "1.02.3"),
        ("StudyInstanceUID", "1.2.3.%2e%2e"),
        ("SOPInstanceUID", "1.2." + "3" * 61),
    ],
)
async def test_stow_of_instance_with_nul_or_leading_zero_uid_is_409(
    stocked: Stocked, keyword, value
):
    changes = {keyword: value}
    if keyword != "SOPInstanceUID":
        changes["SOPInstanceUID"] = generate_uid()
    answer = await stow(stocked.client, multipart(derived(**changes)))
    assert_store_failure(answer, 409, 0xC000, keyword)
    await stocked.assert_unchanged()


@pytest.mark.slow
async def test_mutated_bodies_never_damage_the_archive(client, archive_dir: Path):
    """300 small bodies, each a valid STOW of a new instance with a random mutation (cut,
    flipped, inserted or duplicated bytes, or a delimiter out of place): every answer is a
    status the server documents, and whatever it acknowledged is stored byte for byte."""
    rng = random.Random(20240601)
    delimiter = f"\r\n--{BOUNDARY}".encode()
    stored: dict[str, bytes] = {}
    statuses: dict[int, int] = {}
    for index in range(300):
        ds = ct_slice("fuzz", "fuzz-series", index, size=8)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        instance = buffer.getvalue()
        body = bytearray(multipart(instance))
        kind = index % 5
        position = rng.randrange(len(body))
        if kind == 0:
            del body[position:]
        elif kind == 1:
            body[position] ^= 1 << rng.randrange(8)
        elif kind == 2:
            body[position:position] = rng.randbytes(rng.randint(1, 64))
        elif kind == 3:
            body[position:position] = delimiter + rng.choice([b"", b"--", b"\r\n", b"x"])
        else:
            start = rng.randrange(len(body))
            body[position:position] = body[start : start + rng.randint(1, 300)]
        answer = await stow(client, bytes(body))
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        assert answer.status in (200, 202, 400, 409), (kind, answer.status, answer.text[:300])
        if answer.status in (200, 202):
            for item in answer.json()["00081199"]["Value"]:
                stored[item["00081155"]["Value"][0]] = item["00081190"]["Value"][0]
    assert list((archive_dir / ".incoming").iterdir()) == []
    listed = await request(client, "GET", "/instances")
    assert {i["00080018"]["Value"][0] for i in listed.json()} == set(stored)
    assert len(list(archive_dir.rglob("*.dcm"))) == len(stored)
    print(f"\nmutated bodies: {sum(statuses.values())} sent, answers {sorted(statuses.items())}")
    assert statuses.get(400) and statuses.get(200)  # the mutations do reach both outcomes


# the QIDO parameter parser -------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(
        [
            "PatientName",
            "PatientID",
            "StudyDate",
            "StudyTime",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "Modality",
            "00100010",
            "0020000d",
            "00091010",
            "AccessionNumber",
            "includefield",
            "limit",
            "offset",
            "fuzzymatching",
            "SeriesNumber",
            "ModalitiesInStudy",
            "NumberOfFrames",
            "AcquisitionDateTime",
            "PixelData",
        ]
    ),
    st.text(max_size=12),
    st.from_regex(r"[0-9A-Fa-f]{8}", fullmatch=True),
)
VALUES = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789.-*?\\,", max_size=30),
    st.sampled_from(["", "*", "-", "all", "true", "20201231-20200101", "1.2.3", "-1"]),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.text(min_size=1000, max_size=1100, alphabet="ab"),
)


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(NAMES, VALUES), max_size=6), st.sampled_from(LEVELS))
@example([("limit", "-1")], "study")
@example([("offset", "abc")], "study")
@example([("StudyDate", "20201231-20200101")], "study")
@example([("PatientName", "a" * 100_000)], "study")
@example([("includefield", "Foo")], "series")
@example([("0020000D", "1.2\\..\\/")], "instance")
def test_parse_query_raises_only_query_errors(params, level):
    try:
        query = parse_query(params, level)
    except QueryError as exc:
        assert str(exc) and len(str(exc)) < 3000
        return
    assert query.limit is None or 0 <= query.limit <= 999_999_999
    assert 0 <= query.offset <= 999_999_999
    assert query.level == level
