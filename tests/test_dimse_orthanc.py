"""A real Orthanc (Debian's) as a DICOM peer: it sends a study to localdicom by C-STORE (its
REST ``/modalities/{name}/store``), and localdicom moves a study to it by C-MOVE (PS3.4 C.4.2).

Each side writes its own File Meta Information (PS3.10 7.1), so what is compared is the
dataset after it, with the originals given to either side.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from tests.helpers import SAMPLES, STUDY_UID, Server, free_port, orthanc
from tests.helpers.live import LiveServer, request, stow_file

pytestmark = pytest.mark.external
if shutil.which("Orthanc") is None:
    pytest.skip("Orthanc is not installed", allow_module_level=True)

#: pydicom's test files sent from Orthanc, as one study of their own, and moved to it.
FROM_ORTHANC = ("CT_small.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle.dcm")
TO_ORTHANC = ("MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle.dcm")
ORTHANC_STUDY = generate_uid(entropy_srcs=["localdicom orthanc tests"])
MOVED_STUDY = generate_uid(entropy_srcs=["localdicom orthanc tests, moved"])
DATA_SET_TRAILING_PADDING = 0xFFFCFFFC


@dataclass
class Peers:
    localdicom: LiveServer
    dicom_port: int
    orthanc: Server

    @property
    def orthanc_rest(self) -> str:
        """Orthanc's own REST API, beside its DICOMweb root."""
        return self.orthanc.root.removesuffix("/dicom-web")


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    folder = tmp_path_factory.mktemp("orthanc")
    dicom_port, orthanc_dicom_port = free_port(), free_port()
    peer = orthanc(  # its DICOM server on, knowing localdicom as a modality
        folder,
        DicomServerEnabled=True,
        DicomAet="ORTHANC",
        DicomPort=orthanc_dicom_port,
        DicomModalities={"localdicom": ["LOCALDICOM", "127.0.0.1", dicom_port]},
    )
    localdicom = LiveServer(
        folder / "archive",
        free_port(),
        extra_args=(
            "--dicom-port",
            str(dicom_port),
            "--dicom-peer",
            f"ORTHANC=127.0.0.1:{orthanc_dicom_port}",
        ),
    )
    peer.start()
    try:
        localdicom.start()
        yield Peers(localdicom, dicom_port, peer)
    finally:
        localdicom.stop()
        peer.stop()


def dataset_bytes(data: bytes, folder: Path) -> bytes:
    """The bytes after a Part 10 file's File Meta Information."""
    path = folder / "part10.dcm"
    path.write_bytes(data)
    return data[split_dataset(path)[1] :]


def in_a_study_of_its_own(name: str, study: str) -> bytes:
    """pydicom's test file in ``study``, with UIDs of its own, as Orthanc keeps it."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[name, study, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[name, study, "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "ORTHANC-TEST"  # Orthanc's study is that of one patient
    # Orthanc (dcmtk) drops Data Set Trailing Padding, which means nothing, when it sends
    ds.pop(DATA_SET_TRAILING_PADDING, None)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        ds["PixelData"].VR = "OB"  # PS3.5 A.4; dcmtk corrects MR_small_jp2klossless's OW
    path_like = pydicom.filebase.DicomBytesIO()
    ds.save_as(path_like)
    return path_like.getvalue()


def test_orthanc_stores_a_study_into_localdicom(peers: Peers, tmp_path: Path):
    """Orthanc's C-STORE SCU; localdicom keeps every dataset byte for byte and finds the study
    by QIDO-RS."""
    originals: dict[str, bytes] = {}
    orthanc_study = None
    for name in FROM_ORTHANC:
        data = in_a_study_of_its_own(name, ORTHANC_STUDY)
        reply = request(f"{peers.orthanc_rest}/instances", method="POST", data=data)
        assert reply.status == 200, reply.text
        orthanc_study = json.loads(reply.body)["ParentStudy"]
        originals[pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID] = data
    url = f"{peers.orthanc_rest}/modalities/localdicom/store"
    reply = request(url, method="POST", data=orthanc_study.encode())
    assert reply.status == 200, reply.text

    found = request(f"{peers.localdicom.url}/studies?StudyInstanceUID={ORTHANC_STUDY}")
    assert [study["00201208"]["Value"] for study in json.loads(found.body)] == [[len(FROM_ORTHANC)]]
    instances = json.loads(
        request(f"{peers.localdicom.url}/studies/{ORTHANC_STUDY}/instances").body
    )
    for instance in instances:
        series, sop = instance["0020000E"]["Value"][0], instance["00080018"]["Value"][0]
        path = f"/studies/{ORTHANC_STUDY}/series/{series}/instances/{sop}"
        reply = request(peers.localdicom.url + path, accept="application/dicom; transfer-syntax=*")
        assert reply.status == 200
        assert dataset_bytes(reply.body, tmp_path) == dataset_bytes(originals[sop], tmp_path)
    assert len(instances) == len(originals)


def test_localdicom_moves_a_study_to_orthanc(peers: Peers, tmp_path: Path):
    """C-MOVE of two studies to the ORTHANC peer, which accepts the compressed syntaxes too:
    Orthanc holds every instance, each dataset as stored."""
    files = [path.read_bytes() for path in sorted(SAMPLES.glob("*.dcm"))]
    files += [in_a_study_of_its_own(name, MOVED_STUDY) for name in TO_ORTHANC]
    originals = {}
    for data in files:
        (tmp_path / "stow.dcm").write_bytes(data)
        assert stow_file(peers.localdicom.url, tmp_path / "stow.dcm").status == 200
        originals[pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID] = data

    ae = AE("MOVER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", peers.dicom_port, ae_title="LOCALDICOM")
    assert assoc.is_established
    keys = Dataset()
    keys.QueryRetrieveLevel, keys.StudyInstanceUID = "STUDY", [STUDY_UID, MOVED_STUDY]
    try:
        responses = list(
            assoc.send_c_move(keys, "ORTHANC", StudyRootQueryRetrieveInformationModelMove)
        )
    finally:
        assoc.release()
    status = responses[-1][0]
    assert status.Status == 0x0000 and status.NumberOfCompletedSuboperations == len(originals)

    in_orthanc = {}
    for orthanc_id in json.loads(request(f"{peers.orthanc_rest}/instances").body):
        data = request(f"{peers.orthanc_rest}/instances/{orthanc_id}/file").body
        in_orthanc[pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID] = data
    assert set(originals) <= set(in_orthanc)
    for sop, data in originals.items():
        assert dataset_bytes(in_orthanc[sop], tmp_path) == dataset_bytes(data, tmp_path), sop
