"""A live server with its DICOM port open, and what DIMSE tests need to talk to it: pynetdicom
associations that remember how they were answered, dcmtk's tools (by absolute path: pynetdicom
installs console scripts of the same names), and the HTTP side's view of what was stored.

A C-STORE's data set streams into the archive's upload area (``incoming``) as it arrives, so
a test can see there that a transfer is under way, and that nothing of it is left.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.sop_class import CTImageStorage, Verification

from tests.helpers import ct_slice, free_port
from tests.helpers.live import LiveServer, request

AE_TITLE = "LOCALDICOM"
#: Seconds any one exchange may take before the test fails rather than hangs.
TIMEOUT = 120
ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DCMTK = Path("/usr/bin")


@dataclass
class DicomServer:
    """``localdicom serve --dicom-port`` in a subprocess."""

    live: LiveServer
    dicom_port: int

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def incoming(self) -> Path:
        return self.live.archive / ".incoming"

    def stop(self) -> None:
        self.live.stop()


def start_dicom_server(folder: Path, *extra: str) -> DicomServer:
    port = free_port()
    live = LiveServer(
        folder / "archive", free_port(), extra_args=("--dicom-port", str(port), *extra)
    )
    live.start()
    return DicomServer(live, port)


@dataclass
class Call:
    """An association requested by a test, and the A-ASSOCIATE-RJ it got, if any (PS3.8
    9.3.4): result, source and reason.

    The rejection is read from the PDU received, not from ``assoc.is_rejected``: when the
    A-ASSOCIATE-RJ comes back within microseconds, pynetdicom's requestor can find its socket
    already closed (by its own handling of the RJ) before it looks for the answer, and then
    reports an abort (``acse._negotiate_as_requestor``: "Failed to connect")."""

    assoc: Association
    rejections: list[A_ASSOCIATE_RJ] = field(default_factory=list)

    @property
    def rejection(self) -> tuple[int, int, int] | None:
        for pdu in self.rejections:
            return pdu.result, pdu.source, pdu.reason_diagnostic
        return None


def associate(
    server: DicomServer,
    calling: str = "TESTSCU",
    handlers: list | None = None,
    called: str = AE_TITLE,
) -> Call:
    """An association proposing Verification and CT Image Storage (explicit VR little endian,
    the encoding of :func:`ct_slice`)."""
    ae = AE(calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    call = Call(None)  # type: ignore[arg-type]

    def remember(event: evt.Event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            call.rejections.append(event.pdu)

    handlers = [(evt.EVT_PDU_RECV, remember), *(handlers or [])]
    call.assoc = ae.associate(
        "127.0.0.1", server.dicom_port, ae_title=called, evt_handlers=handlers
    )
    return call


def c_store(server: DicomServer, dataset: Dataset, calling: str = "TESTSCU") -> Dataset:
    """The C-STORE response status (PS3.4 B.2.3) of one instance sent on its own association."""
    assoc = associate(server, calling).assoc
    assert assoc.is_established, "association not accepted"
    try:
        return assoc.send_c_store(dataset)
    finally:
        assoc.release()


def small_ct(series: str, index: int = 0, **options) -> Dataset:
    return ct_slice(f"study-of-{series}", series, index, size=64, **options)


def found(server: DicomServer, sop: str) -> list[dict]:
    """What QIDO-RS finds under a SOP Instance UID (PS3.18 10.6)."""
    reply = request(f"{server.url}/instances?SOPInstanceUID={sop}", accept="application/dicom+json")
    assert reply.status in (200, 204), reply.text
    return json.loads(reply.body) if reply.status == 200 else []


def retrieve(server: DicomServer, study: str, series: str, sop: str) -> tuple[str, bytes]:
    """An instance as stored (WADO-RS, transfer-syntax=*): its part's type and bytes."""
    url = f"{server.url}/studies/{study}/series/{series}/instances/{sop}"
    reply = request(url, accept=ANY_SYNTAX)
    assert reply.status == 200, reply.text
    (part,) = reply.parts()
    return part


def leftovers(server: DicomServer) -> list[Path]:
    """Anything of a received instance not committed: in the archive's upload area."""
    return sorted(server.incoming.iterdir())


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll until ``condition()`` holds (an event another process causes, never a speed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DCMTK / tool), *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def assert_still_answers(server: DicomServer) -> None:
    """The listener takes a new association (echoscu, PS3.4 A.4) and the HTTP side a QIDO."""
    echo = dcmtk("echoscu", "-aec", AE_TITLE, "127.0.0.1", str(server.dicom_port))
    assert echo.returncode == 0, echo.stdout + echo.stderr
    reply = request(f"{server.url}/studies", accept="application/dicom+json")
    assert reply.status in (200, 204), reply.text


def identifier(level: str | None, **keys: object) -> Dataset:
    """A C-FIND, C-GET or C-MOVE Identifier: the Query/Retrieve Level (none if None) and
    ``keys`` by keyword."""
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def association_request(*contexts, roles=(), calling: str = "CALLER") -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) encoded by pynetdicom: ``contexts`` numbered 1,
    3, 5 ..., a Maximum Length of 16 KiB, and the SCP role asked for the SOP classes of
    ``roles`` (PS3.7 D.3.3.4)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = calling, AE_TITLE
    for number, context in enumerate(contexts):
        context.context_id = 2 * number + 1
    primitive.presentation_context_definition_list = list(contexts)
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    items = [length]
    for sop_class in roles:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid, role.scu_role, role.scp_role = sop_class, False, True
        items.append(role)
    primitive.user_information = items
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()
