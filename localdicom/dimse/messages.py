"""DIMSE messages (PS3.7 6, 9.3): command sets and the data sets that follow them.

A command set is always Implicit VR Little Endian (PS3.7 6.3.1) and starts with its Command
Group Length; the data set of a message (an Identifier, a stored instance) is in the transfer
syntax of the presentation context it came on. pynetdicom's codecs (``dsutils``) encode and
decode both.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext

from localdicom.dicom import jsonwrite

#: Command Field values (PS3.7 Table E.1-1 and 9.3); responses are the request | 0x8000.
C_STORE, C_GET, C_FIND, C_MOVE, C_ECHO = 0x0001, 0x0010, 0x0020, 0x0021, 0x0030
C_CANCEL = 0x0FFF
RESPONSE = 0x8000
#: Command Data Set Type (PS3.7 Table E.1-1): no data set follows.
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0000
#: Status (PS3.7 C.4, PS3.4 C.4): success, the pending sub-operation states, cancelled.
SUCCESS, PENDING, CANCELLED = 0x0000, 0xFF00, 0xFE00


#: A command set to send: keyword -> value.
Command = dict[str, Any]
ELEMENT = struct.Struct("<HHL")  # implicit VR little endian: group, element, value length
NUMBERS = {"US": "<H", "UL": "<L"}


class BadMessage(Exception):
    """A command set or data set that cannot be decoded, or a command this side does not
    serve."""


@dataclass
class Message:
    """A request received (or a C-STORE response, during a C-GET): its command set, the
    context it came on, and its data set's bytes when it has one and is not streamed."""

    context: PresentationContext
    command: Command
    data: bytes | None = field(default=None, repr=False)

    @property
    def field(self) -> int:
        return self.command["CommandField"]

    @property
    def message_id(self) -> int:
        return self.command.get("MessageID", 0)

    @property
    def has_data_set(self) -> bool:
        return self.command["CommandDataSetType"] != NO_DATA_SET

    @property
    def sop_class(self) -> str:
        return self.command.get("AffectedSOPClassUID", "")

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


def decode_command(data: bytes) -> Command:
    """The elements of a command set (PS3.7 E.1), read here as :func:`encode_command` writes
    them; elements this side does not know are passed over."""
    fields: Command = {}
    offset = 0
    while offset < len(data):
        if offset + ELEMENT.size > len(data):
            raise BadMessage("a command set that ends inside an element")
        group, element, length = ELEMENT.unpack_from(data, offset)
        offset += ELEMENT.size + length
        if group != 0 or offset > len(data):
            raise BadMessage(f"a command set with ({group:04X},{element:04X}) cut or out of place")
        known = _command_element(element)
        if known is not None:
            keyword, vr = known
            fields[keyword] = _decoded(vr, data[offset - length : offset])
    if not isinstance(fields.get("CommandField"), int) or "CommandDataSetType" not in fields:
        raise BadMessage("a command set without its Command Field or Command Data Set Type")
    return fields


def encode_command(fields: Command) -> bytes:
    """A command set of ``fields`` (keyword: value), in Implicit VR Little Endian with its
    Command Group Length first (PS3.7 E.1: the bytes after it). Written here, not by
    pydicom: building and writing a Dataset cost more than the rest of a C-STORE's answer.
    The same command again (every pending response of a C-FIND) is encoded once."""
    try:
        return _encoded_command(tuple(fields.items()))
    except TypeError:  # a list value (an AT or a multi-valued element): unhashable
        return _encode_command(fields.items())


@functools.lru_cache(maxsize=256)
def _encoded_command(fields: tuple[tuple[str, Any], ...]) -> bytes:
    return _encode_command(fields)


def _encode_command(fields: Iterable[tuple[str, Any]]) -> bytes:
    in_order = sorted(fields, key=lambda field: _element(field[0]))
    body = b"".join(_encoded_element(keyword, value) for keyword, value in in_order)
    return ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + body


@functools.cache
def _element(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None or tag >> 16:
        raise KeyError(f"{keyword} is no command element")
    return tag, dictionary_VR(tag)


def _encoded_element(keyword: str, value: Any) -> bytes:
    tag, vr = _element(keyword)
    encoded = _encoded(vr, value)
    return ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(encoded)) + encoded


@functools.cache
def _command_element(element: int) -> tuple[str, str] | None:
    keyword = keyword_for_tag(element)
    return (keyword, dictionary_VR(element)) if keyword else None


def _decoded(vr: str, value: bytes) -> Any:
    if vr in NUMBERS:
        width = struct.calcsize(NUMBERS[vr])
        if len(value) % width:
            raise BadMessage(f"a {vr} value of {len(value)} bytes")
        numbers = [n for (n,) in struct.iter_unpack(NUMBERS[vr], value)]
        return numbers[0] if len(numbers) == 1 else numbers
    if vr == "AT":
        return [group << 16 | element for group, element in struct.iter_unpack("<HH", value)]
    return value.decode("ascii", "replace").strip("\0 ")


def _encoded(vr: str, value: Any) -> bytes:
    """A value as PS3.5 6.2 encodes its VR, padded to an even length (UI with a NUL)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if vr in NUMBERS:
        return b"".join(struct.pack(NUMBERS[vr], number) for number in values)
    if vr == "AT":
        return b"".join(struct.pack("<HH", tag >> 16, tag & 0xFFFF) for tag in values)
    text = "\\".join(str(item) for item in values).encode("ascii", "replace")
    return text + (b"\0" if vr == "UI" else b" ") * (len(text) % 2)


def decode_data_set(data: bytes, syntax: UID) -> Dataset:
    return decode(
        BytesIO(data),
        is_implicit_vr=syntax.is_implicit_VR,
        is_little_endian=syntax.is_little_endian,
        deflated=syntax == DeflatedExplicitVRLittleEndian,
    )


def encode_json(elements: dict[str, Any], syntax: UID) -> bytes:
    """A data set given as DICOM JSON, written directly when it is flat and little endian
    (:mod:`localdicom.dicom.jsonwrite`), else by pydicom; a large value nested in a sequence
    comes back empty (it has no place in an Identifier)."""
    if syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
        written = jsonwrite.write(elements, syntax.is_implicit_VR)
        if written is not None:
            return written
    return encode_data_set(Dataset.from_json(elements, bulk_data_uri_handler=_empty), syntax)


def _empty(uri: str) -> bytes:
    return b""


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


def response(request: Message, status: int, has_data_set: bool = False) -> Command:
    """The response command set to ``request`` (PS3.7 9.3): its command field | 0x8000, the
    Message ID it answers, its SOP class (and instance, for C-STORE)."""
    command: Command = {
        "AffectedSOPClassUID": request.sop_class,
        "CommandField": request.field | RESPONSE,
        "MessageIDBeingRespondedTo": request.message_id,
        "CommandDataSetType": DATA_SET_PRESENT if has_data_set else NO_DATA_SET,
        "Status": status,
    }
    if request.field == C_STORE:
        command["AffectedSOPInstanceUID"] = request.command.get("AffectedSOPInstanceUID", "")
    return command
