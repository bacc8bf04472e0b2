"""C-STORE SCP: an instance received over DICOM is stored exactly as STOW-RS stores it.

The data set streams into the Catalog as its fragments arrive, behind the File Meta
Information (PS3.10 7.1) this side writes for it: the same upload area, check and commit as
every other way in (layout, sidecar, digest, duplicate rule, flush, group commit), never
decoded whole in memory. An association that ends in the middle leaves nothing behind.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from localdicom.catalog import Arriving, Catalog, FailureReason, StoreFailed
from localdicom.dimse.messages import SUCCESS, Message

if TYPE_CHECKING:
    from localdicom.dimse.association import Association

logger = logging.getLogger(__name__)

#: PS3.4 B.2.3 Storage Service statuses, and PS3.7 C.4.2 for the general failures (0x01xx).
STATUS_OF = {
    FailureReason.PROCESSING_FAILURE: 0x0110,
    FailureReason.DUPLICATE_SOP_INSTANCE: 0x0111,
    FailureReason.OUT_OF_RESOURCES: 0xA700,
    FailureReason.DATASET_DOES_NOT_MATCH: 0xA900,
    FailureReason.CANNOT_UNDERSTAND: 0xC000,
}
#: Error Comment is LO: 64 characters at most (PS3.7 C.4.2, PS3.5 6.2).
ERROR_COMMENT_LENGTH = 64
#: PS3.10 7.1: a 128-byte preamble, then the prefix "DICM".
PREAMBLE = bytes(128) + b"DICM"
#: (0002,0000) UL, 4 bytes; and (0002,0001) OB, 00 01 (PS3.10 Table 7.1-1).
META_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"
META_VERSION = b"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"


def incoming(catalog: Catalog, request: Message) -> Arriving:
    """The instance a C-STORE request announces, arriving: its File Meta Information
    written first, then each data set fragment as it is read."""
    arriving = catalog.arriving()
    sop_instance = request.command.get("AffectedSOPInstanceUID", "")
    arriving.write(file_meta(request.sop_class, sop_instance, request.context.transfer_syntax[0]))
    return arriving


async def handle_store(association: Association, request: Message, arriving: Arriving) -> None:
    """Store one received instance, whole; answer its status (and why, on failure)."""
    try:
        stored = await arriving.store()
    except StoreFailed as failure:
        logger.warning("C-STORE from %s refused: %s", association.caller, failure)
        await association.respond(request, STATUS_OF[failure.reason], details=comment(failure))
        return
    logger.info(
        "C-STORE from %s: %s %s",
        association.caller,
        stored.header.sop_uid,
        "already present" if stored.already_present else "stored",
    )
    await association.respond(request, SUCCESS)


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """The preamble and File Meta Information (PS3.10 7.1) of a received data set, in
    Explicit VR Little Endian, written directly: pydicom's Dataset and writer took a third of
    what the event loop spent on a C-STORE."""
    group = META_VERSION + b"".join(
        _meta_element(element, vr, text)
        for element, vr, text in (
            (0x0002, b"UI", sop_class),
            (0x0003, b"UI", sop_instance),
            (0x0010, b"UI", transfer_syntax),
            (0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID),
            (0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION),
        )
    )
    return PREAMBLE + META_GROUP_LENGTH + struct.pack("<L", len(group)) + group


def _meta_element(element: int, vr: bytes, text: str) -> bytes:
    """A group 2 element, its value padded to an even length (PS3.5 6.2: UI with a NUL)."""
    value = text.encode("ascii", "replace")
    value += (b"\0" if vr == b"UI" else b" ") * (len(value) % 2)
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def comment(failure: Exception) -> Dataset:
    """An Error Comment (PS3.7 C.4) of why."""
    details = Dataset()
    details.ErrorComment = str(failure)[:ERROR_COMMENT_LENGTH]
    return details
