"""C-GET and C-MOVE against a live server (PS3.4 C.4.2, C.4.3): dcmtk's getscu, movescu and
storescp, and pynetdicom as SCU where a test reads the final response's counts.

What comes back is compared with the files stored by STOW-RS: the bytes after the File Meta
Information when it went as stored, pydicom's decoding of the original when it was
transcoded. dcmtk is called by absolute path (pynetdicom installs scripts of the same names).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.helpers import (
    SAMPLES,
    SERIES_SQUARE_TRIANGLE,
    SOP_BLUE_CIRCLE,
    STUDY_UID,
    free_port,
)
from tests.helpers.dimse import identifier
from tests.helpers.live import LiveServer, stow_file

pytestmark = pytest.mark.external
DCMTK = Path("/usr/bin")
if not (DCMTK / "getscu").exists():
    pytest.skip("dcmtk is not installed", allow_module_level=True)

MIXED_STUDY = generate_uid(entropy_srcs=["localdicom retrieve tests"])
PATIENT_ID = "RETRIEVE-TEST"
#: pydicom's test files, one per transfer syntax, and getscu's option preferring that syntax.
VARIANTS = {
    "CT_small.dcm": "+xe",  # Explicit VR Little Endian
    "MR_small_jp2klossless.dcm": "+xv",
    "SC_rgb_rle.dcm": "+xr",
    "MR_small_jpeg_ls_lossless.dcm": "+xt",
    "MR_small_bigendian.dcm": "+xb",
}
COMPRESSED = ("MR_small_jp2klossless.dcm", "SC_rgb_rle.dcm", "MR_small_jpeg_ls_lossless.dcm")
BIG_ENDIAN = "MR_small_bigendian.dcm"
SUCCESS, WARNING, ALL_FAILED, CANCELLED = 0x0000, 0xB000, 0xA702, 0xFE00


@dataclass
class Node:
    """The live server, its DICOM port, the port its STORESCP peer is to listen on, and the
    files stored in it by SOP Instance UID."""

    server: LiveServer
    dicom_port: int
    storescp_port: int
    files: dict[str, Path]
    variants: dict[str, Path]


def variant(name: str, folder: Path) -> Path:
    """pydicom's test file in the study of the test patient, with series and instance UIDs of
    its own (the MR_small files share theirs); the pixel data stays as encoded."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID = MIXED_STUDY
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[name, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[name, "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = PATIENT_ID
    path = folder / name
    ds.save_as(path)
    return path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    folder = tmp_path_factory.mktemp("retrieve")
    dicom_port, storescp_port = free_port(), free_port()
    peer = f"STORESCP=127.0.0.1:{storescp_port}"
    server = LiveServer(
        folder / "archive",
        free_port(),
        extra_args=("--dicom-port", str(dicom_port), "--dicom-peer", peer),
    )
    server.start()
    try:
        variants = {name: variant(name, folder) for name in VARIANTS}
        files = {}
        for path in [*sorted(SAMPLES.glob("*.dcm")), *variants.values()]:
            assert stow_file(server.url, path).status == 200
            files[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID] = path
        yield Node(server, dicom_port, storescp_port, files, variants)
    finally:
        server.stop()


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's bytes after its File Meta Information (PS3.10 7.1)."""
    return path.read_bytes()[split_dataset(path)[1] :]


def by_sop(folder: Path) -> dict[str, Path]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in folder.iterdir()}


def getscu(node: Node, folder: Path, keys: dict[str, str], *options: str) -> dict[str, Path]:
    """getscu (Study Root, bit-preserving: the received bytes as they came) into ``folder``."""
    folder.mkdir()
    command = [str(DCMTK / "getscu"), "-S", "+B", *options, "-od", str(folder)]
    for key, value in keys.items():
        command += ["-k", f"{key}={value}"]
    command += ["-aec", "LOCALDICOM", "127.0.0.1", str(node.dicom_port)]
    subprocess.run(command, check=True, timeout=120, capture_output=True)
    return by_sop(folder)


def keys_of(path: Path, level: str) -> dict[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    keys = {"QueryRetrieveLevel": level, "StudyInstanceUID": ds.StudyInstanceUID}
    if level in ("SERIES", "IMAGE"):
        keys["SeriesInstanceUID"] = ds.SeriesInstanceUID
    if level == "IMAGE":
        keys["SOPInstanceUID"] = ds.SOPInstanceUID
    return keys


def assert_as_stored(received: dict[str, Path], node: Node) -> None:
    for sop, path in received.items():
        assert dataset_bytes(path) == dataset_bytes(node.files[sop]), sop


def assert_same_pixels(received: Path, original: Path) -> None:
    ds = pydicom.dcmread(received)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, pydicom.dcmread(original).pixel_array)


# C-GET by getscu (PS3.4 C.4.3) ------------------------------------------------------------


def test_getscu_study_level_returns_the_stored_bytes(node: Node, tmp_path: Path):
    received = getscu(
        node, tmp_path / "out", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": STUDY_UID}
    )
    assert len(received) == 3
    assert_as_stored(received, node)


def test_getscu_series_level_returns_the_series_only(node: Node, tmp_path: Path):
    keys = {
        "QueryRetrieveLevel": "SERIES",
        "StudyInstanceUID": STUDY_UID,
        "SeriesInstanceUID": SERIES_SQUARE_TRIANGLE,
    }
    received = getscu(node, tmp_path / "out", keys)
    assert len(received) == 2 and SOP_BLUE_CIRCLE not in received
    assert_as_stored(received, node)


@pytest.mark.parametrize("name", VARIANTS)
def test_getscu_image_level_in_the_stored_syntax_returns_the_stored_bytes(
    node: Node, tmp_path: Path, name: str
):
    """getscu lists its preferred syntax first in each storage context; the server takes the
    requestor's order, so the instance goes as stored, byte for byte."""
    keys = keys_of(node.variants[name], "IMAGE")
    received = getscu(node, tmp_path / "out", keys, VARIANTS[name])
    assert list(received) == [keys["SOPInstanceUID"]]
    assert_as_stored(received, node)


@pytest.mark.parametrize("name", COMPRESSED)
def test_getscu_preferring_explicit_little_endian_gets_compressed_pixels_decoded(
    node: Node, tmp_path: Path, name: str
):
    keys = keys_of(node.variants[name], "SERIES")
    received = getscu(node, tmp_path / "out", keys, "+xe")
    assert list(received) == [keys_of(node.variants[name], "IMAGE")["SOPInstanceUID"]]
    assert_same_pixels(next(iter(received.values())), node.variants[name])


# C-GET by pynetdicom: counts and final statuses (PS3.4 C.4.3.3) ----------------------------


def get(
    node: Node,
    keys: Dataset,
    contexts: list[tuple[str, list[str]]],
    model: str = StudyRootQueryRetrieveInformationModelGet,
    on_store: Callable[[object], None] | None = None,
) -> tuple[Dataset, Dataset | None, dict[str, bytes]]:
    """A C-GET whose storage contexts are ``contexts``; the final (status, identifier) and
    the dataset bytes received by SOP Instance UID."""
    received: dict[str, bytes] = {}

    def store(event: evt.Event) -> int:
        if on_store:
            on_store(event)
        received[event.request.AffectedSOPInstanceUID] = event.request.DataSet.getvalue()
        return SUCCESS

    ae = AE("GETTER")
    ae.add_requested_context(model)
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes)
    roles = [build_role(sop_class, scp_role=True) for sop_class in dict(contexts)]
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom_port,
        ae_title="LOCALDICOM",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, store)],
    )
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_get(keys, model))
    finally:
        assoc.release()
    status, final = responses[-1]
    return status, final, received


def as_identifier(keys: dict[str, object]) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


STORAGE = (CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage)


def explicit_only() -> list[tuple[str, list[str]]]:
    return [(uid, [ExplicitVRLittleEndian]) for uid in STORAGE]


def test_get_patient_level_sends_every_instance_of_the_patient(node: Node):
    """A context per SOP class and syntax, each accepted: every instance goes as stored."""
    syntaxes = {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in node.variants.values()}
    contexts = [(uid, [syntax]) for uid in STORAGE for syntax in sorted(syntaxes)]
    status, _, received = get(
        node,
        identifier("PATIENT", PatientID=PATIENT_ID),
        contexts,
        PatientRootQueryRetrieveInformationModelGet,
    )
    assert status.Status == SUCCESS and status.NumberOfCompletedSuboperations == len(VARIANTS)
    assert set(received) == {keys_of(p, "IMAGE")["SOPInstanceUID"] for p in node.variants.values()}
    for sop, data in received.items():
        assert data == dataset_bytes(node.files[sop]), sop


def test_get_with_only_explicit_vr_rewrites_every_instance(node: Node):
    """Only Explicit VR Little Endian accepted: the compressed instances are decoded and the
    big endian one is rewritten in little endian (PS3.5 A.2); all five arrive."""
    status, _, received = get(
        node, identifier("STUDY", StudyInstanceUID=MIXED_STUDY), explicit_only()
    )
    big_endian = keys_of(node.variants[BIG_ENDIAN], "IMAGE")["SOPInstanceUID"]
    assert status.Status == SUCCESS
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations) == (5, 0)
    assert len(received) == 5
    rewritten = read_dataset(BytesIO(received[big_endian]), False, True)
    rewritten.file_meta = FileMetaDataset()
    rewritten.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    original = pydicom.dcmread(node.variants[BIG_ENDIAN])
    assert np.array_equal(rewritten.pixel_array, original.pixel_array)


def jpeg_baseline_only() -> list[tuple[str, list[str]]]:
    """A syntax nothing is rewritten in: lossy JPEG is never made from other data."""
    return [(uid, [JPEGBaseline8Bit]) for uid in STORAGE]


def test_get_reports_the_instances_it_could_not_send(node: Node):
    """RLE accepted for Secondary Capture, only JPEG Baseline for CT and MR: the RLE instance
    goes as stored, the others cannot go at all: a Warning with their UIDs in the failed
    list (PS3.4 C.4.3.1.3.1)."""
    contexts = [
        (SecondaryCaptureImageStorage, [RLELossless]),
        (CTImageStorage, [JPEGBaseline8Bit]),
        (MRImageStorage, [JPEGBaseline8Bit]),
    ]
    status, final, received = get(node, identifier("STUDY", StudyInstanceUID=MIXED_STUDY), contexts)
    sops = {name: keys_of(path, "IMAGE")["SOPInstanceUID"] for name, path in node.variants.items()}
    unsendable = {sop for name, sop in sops.items() if name != "SC_rgb_rle.dcm"}
    assert status.Status == WARNING
    assert (status.NumberOfCompletedSuboperations, status.NumberOfFailedSuboperations) == (
        1,
        len(unsendable),
    )
    assert set(final.FailedSOPInstanceUIDList) == unsendable
    assert set(received) == {sops["SC_rgb_rle.dcm"]}


def test_get_where_every_sub_operation_failed_is_a_failure(node: Node):
    keys = keys_of(node.variants[BIG_ENDIAN], "IMAGE")
    status, final, received = get(node, as_identifier(keys), jpeg_baseline_only())
    assert status.Status == ALL_FAILED and status.NumberOfFailedSuboperations == 1
    assert final.FailedSOPInstanceUIDList == keys["SOPInstanceUID"] and not received


def test_get_with_an_identifier_of_another_model_is_refused(node: Node):
    """PS3.4 C.6.2: the Study Root model has no PATIENT level: A900."""
    status, _, received = get(node, identifier("PATIENT", PatientID=PATIENT_ID), explicit_only())
    assert status.Status == 0xA900 and not received


def test_get_of_nothing_stored_is_a_success_with_no_sub_operations(node: Node):
    status, _, received = get(
        node, identifier("STUDY", StudyInstanceUID="1.2.3.4.5.6"), explicit_only()
    )
    assert status.Status == SUCCESS and status.NumberOfCompletedSuboperations == 0
    assert not received


def test_c_cancel_stops_a_get_after_the_sub_operation_under_way(node: Node):
    """PS3.4 C.4.3.3: a C-CANCEL-GET interrupts the sub-operations. It is sent before the
    first C-STORE is answered, so the server sees it before it starts the second."""
    cancelled: list[bool] = []

    def cancel_once(event: evt.Event) -> None:
        if not cancelled:
            event.assoc.send_c_cancel(1, query_model=StudyRootQueryRetrieveInformationModelGet)
            cancelled.append(True)

    status, _, received = get(
        node, identifier("STUDY", StudyInstanceUID=STUDY_UID), explicit_only(), on_store=cancel_once
    )
    assert status.Status == CANCELLED
    assert status.NumberOfCompletedSuboperations == 1 == len(received)
    assert status.NumberOfRemainingSuboperations == 2


# C-MOVE (PS3.4 C.4.2) ---------------------------------------------------------------------


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "storescp exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("storescp does not listen")


@pytest.fixture
def storescp(node: Node, tmp_path: Path) -> Iterator[Path]:
    """dcmtk's storescp as the STORESCP peer (its default: uncompressed syntaxes only),
    writing what it receives as received."""
    folder = tmp_path / "storescp"
    folder.mkdir()
    command = [str(DCMTK / "storescp"), "+B", "-od", str(folder), str(node.storescp_port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port(node.storescp_port, process)
        yield folder
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_movescu_sends_a_study_to_storescp(node: Node, storescp: Path):
    """Uncompressed instances (big endian too) go as stored; the compressed ones, which this
    storescp does not accept, decoded to Explicit VR Little Endian."""
    command = [str(DCMTK / "movescu"), "-S", "-aem", "STORESCP", "-aec", "LOCALDICOM"]
    command += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={MIXED_STUDY}"]
    subprocess.run(
        [*command, "127.0.0.1", str(node.dicom_port)], check=True, timeout=120, capture_output=True
    )
    received = by_sop(storescp)
    originals = {keys_of(p, "IMAGE")["SOPInstanceUID"]: name for name, p in node.variants.items()}
    assert set(received) == set(originals)
    for sop, path in received.items():
        if originals[sop] in COMPRESSED:
            assert_same_pixels(path, node.variants[originals[sop]])
        else:
            assert dataset_bytes(path) == dataset_bytes(node.files[sop])


def move(node: Node, destination: str, keys: Dataset) -> Dataset:
    ae = AE("MOVER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="LOCALDICOM")
    assert assoc.is_established
    try:
        responses = list(
            assoc.send_c_move(keys, destination, StudyRootQueryRetrieveInformationModelMove)
        )
    finally:
        assoc.release()
    return responses[-1][0]


def test_move_to_an_unknown_destination_is_a801(node: Node):
    """PS3.4 Table C.4-2: Refused, Move Destination unknown."""
    status = move(node, "NOBODY", identifier("STUDY", StudyInstanceUID=STUDY_UID))
    assert status.Status == 0xA801


def test_move_with_an_identifier_of_another_model_is_refused(node: Node, storescp: Path):
    status = move(node, "STORESCP", identifier("IMAGE", StudyInstanceUID=STUDY_UID))
    assert status.Status == 0xA900
    assert not list(storescp.iterdir())
