"""Callers that misbehave never stop the DICOM listener nor the HTTP side, and leave nothing
behind: bytes that are not DICOM, a C-STORE cut in the middle, more associations than the
server serves at once, a sender that stalls in the middle of a dataset.

Every test ends by asking the server something new: echoscu on a new association, and a QIDO.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage

from localdicom.archive.held import HELD_BYTES
from localdicom.dimse.server import MAX_ASSOCIATIONS
from tests.helpers import ct_slice
from tests.helpers.dimse import (
    TIMEOUT,
    Call,
    DicomServer,
    assert_still_answers,
    associate,
    association_request,
    found,
    leftovers,
    small_ct,
    start_dicom_server,
    wait_for,
)
from tests.helpers.live import request

pytestmark = pytest.mark.external  # assert_still_answers runs dcmtk's echoscu

A_ABORT = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0])  # PS3.8 9.3.8, source: service user
CALLERS = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DicomServer]:
    dicom = start_dicom_server(tmp_path_factory.mktemp("dimse-hostile"))
    yield dicom
    dicom.stop()


def big_ct(series: str) -> Dataset:
    """About 20 MB: twenty PDUs at the server's largest, 1 MiB; more than the server holds
    in memory while it arrives."""
    return ct_slice(f"study-of-{series}", series, 0, size=3200)


#: P-DATA-TF PDUs of :func:`big_ct` after which the server has begun to write it to the
#: upload area, where a test sees it arrive: past what it holds in memory.
PAST_HELD = HELD_BYTES // (1 << 20) + 2


def spooling(server: DicomServer, at_least: int = 1) -> bool:
    """Whether the server is in the middle of receiving a dataset (``at_least`` bytes in)."""
    sizes = []
    for path in server.incoming.iterdir():
        with suppress(FileNotFoundError):  # committed or removed meanwhile
            sizes.append(path.stat().st_size)
    return any(size >= at_least for size in sizes)


def answer_to(data: bytes, server: DicomServer) -> bytes:
    """Everything the server sends back to ``data`` on a fresh connection, until it closes."""
    with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


#: Bytes that are not DICOM, and whether the server aborts (an unrecognized or invalid PDU:
#: A-ABORT, PS3.8 9.2 table 9-10, AA-1) or just closes (the connection closed before a whole
#: PDU arrived: Evt17, AA-4).
GARBAGE = {
    "http request": (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", True),
    "random bytes": (b"\xff" + random.Random(7).randbytes(5000), True),
    "association request of nonsense": (b"\x01\x00\x00\x00\x01\x00" + bytes(range(256)), True),
    "truncated association request": (b"\x01\x00\x00\x00\x10\x00\x00\x01", False),
}


@pytest.mark.parametrize("name", GARBAGE)
def test_bytes_that_are_not_dicom_get_an_abort_or_a_close(server: DicomServer, name: str):
    data, aborts = GARBAGE[name]
    answer = answer_to(data, server)
    pdus = [answer[i : i + 10] for i in range(0, len(answer), 10)]
    assert bool(pdus) == aborts, answer[:64]
    assert all(pdu[:6] == A_ABORT[:6] and len(pdu) == 10 for pdu in pdus), answer[:64]
    assert_still_answers(server)


def cut_after(server: DicomServer, pdus: int, how: str) -> Callable[[evt.Event], None]:
    """An EVT_PDU_SENT handler that ends the association once ``pdus`` P-DATA-TF PDUs are out
    and the server has written part of the dataset: by an A-ABORT then a close, or by just
    closing the connection (PS3.8 9.1.6, 9.1.7)."""
    sent = []

    def handler(event: evt.Event) -> None:
        if not isinstance(event.pdu, P_DATA_TF):
            return
        sent.append(event.pdu)
        if len(sent) == pdus:
            wait_for(lambda: spooling(server, 1 << 20), "the server receiving the dataset")
            sock = event.assoc.dul.socket.socket
            if how == "A-ABORT":
                sock.sendall(A_ABORT)
            sock.shutdown(socket.SHUT_RDWR)

    return handler


@pytest.mark.parametrize("how", ["A-ABORT", "connection closed"])
def test_c_store_cut_midway_stores_nothing_and_leaves_nothing(server: DicomServer, how: str):
    dataset = big_ct(f"cut-{how}")
    call = associate(server, handlers=[(evt.EVT_PDU_SENT, cut_after(server, PAST_HELD, how))])
    assert call.assoc.is_established
    answer = call.assoc.send_c_store(dataset)
    assert "Status" not in answer  # no response: the association ended first
    wait_for(lambda: not leftovers(server), "the partial dataset discarded")
    assert found(server, dataset.SOPInstanceUID) == []
    assert_still_answers(server)


def crowd_member(server: DicomServer, k: int, barrier: threading.Barrier, out: dict) -> None:
    """Caller ``k``: associate, wait until all callers have their answer (so that every
    accepted association is open at once), then C-ECHO (even k) or C-STORE (odd k)."""
    call = associate(server, calling=f"CALLER{k:02d}")
    barrier.wait()
    out[k] = call
    if call.assoc.is_established:
        if k % 2:
            out[k, "status"] = call.assoc.send_c_store(small_ct("crowd", k)).Status
        else:
            out[k, "status"] = call.assoc.send_c_echo().Status
        call.assoc.release()


def test_more_associations_than_served_at_once_are_rejected_cleanly(server: DicomServer):
    barrier = threading.Barrier(CALLERS, timeout=TIMEOUT)
    out: dict = {}
    threads = [
        threading.Thread(target=crowd_member, args=(server, k, barrier, out))
        for k in range(CALLERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    calls: dict[int, Call] = {k: out[k] for k in range(CALLERS)}
    accepted = [k for k in calls if (k, "status") in out]
    rejected = [k for k, call in calls.items() if call.rejection is not None]
    assert sorted(accepted + rejected) == list(range(CALLERS))
    assert len(accepted) <= MAX_ASSOCIATIONS < CALLERS
    # rejected-transient, by the service provider: local limit exceeded (PS3.8 9.3.4)
    assert {calls[k].rejection for k in rejected} == {(0x02, 0x03, 0x02)}
    assert all(out[k, "status"] == 0x0000 for k in accepted)
    for k in range(1, CALLERS, 2):
        assert len(found(server, small_ct("crowd", k).SOPInstanceUID)) == (k in accepted)
    assert_still_answers(server)


def stall_after(
    pdus: int, stalled: threading.Event, go_on: threading.Event
) -> Callable[[evt.Event], None]:
    """An EVT_PDU_SENT handler that stops sending after ``pdus`` P-DATA-TF PDUs until
    ``go_on``: a sender stalled in the middle of a dataset."""
    sent = []

    def handler(event: evt.Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            sent.append(event.pdu)
            if len(sent) == pdus:
                stalled.set()
                go_on.wait(TIMEOUT)

    return handler


def test_qido_answers_while_a_c_store_is_stalled_mid_dataset(server: DicomServer):
    known = small_ct("before-the-stall")
    stored = associate(server)
    assert stored.assoc.send_c_store(known).Status == 0x0000
    stored.assoc.release()
    dataset = big_ct("stalled")
    stalled, go_on, result = threading.Event(), threading.Event(), {}
    call = associate(server, handlers=[(evt.EVT_PDU_SENT, stall_after(PAST_HELD, stalled, go_on))])
    sender = threading.Thread(
        target=lambda: result.setdefault("status", call.assoc.send_c_store(dataset))
    )
    sender.start()
    try:
        assert stalled.wait(TIMEOUT)
        wait_for(lambda: spooling(server, 1 << 20), "the server receiving the dataset")
        for _ in range(5):
            assert [m["00080018"]["Value"] for m in found(server, known.SOPInstanceUID)] == [
                [known.SOPInstanceUID]
            ]
            reply = request(f"{server.url}/studies", accept="application/dicom+json")
            assert reply.status == 200
        # the QIDOs were answered while the C-STORE was still arriving
        assert "status" not in result and spooling(server)
    finally:
        go_on.set()
        sender.join(TIMEOUT)
    assert result["status"].Status == 0x0000
    call.assoc.release()
    assert len(found(server, dataset.SOPInstanceUID)) == 1
    assert leftovers(server) == []
    assert_still_answers(server)


CT_CONTEXT = build_context(CTImageStorage, ExplicitVRLittleEndian)


def p_data(control: int, fragment: bytes) -> bytes:
    """A P-DATA-TF of one fragment on context 1 (PS3.8 9.3.5, E.2)."""
    item = struct.pack(">LBB", len(fragment) + 2, 1, control) + fragment
    return struct.pack(">BxL", 0x04, len(item)) + item


def test_a_release_in_the_middle_of_a_c_store_is_aborted_and_stores_nothing(server: DicomServer):
    """PS3.8 9.2: an A-RELEASE-RQ where a data set's next fragment belongs is unexpected: the
    server aborts (AA-8) instead of waiting for the rest of the message."""
    dataset = small_ct("released-midway")
    command = Dataset()
    command.AffectedSOPClassUID = CTImageStorage
    command.CommandField, command.MessageID, command.Priority = 0x0001, 1, 0
    command.CommandDataSetType, command.AffectedSOPInstanceUID = 0, dataset.SOPInstanceUID
    encoded = encode(command, True, True)
    command_set = struct.pack("<HHLL", 0, 0, 4, len(encoded)) + encoded
    data_set = encode(dataset, False, True)
    release = bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0])
    answer = answer_to(
        association_request(CT_CONTEXT)
        + p_data(0x03, command_set)
        + p_data(0x00, data_set[:100])
        + release,
        server,
    )
    assert answer[0] == 0x02  # A-ASSOCIATE-AC
    accept_length = struct.unpack(">L", answer[2:6])[0]
    assert answer[6 + accept_length :] == bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 2])
    wait_for(lambda: not leftovers(server), "the partial dataset discarded")
    assert found(server, dataset.SOPInstanceUID) == []
    assert_still_answers(server)


def test_a_pdu_longer_than_the_server_offered_is_aborted_unread(server: DicomServer):
    """PS3.8 D.1: the server offers to receive PDUs of 1 MiB at most (its Maximum Length);
    one that announces more is refused from its header (A-ABORT, invalid PDU parameter)
    before the server holds any of it."""
    oversize = struct.pack(">BxL", 0x04, (1 << 20) + 7)
    answer = answer_to(
        association_request(CT_CONTEXT) + oversize + bytes(64),
        server,
    )
    assert answer[0] == 0x02  # A-ASSOCIATE-AC
    accept_length = struct.unpack(">L", answer[2:6])[0]
    assert answer[6 + accept_length :] == bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6])
    assert_still_answers(server)


def test_a_server_that_stops_aborts_its_open_associations_and_logs_no_traceback(tmp_path):
    """PS3.8 7.3: the server, as a service user, ends the associations still open when it
    stops with an A-ABORT (source 0), so that a peer does not wait for an answer to come."""
    dicom = start_dicom_server(tmp_path)
    try:
        address = ("127.0.0.1", dicom.dicom_port)
        with socket.create_connection(address, timeout=TIMEOUT) as sock:
            answers = sock.makefile("rb")
            sock.sendall(association_request(CT_CONTEXT))
            kind, _, length = struct.unpack(">BBL", answers.read(6))
            assert kind == 0x02  # A-ASSOCIATE-AC
            answers.read(length)
            dicom.stop()
            assert answers.read() == A_ABORT
    finally:
        dicom.stop()
    assert "Traceback" not in dicom.live.log.read_text()
