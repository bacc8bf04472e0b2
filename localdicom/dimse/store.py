"""C-STORE SCP: an instance received over DICOM is stored exactly as STOW-RS stores it.

pynetdicom writes the received dataset, with File Meta Information, to a temporary file as
it arrives (never decoded whole in memory); that file is brought into the archive's upload
area and goes through the Catalog's check and commit: the same layout, sidecar, digest,
duplicate rule, flush and group commit as every other way in.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from localdicom.catalog import FailureReason, StoreFailed
from localdicom.dimse.node import Node, caller

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
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


def handle_store(event: Event, node: Node) -> Dataset:
    """Store one received instance; answer its status (and why, on failure)."""
    try:
        staged = node.catalog.stage_copy(event.dataset_path)
        stored = node.bridge.run(node.catalog.store_staged(staged))
    except StoreFailed as failure:
        logger.warning("C-STORE from %s refused: %s", caller(event), failure)
        return failure_status(failure)
    logger.info(
        "C-STORE from %s: %s %s",
        caller(event),
        stored.header.sop_uid,
        "already present" if stored.already_present else "stored",
    )
    return status(SUCCESS)


def discard_partial(event: Event) -> None:
    """Remove what an association that ended in the middle of a C-STORE (aborted, or its
    connection lost) left of the dataset: pynetdicom spools it to a temporary file it only
    removes once the message is whole and handled, so each cut transfer would leave its
    received megabytes behind. Runs on the connection's close, in the thread that wrote it."""
    partial = getattr(event.assoc.dimse.message, "_data_set_file", None)
    if partial is None:  # no message, or a whole one (already handed over, then removed)
        return
    partial.close()
    Path(partial.name).unlink(missing_ok=True)
    logger.info("C-STORE from %s cut short: the partial dataset was discarded", caller(event))


def failure_status(failure: StoreFailed) -> Dataset:
    """The C-STORE response status of a refused instance, with its reason in words."""
    answer = status(STATUS_OF[failure.reason])
    answer.ErrorComment = str(failure)[:ERROR_COMMENT_LENGTH]
    return answer


def status(value: int) -> Dataset:
    answer = Dataset()
    answer.Status = value
    return answer
