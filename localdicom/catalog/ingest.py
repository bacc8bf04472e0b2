"""What becomes of an instance that arrives, whatever way it came in (STOW-RS, import,
and every channel after them): the outcomes, the failure reasons, and the one rule for an
instance whose SOP Instance UID is already stored."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from localdicom.dicom.header import Header


class FailureReason(IntEnum):
    """STOW-RS Failure Reason codes (PS3.18 10.5.3, from the Storage statuses of PS3.4 B.2.3)."""

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000


class Decision(Enum):
    """What to do with an instance, given what is stored under its SOP Instance UID."""

    STORE = "store"
    ALREADY_PRESENT = "already present"
    CONFLICT = "conflict"
    REPLACE = "replace"

    @property
    def writes(self) -> bool:
        return self in (Decision.STORE, Decision.REPLACE)


def decide(stored_digest: str | None, digest: str, *, overwrite: bool) -> Decision:
    """The duplicate policy. Nothing stored: store it. The very same bytes (same SHA-256):
    already present, an idempotent re-send. A different instance under a stored SOP Instance
    UID: a conflict that keeps the stored one (PS3.4 B.2.3 leaves this to the SCP), unless
    the archive was told to ``overwrite``."""
    if stored_digest is None:
        return Decision.STORE
    if stored_digest == digest:
        return Decision.ALREADY_PRESENT
    return Decision.REPLACE if overwrite else Decision.CONFLICT


def conflict_message(sop: str, remedy: str) -> str:
    return f"SOP Instance {sop} is already stored with different content; {remedy}"


class StoreFailed(Exception):
    """One instance was not stored; nothing of it is left behind.

    ``sop_class_uid`` and ``sop_uid`` name the instance whenever it is known which: from
    its ``header``, or from what a file that could not be parsed whole gives."""

    def __init__(
        self,
        reason: FailureReason,
        message: str,
        header: Header | None = None,
        *,
        sop_class_uid: str = "",
        sop_uid: str = "",
    ):
        super().__init__(message)
        self.reason = reason
        self.header = header
        self.sop_class_uid = header.sop_class_uid if header else sop_class_uid
        self.sop_uid = header.sop_uid if header else sop_uid


def out_of_resources(exc: OSError, header: Header | None = None) -> StoreFailed:
    """The failure of an instance the archive could not write (a full disk)."""
    message = f"the archive cannot be written: {exc}"
    return StoreFailed(FailureReason.OUT_OF_RESOURCES, message, header)


@dataclass(frozen=True)
class Stored:
    header: Header
    #: True when the very same instance was already stored (idempotent re-send).
    already_present: bool
