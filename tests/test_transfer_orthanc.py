"""A real Orthanc (Debian's, with its DICOMweb plugin) as the remote of ``localdicom pull``
and ``push``, over DICOMweb and over DICOM (C-FIND and C-GET, C-MOVE to a localdicom, and
C-STORE). Over DICOMweb the bytes are those of the original files; over DICOM each side
writes its own File Meta Information (PS3.10 7.1), so the dataset after it is compared, and
the transfer syntax, which must be the stored one (nothing transcoded)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom.dsutils import split_dataset

from localdicom.importer import run_import
from localdicom.selection import Selection
from localdicom.transfer.options import TransferOptions
from localdicom.transfer.pull import pull
from localdicom.transfer.push import push
from localdicom.transfer.remote import Credentials, parse_remote
from tests.helpers import SAMPLES, Server, free_port, orthanc, write_series
from tests.helpers.corpus import pydicom_file
from tests.helpers.live import LiveServer, request

pytestmark = [pytest.mark.external, pytest.mark.slow]
if shutil.which("Orthanc") is None:
    pytest.skip("Orthanc is not installed", allow_module_level=True)

EVERYTHING = Selection(everything=True)
NONE = Credentials()
QUICK = TransferOptions(backoff=0.05)


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """Files Orthanc keeps as they are (no Data Set Trailing Padding, which dcmtk drops when
    it sends): the samples, pydicom's RLE file, and small series in JPEG-LS and JPEG 2000."""
    folder = tmp_path_factory.mktemp("originals")
    files = [*sorted(SAMPLES.glob("*.dcm")), pydicom_file("SC_rgb_rle.dcm")]
    files += write_series(folder, "orthanc-transfer", "jls", 4, size=64, syntax="jls")
    files += write_series(folder, "orthanc-transfer", "j2k", 4, size=64, syntax="j2k")
    return {pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID: path for path in files}


def start_orthanc(folder: Path, ae_port: int | None = None) -> tuple[Server, int]:
    dicom_port = free_port()
    server = orthanc(
        folder,
        DicomServerEnabled=True,
        DicomAet="ORTHANC",
        DicomPort=dicom_port,
        DicomModalities={"localdicom": ["LOCALDICOM", "127.0.0.1", ae_port or free_port()]},
    )
    server.start()
    return server, dicom_port


@pytest.fixture(scope="module")
def localdicom_node(tmp_path_factory) -> Iterator[tuple[LiveServer, int]]:
    """A localdicom answering DICOM as LOCALDICOM: where Orthanc's C-MOVE sends."""
    dicom_port = free_port()
    server = LiveServer(
        tmp_path_factory.mktemp("node") / "archive",
        free_port(),
        extra_args=("--dicom-port", str(dicom_port)),
    )
    server.start()
    yield server, dicom_port
    server.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory, originals, localdicom_node) -> Iterator[tuple[Server, int]]:
    """An Orthanc holding the originals (stored through its REST API)."""
    server, dicom_port = start_orthanc(tmp_path_factory.mktemp("orthanc"), localdicom_node[1])
    rest = server.root.removesuffix("/dicom-web")
    for path in originals.values():
        assert request(f"{rest}/instances", method="POST", data=path.read_bytes()).status == 200
    yield server, dicom_port
    server.stop()


@pytest.fixture
def destination(tmp_path) -> Iterator[tuple[Server, int]]:
    server, dicom_port = start_orthanc(tmp_path / "orthanc")
    yield server, dicom_port
    server.stop()


def after_meta(data: bytes, folder: Path) -> bytes:
    path = folder / "part10.dcm"
    path.write_bytes(data)
    return data[split_dataset(path)[1] :]


def syntax_of(data: bytes) -> str:
    return str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).file_meta.TransferSyntaxUID)


def in_archive(archive: Path) -> dict[str, bytes]:
    return {path.stem: path.read_bytes() for path in archive.glob("*/*/*.dcm")}


def in_orthanc(server: Server) -> dict[str, bytes]:
    rest = server.root.removesuffix("/dicom-web")
    found = {}
    for orthanc_id in json.loads(request(f"{rest}/instances").body):
        data = request(f"{rest}/instances/{orthanc_id}/file").body
        found[pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID] = data
    return found


def assert_same_datasets(found: dict[str, bytes], originals: dict[str, Path], tmp_path: Path):
    assert found.keys() == originals.keys()
    for sop, path in originals.items():
        data = path.read_bytes()
        assert syntax_of(found[sop]) == syntax_of(data), sop  # sent as stored
        assert after_meta(found[sop], tmp_path) == after_meta(data, tmp_path), sop


def test_pull_from_orthanc_over_dicomweb_keeps_the_bytes(source, originals, tmp_path):
    report = pull(source[0].root, None, tmp_path / "a", EVERYTHING, NONE, QUICK)
    assert (report.stored, report.errors) == (len(originals), [])
    assert in_archive(tmp_path / "a") == {sop: p.read_bytes() for sop, p in originals.items()}


def test_pull_from_orthanc_by_c_get_as_stored(source, originals, tmp_path):
    address, node, _ = parse_remote(f"dicom://ORTHANC@127.0.0.1:{source[1]}")
    report = pull(address, node, tmp_path / "a", EVERYTHING, NONE, QUICK)
    assert (report.stored, report.errors) == (len(originals), []), report.lines()
    assert_same_datasets(in_archive(tmp_path / "a"), originals, tmp_path)
    again = pull(address, node, tmp_path / "a", EVERYTHING, NONE, QUICK)
    assert (again.stored, again.duplicates) == (0, len(originals))


def test_pull_from_orthanc_by_c_move_to_a_localdicom(source, originals, localdicom_node, tmp_path):
    live, _ = localdicom_node
    address, node, _ = parse_remote(f"dicom://ORTHANC@127.0.0.1:{source[1]}")
    options = TransferOptions(move_ae="LOCALDICOM")
    report = pull(address, node, live.archive, EVERYTHING, NONE, options)
    assert (report.stored, report.errors) == (len(originals), []), report.lines()
    assert_same_datasets(in_archive(live.archive), originals, tmp_path)


def test_push_to_orthanc_over_dicomweb_keeps_the_bytes(originals, destination, tmp_path):
    archive = tmp_path / "archive"
    import_originals(archive, originals)
    report = push(destination[0].root, None, archive, EVERYTHING, NONE, QUICK)
    assert (report.stored, report.errors) == (len(originals), [])
    assert in_orthanc(destination[0]) == {sop: p.read_bytes() for sop, p in originals.items()}
    shutil.rmtree(archive / ".transfers")  # without the record: Orthanc's duplicate answers
    again = push(destination[0].root, None, archive, EVERYTHING, NONE, QUICK)
    assert again.errors == [] and again.stored + again.duplicates == len(originals)
    assert len(in_orthanc(destination[0])) == len(originals)


def test_push_to_orthanc_by_c_store_as_stored(originals, destination, tmp_path):
    archive = tmp_path / "archive"
    import_originals(archive, originals)
    address, node, _ = parse_remote(f"dicom://ORTHANC@127.0.0.1:{destination[1]}")
    report = push(address, node, archive, EVERYTHING, NONE, QUICK)
    assert (report.stored, report.errors) == (len(originals), []), report.lines()
    assert_same_datasets(in_orthanc(destination[0]), originals, tmp_path)


def import_originals(archive: Path, originals: dict[str, Path]) -> None:
    assert run_import(list(originals.values()), archive).exit_code == 0
