"""C-STORE SCP: an instance received over DICOM is stored exactly as STOW-RS stores it.

The data set streams into the Catalog as its fragments arrive, behind the File Meta
Information (PS3.10 7.1) this side writes for it: the same upload area, check and commit as
every other way in (layout, sidecar, digest, duplicate rule, flush, group commit), never
decoded whole in memory. An association that ends in the middle leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from localdicom.catalog import FailureReason, StoreFailed
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


async def handle_store(
    association: Association, request: Message, data_set: AsyncIterator[bytes]
) -> None:
    """Store one received instance; answer its status (and why, on failure)."""
    try:
        stored = await association.node.catalog.store(_part10(request, data_set))
    except StoreFailed as failure:
        logger.warning("C-STORE from %s refused: %s", association.caller, failure)
        await association.respond(request, STATUS_OF[failure.reason], details=comment(failure))
        return
    except ConnectionError:
        logger.info("C-STORE from %s cut short: nothing stored", association.caller)
        return
    logger.info(
        "C-STORE from %s: %s %s",
        association.caller,
        stored.header.sop_uid,
        "already present" if stored.already_present else "stored",
    )
    await association.respond(request, SUCCESS)


async def _part10(request: Message, data_set: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The received data set as a DICOM file: the File Meta Information first."""
    meta = create_file_meta(
        sop_class_uid=UID(request.sop_class),
        sop_instance_uid=UID(request.command.get("AffectedSOPInstanceUID", "")),
        transfer_syntax=request.context.transfer_syntax[0],
    )
    yield PREAMBLE + encode_file_meta(meta)
    async for chunk in data_set:
        yield chunk


def comment(failure: Exception) -> Dataset:
    """An Error Comment (PS3.7 C.4) of why."""
    details = Dataset()
    details.ErrorComment = str(failure)[:ERROR_COMMENT_LENGTH]
    return details
