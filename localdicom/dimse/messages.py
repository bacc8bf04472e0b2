"""DIMSE messages (PS3.7 6, 9.3): command sets and the data sets that follow them.

A command set is always Implicit VR Little Endian (PS3.7 6.3.1) and starts with its Command
Group Length; the data set of a message (an Identifier, a stored instance) is in the transfer
syntax of the presentation context it came on. pynetdicom's codecs (``dsutils``) encode and
decode both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext

#: Command Field values (PS3.7 Table E.1-1 and 9.3); responses are the request | 0x8000.
C_STORE, C_GET, C_FIND, C_MOVE, C_ECHO = 0x0001, 0x0010, 0x0020, 0x0021, 0x0030
C_CANCEL = 0x0FFF
RESPONSE = 0x8000
#: Command Data Set Type (PS3.7 Table E.1-1): no data set follows.
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0000
#: Status (PS3.7 C.4, PS3.4 C.4): success, the pending sub-operation states, cancelled.
SUCCESS, PENDING, CANCELLED = 0x0000, 0xFF00, 0xFE00


class BadMessage(Exception):
    """A command set or data set that cannot be decoded, or a command this side does not
    serve."""


@dataclass
class Message:
    """A request received (or a C-STORE response, during a C-GET): its command set, the
    context it came on, and its data set's bytes when it has one and is not streamed."""

    context: PresentationContext
    command: Dataset
    data: bytes | None = field(default=None, repr=False)

    @property
    def field(self) -> int:
        return int(self.command.CommandField)

    @property
    def message_id(self) -> int:
        return int(self.command.get("MessageID", 0))

    @property
    def has_data_set(self) -> bool:
        return int(self.command.CommandDataSetType) != NO_DATA_SET

    def identifier(self) -> Dataset:
        """The data set, decoded in the context's transfer syntax, every element read
        (pydicom decodes lazily: an undecodable value would otherwise fail later)."""
        try:
            dataset = decode_data_set(self.data or b"", self.context.transfer_syntax[0])
            for element in dataset:
                _ = element.value
        except Exception as exc:  # whatever the bytes make pydicom raise: the peer's fault
            raise BadMessage(f"the Identifier cannot be decoded: {exc}") from exc
        return dataset


def decode_command(data: bytes) -> Dataset:
    try:
        command = decode(BytesIO(data), is_implicit_vr=True, is_little_endian=True)
        _ = int(command.CommandField), int(command.CommandDataSetType)
    except Exception as exc:  # bytes that are no command set: the peer's fault
        raise BadMessage(f"a command set that cannot be decoded: {exc}") from exc
    return command


def encode_command(command: Dataset) -> bytes:
    """``command`` with its Command Group Length (PS3.7 E.1: the bytes after it)."""
    command.CommandGroupLength = 0
    body = encode(command, is_implicit_vr=True, is_little_endian=True)
    assert body is not None
    command.CommandGroupLength = len(body) - 12  # the length element itself: 4 + 4 + 4
    encoded = encode(command, is_implicit_vr=True, is_little_endian=True)
    assert encoded is not None
    return encoded


def decode_data_set(data: bytes, syntax: UID) -> Dataset:
    return decode(
        BytesIO(data),
        is_implicit_vr=syntax.is_implicit_VR,
        is_little_endian=syntax.is_little_endian,
        deflated=syntax == DeflatedExplicitVRLittleEndian,
    )


def encode_data_set(dataset: Dataset, syntax: UID) -> bytes:
    encoded = encode(
        dataset,
        is_implicit_vr=syntax.is_implicit_VR,
        is_little_endian=syntax.is_little_endian,
        deflated=syntax == DeflatedExplicitVRLittleEndian,
    )
    if encoded is None:  # pynetdicom logged why
        raise BadMessage("a data set that cannot be encoded")
    return encoded


def response(request: Message, status: int, has_data_set: bool = False, **extra: object) -> Dataset:
    """The response command set to ``request`` (PS3.7 9.3): its command field | 0x8000, the
    Message ID it answers, its SOP class (and instance, for C-STORE), and ``extra``."""
    command = Dataset()
    command.AffectedSOPClassUID = request.command.AffectedSOPClassUID
    command.CommandField = request.field | RESPONSE
    command.MessageIDBeingRespondedTo = request.message_id
    command.CommandDataSetType = DATA_SET_PRESENT if has_data_set else NO_DATA_SET
    command.Status = status
    if request.field == C_STORE:
        command.AffectedSOPInstanceUID = request.command.AffectedSOPInstanceUID
    for keyword, value in extra.items():
        setattr(command, keyword, value)
    return command
