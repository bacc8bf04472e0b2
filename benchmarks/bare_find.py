"""A Study Root C-FIND requestor over a plain socket, for measuring servers, not clients.

pynetdicom's requestor hands every PDU between two threads that poll each millisecond and
decodes each response in Python as it arrives: its own cost per query is a few milliseconds,
as much as a fast server takes to answer. This one sends a prepared request and reads the
responses with nothing in between but the PDU framing (PS3.8 9.3) and a scan of each command
set for its Status (PS3.7 E.1); identifiers are kept as bytes and decoded by pydicom after
the clock has stopped. The association PDUs are pynetdicom's encoding and decoding.
"""

from __future__ import annotations

import socket
import struct
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

HEADER = struct.Struct(">BxL")
ELEMENT = struct.Struct("<HHL")  # implicit VR little endian: group, element, length
STATUS, DATA_SET_TYPE, NO_DATA_SET = 0x0900, 0x0800, 0x0101
PENDING = (0xFF00, 0xFF01)
MAXIMUM_PDU = 1 << 20
FIND, ECHO = 1, 3  # presentation context IDs


class BareFind:
    """One association, two presentation contexts (Study Root FIND and Verification, Implicit
    VR Little Endian), queries (or echoes) one after another."""

    def __init__(self, port: int, called: str, calling: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.message_id = 0
        self.sock.sendall(_association_request(called, calling))
        kind, body = self._pdu()
        if kind != 0x02:
            raise ConnectionError(f"association not accepted (PDU type 0x{kind:02X})")
        answer = A_ASSOCIATE_AC()
        answer.decode(HEADER.pack(kind, len(body)) + body)
        results = answer.to_primitive().presentation_context_definition_results_list
        if not any(context.result == 0 for context in results if context.context_id == FIND):
            raise ConnectionError("Study Root C-FIND not accepted")

    def request(self, identifier: Dataset) -> bytes:
        """The PDUs of a C-FIND-RQ for ``identifier`` (built before the clock starts)."""
        command = self._command(StudyRootQueryRetrieveInformationModelFind, 0x0020)
        command.Priority, command.CommandDataSetType = 0, 0x0000
        identifier_set = encode(identifier, True, True)
        return _p_data(_command_set(command), 0x03, FIND) + _p_data(identifier_set, 0x02, FIND)

    def echo_request(self) -> bytes:
        """The PDU of a C-ECHO-RQ (PS3.7 9.3.5), a request that asks for nothing: its round
        trip is what any request costs before the server does anything for it."""
        command = self._command(Verification, 0x0030)
        command.CommandDataSetType = 0x0101
        return _p_data(_command_set(command), 0x03, ECHO)

    def find(self, request: bytes) -> tuple[int, list[bytes]]:
        """Send a prepared request; the final status and each match's identifier bytes (an
        echo's: its status and none)."""
        self.sock.sendall(request)
        matches: list[bytes] = []
        command, data = bytearray(), bytearray()
        while True:
            kind, body = self._pdu()
            if kind != 0x04:
                raise ConnectionError(f"PDU type 0x{kind:02X} during a C-FIND")
            for control, fragment in _fragments(body):
                if not control & 0x01:
                    data += fragment
                    if control & 0x02:
                        matches.append(bytes(data))
                        data.clear()
                    continue
                command += fragment
                if control & 0x02:
                    status = _status(command)
                    command.clear()
                    if status not in PENDING:
                        return status, matches

    def _command(self, sop_class: str, field: int) -> Dataset:
        self.message_id += 1
        command = Dataset()
        command.AffectedSOPClassUID = sop_class
        command.CommandField, command.MessageID = field, self.message_id
        return command

    def release(self) -> None:
        self.sock.sendall(HEADER.pack(0x05, 4) + bytes(4))
        self._pdu()
        self.sock.close()

    def _pdu(self) -> tuple[int, bytes]:
        header = self.file.read(HEADER.size)
        if len(header) < HEADER.size:
            raise ConnectionError("connection closed")
        kind, length = HEADER.unpack(header)
        return kind, self.file.read(length)


def decoded(identifier: bytes) -> Dataset:
    return decode(BytesIO(identifier), True, True)


def _association_request(called: str, calling: str) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = calling, called
    find = build_context(StudyRootQueryRetrieveInformationModelFind, ImplicitVRLittleEndian)
    echo = build_context(Verification, ImplicitVRLittleEndian)
    find.context_id, echo.context_id = FIND, ECHO
    primitive.presentation_context_definition_list = [find, echo]
    length = MaximumLengthNotification()
    length.maximum_length_received = MAXIMUM_PDU
    primitive.user_information = [length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def _command_set(command: Dataset) -> bytes:
    """A command set with its Command Group Length first (PS3.7 E.1)."""
    body = encode(command, True, True)
    return ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + body


def _p_data(fragment: bytes, control: int, context_id: int) -> bytes:
    item = struct.pack(">LBB", len(fragment) + 2, context_id, control) + fragment
    return HEADER.pack(0x04, len(item)) + item


def _fragments(body: bytes):
    offset = 0
    while offset < len(body):
        length, control = struct.unpack_from(">L", body, offset)[0], body[offset + 5]
        yield control, body[offset + 6 : offset + 4 + length]
        offset += 4 + length


def _status(command: bytes) -> int:
    """The Status of a command set (PS3.7 E.1), read without decoding the rest."""
    offset = 0
    while offset < len(command):
        group, element, length = ELEMENT.unpack_from(command, offset)
        offset += ELEMENT.size
        if group == 0 and element == STATUS:
            return struct.unpack_from("<H", command, offset)[0]
        offset += length
    raise ValueError("a response without a Status")
