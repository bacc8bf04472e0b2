"""``localdicom push`` to a DICOM node (C-STORE SCU, PS3.4 B) that accepts only Explicit VR
Little Endian: a JPEG 2000 instance goes rewritten in it (the node accepts none of its
stored syntax), an uncompressed one as stored, byte for byte after the File Meta
Information; the node's 0x0111 (Duplicate SOP Instance) counts as already there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import CTImageStorage

from localdicom.importer import run_import
from localdicom.selection import Selection
from localdicom.transfer.options import TransferOptions
from localdicom.transfer.push import push
from localdicom.transfer.remote import Credentials, parse_remote
from tests.helpers import free_port, write_series

DUPLICATE = 0x0111


class Node:
    """A C-STORE SCP that keeps what it receives, and answers 0x0111 for a SOP Instance UID
    it has."""

    def __init__(self) -> None:
        self.received: dict[str, bytes] = {}
        self.port = free_port()

    def store(self, event) -> int:
        sop = str(event.request.AffectedSOPInstanceUID)
        if sop in self.received:
            return DUPLICATE
        # pull and push have pynetdicom spool received datasets to a file (its _config)
        path = getattr(event, "dataset_path", None)
        self.received[sop] = path.read_bytes() if path else event.encoded_dataset()
        return 0x0000


@pytest.fixture
def node() -> Iterator[Node]:
    peer = Node()
    ae = AE("NODE")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = ae.start_server(
        ("127.0.0.1", peer.port), block=False, evt_handlers=[(evt.EVT_C_STORE, peer.store)]
    )
    yield peer
    server.shutdown()


def after_meta(data: bytes, folder: Path) -> bytes:
    (folder / "x.dcm").write_bytes(data)
    return data[split_dataset(folder / "x.dcm")[1] :]


def test_push_rewrites_only_what_the_node_cannot_take_as_stored(node, tmp_path):
    native = write_series(tmp_path / "in", "dimse-push", "native", 2, size=32)
    j2k = write_series(tmp_path / "in", "dimse-push", "j2k", 2, size=32, syntax="j2k")
    archive = tmp_path / "archive"
    assert run_import([*native, *j2k], archive).exit_code == 0
    address, dicom, _ = parse_remote(f"dicom://NODE@127.0.0.1:{node.port}")
    everything = Selection(everything=True)
    report = push(address, dicom, archive, everything, Credentials(), TransferOptions())
    assert (report.stored, report.errors) == (4, []), report.lines()
    for path in native:  # as stored
        sop = pydicom.dcmread(path).SOPInstanceUID
        assert after_meta(node.received[sop], tmp_path) == after_meta(path.read_bytes(), tmp_path)
    for path in j2k:  # rewritten, the same pixels
        original = pydicom.dcmread(path)
        sent = pydicom.dcmread(
            pydicom.filebase.DicomBytesIO(node.received[original.SOPInstanceUID])
        )
        assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(sent.pixel_array, original.pixel_array)
    (archive / ".transfers").rename(tmp_path / "record")  # without it: the node's 0x0111
    again = push(address, dicom, archive, everything, Credentials(), TransferOptions())
    assert (again.stored, again.duplicates, again.errors) == (0, 4, [])
