"""The DICOM listener's own framing, messages and negotiation, checked against pynetdicom's
encoders and decoders of the same PDUs and command sets (PS3.8 9.3, PS3.7 E)."""

from __future__ import annotations

import asyncio
import socket
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom.dimse_messages import C_ECHO_RSP
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta, split_dataset
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from localdicom.dimse import pdus
from localdicom.dimse.association import Association
from localdicom.dimse.messages import BadMessage, decode_command, encode_command
from localdicom.dimse.negotiation import (
    AGREEMENT_BYTES,
    AGREEMENTS_KEPT,
    Agreement,
    Policy,
    Rejected,
    negotiate,
    supported_contexts,
)
from localdicom.dimse.retrieve import data_set_offset
from localdicom.dimse.store import file_meta
from tests.helpers.dimse import association_request


def read(data: bytes, longest: int = 1 << 20) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await pdus.read_pdu(reader, longest)

    return asyncio.run(go())


# framing (PS3.8 9.3.1, 9.3.5) ---------------------------------------------------------------


def test_p_data_pdus_are_read_by_pynetdicom_as_the_fragments_written():
    data = bytes(range(256)) * 10
    written = b"".join(
        b"".join(bytes(piece) for piece in pieces)
        for pieces in pdus.message_pdus(3, data, is_command=False, fragment_size=1000)
    )
    fragments = p_data_items(written)
    assert [len(item.data) - 1 for item in fragments] == [1000, 1000, 560]
    assert b"".join(item.data[1:] for item in fragments) == data
    # message control header: data set fragments, the last one marked (PS3.8 E.2)
    assert [item.data[0] for item in fragments] == [0x00, 0x00, 0x02]
    assert {item.presentation_context_id for item in fragments} == {3}


def test_a_written_p_data_pdu_is_read_back_fragment_by_fragment():
    written = b"".join(bytes(p) for p in pdus.p_data(5, pdus.COMMAND | pdus.LAST, b"abcd"))
    kind, body = read(written)
    assert kind == pdus.P_DATA_TF
    assert [(c, f, bytes(d)) for c, f, d in pdus.fragments(body)] == [(5, 0x03, b"abcd")]


def test_a_pdu_longer_than_offered_is_refused_before_it_is_read():
    header = bytes([0x04, 0]) + (2 << 20).to_bytes(4, "big")
    with pytest.raises(pdus.ProtocolError, match="at most"):
        read(header)


def test_a_pdu_type_dicom_has_not_is_refused():
    with pytest.raises(pdus.ProtocolError) as refused:
        read(b"GET / HTTP/1.1\r\n\r\n")
    assert refused.value.reason == pdus.UNRECOGNIZED_PDU


@pytest.mark.parametrize(
    "body",
    [b"\x00\x00\x00\x10\x01\x03abc", b"\x00\x00\x00\x01\x01", b"\x00\x00"],
    ids=["item overruns", "item too short", "item header cut"],
)
def test_p_data_items_that_do_not_fit_their_pdu_are_refused(body: bytes):
    with pytest.raises(pdus.ProtocolError):
        list(pdus.fragments(body))


def test_the_fragment_size_leaves_room_for_the_item_header():
    """PS3.8 D.1: the Maximum Length is of the P-DATA-TF's variable field; 0 is no limit."""
    assert pdus.fragment_size(16384, 1 << 20) == 16378
    assert pdus.fragment_size(0, 1 << 20) == (1 << 20) - 6


# command sets (PS3.7 E.1) ------------------------------------------------------------------


def test_a_command_set_is_encoded_as_pynetdicom_encodes_it():
    primitive = C_ECHO()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    primitive.Status = 0x0000
    theirs = C_ECHO_RSP()
    theirs.primitive_to_message(primitive)
    (p_data,) = theirs.encode_msg(1, 16384)
    ((_, their_bytes),) = p_data.presentation_data_value_list

    ours = {
        "AffectedSOPClassUID": "1.2.840.10008.1.1",
        "CommandField": 0x8030,
        "MessageIDBeingRespondedTo": 7,
        "CommandDataSetType": 0x0101,
        "Status": 0x0000,
    }
    assert encode_command(ours) == their_bytes[1:]
    assert decode_command(their_bytes[1:])["CommandGroupLength"] == len(their_bytes) - 1 - 12


# negotiation (PS3.8 7.1, PS3.7 D.3.3) ------------------------------------------------------


def request(*contexts, **options) -> bytes:
    """An association request's body (after its 6-byte PDU header)."""
    return association_request(*contexts, **options)[6:]


def policy(callers=None) -> Policy:
    return Policy(supported_contexts(), 1 << 20, callers)


def accepted(answer: bytes) -> A_ASSOCIATE:
    pdu = A_ASSOCIATE_AC()
    pdu.decode(answer)
    return pdu.to_primitive()


def test_an_association_is_accepted_with_the_contexts_supported():
    body = request(
        build_context(StudyRootQueryRetrieveInformationModelFind),
        build_context("1.2.3.4.5", ExplicitVRLittleEndian),  # no such SOP class here
    )
    agreement, answer = negotiate(body, policy(), full=False)
    assert agreement.calling_ae_title == "CALLER" and agreement.peer_maximum_pdu == 16384
    assert list(agreement.contexts) == [1]
    reply = accepted(answer)
    assert reply.maximum_length_received == 1 << 20
    assert [c.result for c in reply.presentation_context_definition_results_list] == [0, 3]


def test_a_c_get_requestor_gets_its_storage_syntaxes_in_its_own_order():
    """PS3.7 D.3.3.4: the requestor takes the SCP role; its first proposed syntax is used."""
    body = request(
        build_context(CTImageStorage, [JPEG2000Lossless, ImplicitVRLittleEndian]),
        roles=[CTImageStorage],
    )
    agreement, _ = negotiate(body, policy(), full=False)
    (context,) = agreement.contexts.values()
    assert context.transfer_syntax == [JPEG2000Lossless] and context.as_scu


def rejection(answer: bytes) -> tuple[int, int, int]:
    pdu = A_ASSOCIATE_RJ()
    pdu.decode(answer)
    return pdu.result, pdu.source, pdu.reason_diagnostic


def test_a_caller_not_listed_is_rejected_permanently():
    with pytest.raises(Rejected) as rejected:
        negotiate(request(build_context(CTImageStorage), calling="STRANGER"), policy({"A"}), False)
    assert rejection(rejected.value.answer) == (0x01, 0x01, 0x03)


def test_beyond_the_associations_served_at_once_a_caller_is_rejected_transiently():
    chosen = policy()
    with pytest.raises(Rejected) as rejected:
        negotiate(request(build_context(CTImageStorage)), chosen, full=True)
    assert rejection(rejected.value.answer) == (0x02, 0x03, 0x02)
    assert not chosen.agreed  # refused before any agreement was worked out


def test_a_request_made_before_gets_the_same_agreement_from_memory():
    body = request(build_context(CTImageStorage), roles=[CTImageStorage])
    chosen = policy()
    first = negotiate(body, chosen, full=False)
    assert negotiate(body, chosen, full=False) is first
    assert negotiate(request(build_context(CTImageStorage)), chosen, False) is not first
    with pytest.raises(Rejected) as rejected:  # remembered, but beyond the limit all the same
        negotiate(body, chosen, full=True)
    assert rejection(rejected.value.answer) == (0x02, 0x03, 0x02)


def test_a_caller_not_listed_is_rejected_every_time():
    chosen = policy({"A"})
    for _ in range(2):
        with pytest.raises(Rejected):
            negotiate(request(build_context(CTImageStorage), calling="STRANGER"), chosen, False)
    assert not chosen.agreed


def test_agreements_kept_are_the_latest_and_none_larger_than_the_limit():
    chosen = policy()
    bodies = [request(build_context(CTImageStorage), calling=f"C{n}") for n in range(65)]
    for body in bodies:
        negotiate(body, chosen, full=False)
    assert list(chosen.agreed) == bodies[-AGREEMENTS_KEPT:]
    syntaxes = [f"1.2.3.{n}.{'9' * 50}" for n in range(1100)]  # 58-61 characters each
    # an item's length is 16-bit (PS3.8 9.3.2.2): the syntaxes in two contexts
    large = request(
        *(build_context(MRImageStorage, part) for part in (syntaxes[::2], syntaxes[1::2]))
    )
    assert len(large) > AGREEMENT_BYTES
    agreement, _ = negotiate(large, chosen, full=False)
    assert not agreement.contexts and large not in chosen.agreed


def test_an_association_request_that_cannot_be_decoded_is_a_protocol_error():
    with pytest.raises(pdus.ProtocolError):
        negotiate(bytes(range(256)), policy(), full=False)


def test_every_kind_of_command_element_is_encoded_as_pydicom_encodes_it():
    """US, UL, UI (NUL-padded), AE and LO (space-padded), AT; PS3.5 6.2, 7.1.3."""
    fields = {
        "AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.2.2.3",
        "CommandField": 0x8021,
        "MessageIDBeingRespondedTo": 3,
        "CommandDataSetType": 0x0000,
        "Status": 0xA900,
        "ErrorComment": "no such level",
        "OffendingElement": [0x00080052, 0x00100020],
        "MoveDestination": "PEER",
        "NumberOfRemainingSuboperations": 2,
        "AffectedSOPInstanceUID": "1.2.3",
    }
    expected = Dataset()
    for keyword, value in fields.items():
        setattr(expected, keyword, value)
    body = encode(expected, True, True)
    expected.CommandGroupLength = len(body)
    assert encode_command(fields) == encode(expected, True, True)


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "rtplan.dcm", "SC_rgb.dcm"]
)
def test_a_stored_files_data_set_starts_where_pynetdicom_finds_it(name: str):
    """PS3.10 7.1: what a C-GET sends of a stored file is what follows its File Meta."""
    path = Path(get_testdata_file(name))
    with open(path, "rb") as file:
        assert data_set_offset(file) == split_dataset(path)[1]


def test_a_file_meta_without_its_group_length_first_is_read_element_by_element(tmp_path):
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del dataset.file_meta.FileMetaInformationGroupLength
    with open(tmp_path / "no-length.dcm", "wb") as file:
        file.write(bytes(128) + b"DICM")
        write_dataset(DicomFileLike(file), dataset.file_meta)  # explicit VR little endian
        start = file.tell()
    with open(tmp_path / "no-length.dcm", "rb") as file:
        assert data_set_offset(file) == start


def test_a_command_set_written_by_pydicom_is_read_back_whole():
    written = Dataset()
    written.CommandGroupLength = 0
    written.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    written.CommandField = 0x8001
    written.MessageIDBeingRespondedTo = 9
    written.CommandDataSetType = 0x0101
    written.Status = 0xB000
    written.OffendingElement = [0x00100010]
    written.ErrorComment = "coerced"
    written.AffectedSOPInstanceUID = "1.2.3.4"
    read = decode_command(encode(written, True, True))
    assert read == {
        element.keyword: element.value
        for element in written
        if element.keyword != "OffendingElement"
    } | {"OffendingElement": [0x00100010]}


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00\x00\x01\x04\x00", b"\x08\x00\x18\x00\x02\x00\x00\x00ab", b""],
    ids=["cut inside an element", "not group 0000", "no command field"],
)
def test_bytes_that_are_no_command_set_are_refused(data: bytes):
    with pytest.raises(BadMessage):
        decode_command(data)


def p_data_items(written: bytes) -> list:
    """pynetdicom's reading of consecutive P-DATA-TF PDUs."""
    items, offset = [], 0
    while offset < len(written):
        length = int.from_bytes(written[offset + 2 : offset + 6], "big")
        pdu = P_DATA_TF()
        pdu.decode(written[offset : offset + 6 + length])
        items += pdu.presentation_data_value_items
        offset += 6 + length
    return items


@pytest.mark.parametrize("size", [0, 1, 16378, 40000])
def test_a_files_data_set_is_read_into_p_data_pdus_pynetdicom_reads(size, monkeypatch):
    monkeypatch.setattr(pdus, "BLOCK", 2 * 16378)  # two fragments a block: several blocks
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    file, remaining, written = BytesIO(b"META" + data), size, b""
    file.seek(4)
    while True:
        block, remaining = pdus.read_pdus(file, 7, 16378, remaining)
        written += block
        if remaining == 0:
            break
    items = p_data_items(written)
    assert b"".join(item.data[1:] for item in items) == data
    assert [item.data[0] for item in items] == [0x00] * (len(items) - 1) + [0x02]
    assert {item.presentation_context_id for item in items} == {7}
    assert all(len(item.data) - 1 <= 16378 for item in items)


# the File Meta Information written before a received data set (PS3.10 7.1) ----------------


@pytest.mark.parametrize("sop", ["1.2.3.4", "1.2.3.45", "1.2.3.\u00e94"])  # even, odd, not ASCII
def test_a_received_instance_gets_the_file_meta_pynetdicom_writes(sop: str):
    meta = file_meta(CTImageStorage, sop, JPEG2000Lossless)
    expected = create_file_meta(
        sop_class_uid=UID(CTImageStorage),
        sop_instance_uid=UID(sop.encode("ascii", "replace").decode()),
        transfer_syntax=UID(JPEG2000Lossless),
    )
    assert meta == bytes(128) + b"DICM" + encode_file_meta(expected)
    data_set = Dataset()
    data_set.SOPInstanceUID = "1.2.3.4"
    read = pydicom.dcmread(BytesIO(meta + encode(data_set, False, True)))
    assert read.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert read.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert read.SOPInstanceUID == "1.2.3.4"


async def test_a_peer_that_stops_reading_loses_the_association_instead_of_holding_it() -> None:
    """A requestor that takes none of a C-GET's data is cut off once nothing has left for
    the network timeout (PS3.8 leaves it to implementations, as dcmtk's -to and pynetdicom's
    network_timeout), instead of holding the association, and a stopping server, for ever.
    The timeout here is short; the server's is NETWORK_TIMEOUT."""
    ours, theirs = socket.socketpair()  # theirs is never read
    reader, writer = await asyncio.open_connection(sock=ours)
    agreement = Agreement("STALLED", 0, {})
    association = Association(None, agreement, (reader, writer), (1 << 20, 0.2, 0.2), "test")  # type: ignore[arg-type]
    command = {"CommandField": 0x8030, "MessageIDBeingRespondedTo": 1, "Status": 0}
    try:
        with pytest.raises(ConnectionError, match="took nothing"):
            async with asyncio.timeout(60):  # a regression waits for ever: fail it instead
                for _ in range(64):  # far more than the socket's buffers hold
                    await association.send(1, command, bytes(1 << 20))
        assert writer.transport.is_closing()
    finally:
        writer.close()
        theirs.close()
