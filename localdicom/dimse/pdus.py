"""The DICOM Upper Layer's framing (PS3.8 9.3): protocol data units read from and written to
an asyncio stream.

Every PDU is a 6-byte header (type, a reserved byte, the length of what follows as a 32-bit
big-endian number) and its body. A P-DATA-TF body is a run of presentation data value items
(PS3.8 9.3.5.1): a 32-bit length, the presentation context ID, and a message control header
(PS3.8 E.2: bit 0 set for a command fragment, bit 1 for the last fragment of one) before the
fragment itself. The association PDUs' bodies are pynetdicom's to decode and encode
(:mod:`.negotiation`); only the fixed-size ones are built here.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from contextlib import suppress
from typing import BinaryIO

#: PDU types (PS3.8 Table 9-11 and 9.3.2-9.3.8).
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07
KNOWN_TYPES = frozenset(range(0x01, 0x08))

HEADER = struct.Struct(">BxL")
#: Bytes of a data set read and sent at a time.
BLOCK = 4 << 20
PDV_HEADER = struct.Struct(">LBB")
COMMAND, LAST = 0x01, 0x02

#: A-ABORT sources and reasons (PS3.8 Table 9-26): the service user (this server itself,
#: stopping; its reason is not significant), or the service provider, for an unrecognized or
#: unexpected PDU, or an invalid PDU parameter value.
USER, PROVIDER = 0x00, 0x02
UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0x01, 0x02, 0x06


class ProtocolError(Exception):
    """The peer sent what the Upper Layer protocol does not allow; answered with an A-ABORT
    that carries ``reason`` (PS3.8 9.2, state table action AA-8)."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def read_pdu(reader: asyncio.StreamReader, longest: int) -> tuple[int, bytes]:
    """The next PDU's type and body. A body longer than ``longest`` is refused before it is
    read, so a peer cannot make this side hold more than it offered to receive."""
    kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
    if kind not in KNOWN_TYPES:
        raise ProtocolError(UNRECOGNIZED_PDU, f"PDU type 0x{kind:02X} is not DICOM's")
    if length > longest:
        raise ProtocolError(INVALID_PARAMETER, f"a PDU of {length} bytes (at most {longest})")
    return kind, await reader.readexactly(length)


async def linger(reader: asyncio.StreamReader, timeout: float) -> None:
    """After an A-ASSOCIATE-RJ, A-RELEASE-RP or A-ABORT, wait for the peer to close the
    connection (PS3.8 9.2, state Sta13, under the ARTIM timer): closing first could reach a
    requestor before the PDU is read, and make a rejection or a release look like an abort."""
    with suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(timeout):
            while await reader.read(1 << 16):
                pass


def pdu(kind: int, body: bytes) -> bytes:
    return HEADER.pack(kind, len(body)) + body


def fragments(body: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """Each presentation data value of a P-DATA-TF body: (context ID, message control header,
    fragment)."""
    view, offset = memoryview(body), 0
    while offset < len(view):
        if len(view) - offset < PDV_HEADER.size:
            raise ProtocolError(INVALID_PARAMETER, "a P-DATA-TF ends inside an item header")
        length, context_id, control = PDV_HEADER.unpack_from(view, offset)
        end = offset + 4 + length
        if length < 2 or end > len(view):
            raise ProtocolError(INVALID_PARAMETER, "a P-DATA-TF item overruns its PDU")
        yield context_id, control, view[offset + PDV_HEADER.size : end]
        offset = end


def p_data(context_id: int, control: int, fragment: bytes | memoryview) -> list[bytes | memoryview]:
    """One P-DATA-TF of one fragment, as the pieces to write (the fragment is not copied)."""
    item = PDV_HEADER.pack(len(fragment) + 2, context_id, control)
    return [HEADER.pack(P_DATA_TF, len(item) + len(fragment)), item, fragment]


def message_pdus(
    context_id: int, data: bytes | memoryview, is_command: bool, fragment_size: int
) -> Iterator[list[bytes | memoryview]]:
    """``data`` (a whole command set, or a data set) in P-DATA-TFs of at most
    ``fragment_size`` bytes of it each, the last one marked so (PS3.8 E.2)."""
    view = memoryview(data)
    kind = COMMAND if is_command else 0
    offsets = range(0, max(len(view), 1), fragment_size)
    for start in offsets:
        last = start + fragment_size >= len(view)
        yield p_data(context_id, kind | (LAST if last else 0), view[start : start + fragment_size])


def read_pdus(
    file: BinaryIO, context_id: int, fragment_size: int, remaining: int
) -> tuple[bytearray, int]:
    """The next P-DATA-TFs of a data set ``remaining`` bytes long in ``file``: up to
    :data:`BLOCK` bytes of it, read into place behind each PDU's headers (one copy from the
    file, none to assemble), the last fragment of the data set marked so; and what is left."""
    count = max(1, min(-(-remaining // fragment_size), BLOCK // fragment_size or 1))
    length = min(remaining, count * fragment_size)
    block = bytearray(length + count * (HEADER.size + PDV_HEADER.size))
    view, position = memoryview(block), 0
    for _ in range(count):
        size = min(fragment_size, remaining)
        remaining -= size
        control = LAST if remaining == 0 else 0
        HEADER.pack_into(block, position, P_DATA_TF, PDV_HEADER.size + size)
        PDV_HEADER.pack_into(block, position + HEADER.size, size + 2, context_id, control)
        position += HEADER.size + PDV_HEADER.size
        if file.readinto(view[position : position + size]) != size:
            raise OSError(f"{getattr(file, 'name', 'a file')} ended early")
        position += size
    return block, remaining


def fragment_size(peer_maximum: int, ours: int) -> int:
    """How much of a message fits in one P-DATA-TF to the peer: its Maximum Length less the
    item header (PS3.8 D.1: the maximum is of the PDU's variable field; 0 means no limit)."""
    limit = peer_maximum if peer_maximum > 0 else ours
    return max(limit, PDV_HEADER.size + 1) - PDV_HEADER.size


def abort(reason: int = 0, source: int = PROVIDER) -> bytes:
    """An A-ABORT (PS3.8 9.3.8): two reserved bytes, source, reason."""
    return pdu(ABORT, bytes([0, 0, source, reason]))


def release_rp() -> bytes:
    """An A-RELEASE-RP (PS3.8 9.3.7): four reserved bytes."""
    return pdu(RELEASE_RP, bytes(4))
