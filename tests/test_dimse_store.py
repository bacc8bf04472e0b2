"""C-STORE SCP (PS3.4 B.2) of ``serve --dicom-port``, from outside: dcmtk's storescu and
pynetdicom as callers, DICOMweb to see the result; and, in this process, a full disk
(simulated). Hostile callers: test_dimse_hostile.py.

What is compared is always pydicom's reading of the original file, never the server's output.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import encode
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage

from localdicom.archive import Archive
from localdicom.archive.held import HELD_BYTES
from localdicom.catalog import Catalog
from localdicom.dimse import pdus
from localdicom.dimse.association import Association
from localdicom.dimse.messages import decode_command, encode_command
from localdicom.dimse.negotiation import Agreement
from localdicom.dimse.node import Node
from tests.helpers import REPOSITORY, free_port, prepare_here
from tests.helpers.dimse import (
    AE_TITLE,
    DicomServer,
    associate,
    c_store,
    dcmtk,
    found,
    leftovers,
    retrieve,
    small_ct,
    start_dicom_server,
)
from tests.helpers.disk import SmallDisk
from tests.helpers.live import LiveServer

#: storescu proposes the file's own transfer syntax only when told which (PS3.5 10, A.4):
#: otherwise it converts to an uncompressed one, and the round trip would prove nothing.
PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}
#: pydicom test files, one transfer syntax or more each, with distinct SOP Instance UIDs.
CORPUS = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "rtplan.dcm",  # implicit, no pixel data, nested sequences
    "ExplVR_BigEnd.dcm",  # explicit VR big endian (retired, still received)
    "image_dfl.dcm",  # deflated explicit VR little endian
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "JPGExtended.dcm",  # JPEG extended, 12 bit
    "JPEG-LL.dcm",  # JPEG lossless, first-order prediction
    "emri_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless, multi-frame
    "MR2_J2KR.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000
    "OBXXXX1A_rle.dcm",  # RLE lossless
]

PIXEL_DATA = Tag(0x7FE0, 0x0010)
TRAILING_PADDING = Tag(0xFFFC, 0xFFFC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomServer]:
    dicom = start_dicom_server(tmp_path_factory.mktemp("dimse-store"))
    yield dicom
    dicom.stop()


def elements(dataset: Dataset) -> dict:
    """The data elements that carry meaning: without group lengths (optional, PS3.5 7.2) and
    Data Set Trailing Padding (none, PS3.10 7.2), which a sender may drop (dcmtk does)."""
    return {
        element.tag: element
        for element in dataset
        if element.tag.element != 0x0000 and element.tag != TRAILING_PADDING
    }


def expected_elements(original: Dataset) -> dict:
    """What a conformant sender sends of a file: encapsulated Pixel Data is OB (PS3.5 A.4),
    whatever VR the file gave it (dcmtk corrects one of pydicom's, which says OW)."""
    expected = elements(original)
    if original.file_meta.TransferSyntaxUID.is_encapsulated and "PixelData" in original:
        expected[PIXEL_DATA] = DataElement(PIXEL_DATA, "OB", original.PixelData)
    return expected


# dcmtk --------------------------------------------------------------------------------------


@pytest.mark.external
def test_echoscu_gets_success_verification_ps3_4_a(server: DicomServer):
    result = dcmtk("echoscu", "-v", "-aec", AE_TITLE, "127.0.0.1", str(server.dicom_port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received Echo Response (Success)" in result.stdout + result.stderr


@pytest.mark.external
@pytest.mark.parametrize("name", CORPUS)
def test_storescu_instance_is_served_as_sent_and_found_at_once(server: DicomServer, name: str):
    path = Path(get_testdata_file(name))
    original = pydicom.dcmread(path)
    syntax = original.file_meta.TransferSyntaxUID
    sent = dcmtk(
        "storescu", "-v", PROPOSE[syntax], "-aec", AE_TITLE, "127.0.0.1", str(server.dicom_port),
        str(path),
    )  # fmt: skip
    log = sent.stdout + sent.stderr
    assert sent.returncode == 0, log

    matches = found(server, original.SOPInstanceUID)  # no wait: stored before the response
    assert len(matches) == 1
    assert matches[0]["0020000E"]["Value"] == [original.SeriesInstanceUID]
    content_type, body = retrieve(
        server, original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID
    )
    served = pydicom.dcmread(BytesIO(body))
    # stored in the syntax it was sent in: the file's own, proposed first (no conversion)
    assert f"transfer-syntax={syntax}" in content_type.replace('"', "")
    assert served.file_meta.TransferSyntaxUID == syntax
    assert served.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert elements(served) == expected_elements(original)


# statuses, pynetdicom as the caller (PS3.4 B.2.3, PS3.7 C.4.2) ---------------------------


def test_identical_resend_is_success_0000(server: DicomServer):
    dataset = small_ct("resend")
    assert c_store(server, dataset).Status == 0x0000
    assert c_store(server, dataset).Status == 0x0000
    assert len(found(server, dataset.SOPInstanceUID)) == 1


def test_other_instance_under_a_stored_uid_is_0111_and_the_stored_one_kept(server: DicomServer):
    first = small_ct("conflict")
    assert c_store(server, first).Status == 0x0000
    where = (first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID)
    _, before = retrieve(server, *where)
    other = small_ct("conflict", patient="OTHER^PATIENT")
    answer = c_store(server, other)
    assert answer.Status == 0x0111  # Duplicate SOP Instance (PS3.7 C.4.2)
    assert answer.ErrorComment and len(answer.ErrorComment) <= 64  # LO
    _, after = retrieve(server, *where)
    assert after == before
    assert pydicom.dcmread(BytesIO(after)).PatientName == first.PatientName
    assert leftovers(server) == []


def test_with_overwrite_another_instance_replaces_the_stored_one(tmp_path: Path):
    server = start_dicom_server(tmp_path, "--overwrite")
    try:
        first, other = small_ct("replaced"), small_ct("replaced", patient="OTHER^PATIENT")
        assert c_store(server, first).Status == 0x0000
        assert c_store(server, other).Status == 0x0000
        _, body = retrieve(
            server, other.StudyInstanceUID, other.SeriesInstanceUID, other.SOPInstanceUID
        )
        assert pydicom.dcmread(BytesIO(body)).PatientName == other.PatientName
        assert len(found(server, other.SOPInstanceUID)) == 1
    finally:
        server.stop()


def test_instance_without_series_uid_is_c000_and_not_stored(server: DicomServer):
    dataset = small_ct("no-series")
    del dataset.SeriesInstanceUID
    answer = c_store(server, dataset)
    assert answer.Status == 0xC000  # Cannot understand (PS3.4 B.2.3)
    assert "SeriesInstanceUID" in answer.ErrorComment or "0020,000E" in answer.ErrorComment
    assert found(server, dataset.SOPInstanceUID) == []
    assert leftovers(server) == []


# how it starts, and who may call ----------------------------------------------------------


def test_start_line_names_the_ae_title_and_the_dicom_port(server: DicomServer):
    expected = f" and DICOM as AE title {AE_TITLE} at 127.0.0.1:{server.dicom_port}"
    assert expected in server.live.log.read_text()


def test_dicom_port_beyond_loopback_without_peers_refuses_to_start(tmp_path: Path):
    command = [sys.executable, "-m", "localdicom", "serve", str(tmp_path / "archive")]
    command += ["--port", str(free_port()), "--dicom-port", str(free_port())]
    command += ["--host", "127.0.0.1", "--dicom-host", "0.0.0.0"]
    result = subprocess.run(
        command, cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--dicom-peer" in result.stderr and "--insecure" in result.stderr


def test_with_peers_beyond_loopback_only_their_ae_titles_may_call(tmp_path: Path):
    port = free_port()
    live = LiveServer(
        tmp_path / "archive",
        free_port(),
        extra_args=("--dicom-port", str(port), "--dicom-host", "0.0.0.0"),
    )
    live.extra_args += ("--dicom-peer", "A=127.0.0.1:1")
    live.start()
    server = DicomServer(live, port)
    try:
        stranger = associate(server, calling="STRANGER")
        assert not stranger.assoc.is_established
        # rejected-permanent, by the service user: calling AE title not recognized (PS3.8 9.3.4)
        assert stranger.rejection == (0x01, 0x01, 0x03)
        peer = associate(server, calling="A")
        assert peer.assoc.is_established
        assert peer.assoc.send_c_echo().Status == 0x0000
        peer.assoc.release()
    finally:
        live.stop()


# a full disk, in this process ----------------------------------------------------------------


def store_request(dataset: Dataset, message_id: int) -> list[bytes | memoryview]:
    """A C-STORE-RQ (PS3.7 9.3.1.1) and its data set in P-DATA-TFs of 16 KiB, as a
    requestor whose Maximum Length is that sends them, on presentation context 1."""
    command = encode_command(
        {
            "CommandField": 0x0001,
            "MessageID": message_id,
            "Priority": 0,
            "CommandDataSetType": 0x0000,
            "AffectedSOPClassUID": dataset.SOPClassUID,
            "AffectedSOPInstanceUID": dataset.SOPInstanceUID,
        }
    )
    pieces: list[bytes | memoryview] = []
    for data, is_command in ((command, True), (encode(dataset, False, True), False)):
        for pdu in pdus.message_pdus(1, data, is_command, 16384 - 6):
            pieces += pdu
    return pieces


async def status_of_response(reader: asyncio.StreamReader) -> int:
    kind, body = await pdus.read_pdu(reader, 1 << 20)
    assert kind == pdus.P_DATA_TF
    ((_, control, fragment),) = pdus.fragments(body)
    assert control == pdus.COMMAND | pdus.LAST
    return decode_command(bytes(fragment))["Status"]


async def test_a_full_disk_mid_data_set_is_a700_once_it_is_read_and_the_next_store_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An instance larger than what is held in memory (HELD_BYTES) goes to its file as it
    arrives, and meets a full disk there: the rest of its data set is read and dropped, the
    answer is Refused: Out of Resources (A700, PS3.4 B.2.3), nothing is left behind, and the
    association goes on: with room again, its next C-STORE is stored."""
    catalog = Catalog(Archive(tmp_path / "archive", fsync=False), prepare=prepare_here)
    await catalog.open()
    disk = SmallDisk(catalog.archive.root, 1 << 20).install(monkeypatch)
    context = build_context(CTImageStorage, ExplicitVRLittleEndian)
    context.context_id = 1
    ours, theirs = socket.socketpair()
    association = Association(
        Node(catalog, None, AE_TITLE, {}),  # type: ignore[arg-type]
        Agreement("FULL", 16384, {1: context}),
        await asyncio.open_connection(sock=ours),
        (1 << 20, 30.0, 1.0),
        "test",
    )
    serving = asyncio.create_task(association.serve())
    reader, writer = await asyncio.open_connection(sock=theirs)
    large, small = small_ct("1.2.3.4.5"), small_ct("1.2.3.4.5", 1)
    large.PixelData = bytes(HELD_BYTES + (1 << 20))
    try:
        async with asyncio.timeout(60):  # a regression stops reading for ever: fail it instead
            writer.writelines(store_request(large, 1))
            await writer.drain()
            assert await status_of_response(reader) == 0xA700
            assert disk.failures == 1 and list(catalog.archive.incoming.iterdir()) == []
            disk.free = None
            writer.writelines(store_request(small, 2))
            assert await status_of_response(reader) == 0x0000
    finally:
        writer.close()
        await asyncio.wait_for(serving, 30)  # the association ends with its connection
    assert [record.sop for record in catalog.instances_of(small.StudyInstanceUID)] == [
        small.SOPInstanceUID
    ]
    assert list(catalog.archive.incoming.iterdir()) == []
