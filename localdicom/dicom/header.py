"""What the server keeps of an instance besides its bytes (its :class:`Header`, written
as its sidecar), and the refusal of bytes that are not an instance.

Nothing here imports pydicom: the commands that only read what the archive keeps (``push``,
``ls``, the sidecars of an index) start without it, 0.2-0.3 s sooner. The parsing that makes a
Header is :mod:`localdicom.dicom.describing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: A byte range in the .dcm file: (offset, length).
ByteRange = tuple[int, int]


class NotDicom(ValueError):
    """The bytes are not a DICOM instance this server can store.

    ``sop_class_uid`` and ``sop_uid`` are those the file gives, when it gives them, so that
    a refusal can say which instance it refused (PS3.18 Table I.1-1)."""

    def __init__(self, message: str, sop_class_uid: str = "", sop_uid: str = "") -> None:
        super().__init__(message)
        self.sop_class_uid = sop_class_uid
        self.sop_uid = sop_uid


@dataclass
class Header:
    """What the server keeps of an instance besides its bytes."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    #: DICOM JSON of the dataset; BulkDataURI values are paths relative to the service root.
    metadata: dict[str, Any]
    #: Bulk data path (as in the BulkDataURI after ``bulk/``) -> byte range in the file, or
    #: None when the file is deflated and the value must be parsed out.
    bulk: dict[str, ByteRange | None]
    #: One entry per frame: the byte ranges whose concatenation is that frame.
    frames: list[list[ByteRange]] | None

    def frame_count(self) -> int:
        if self.frames is not None:
            return len(self.frames)
        if "7FE00010" not in self.metadata:
            return 0
        return int(self.metadata.get("00280008", {}).get("Value", [1])[0])


def instance_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The instance's path below the service root, as used in RetrieveURL and BulkDataURI."""
    return f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
