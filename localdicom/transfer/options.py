"""How one pull or push runs, whatever the remote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: STOW-RS batches: well under the request limits of the cloud services (about 1 to 2 GB;
#: PS3.18 sets none).
BATCH_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class TransferOptions:
    #: Requests (DICOMweb) at once.
    jobs: int = 4
    overwrite: bool = False
    dry_run: bool = False
    batch_bytes: int = BATCH_BYTES
    #: C-MOVE instead of C-GET, to this AE (a localdicom serving the archive over DICOM).
    move_ae: str | None = None
    #: This side's AE title towards a DICOM node.
    ae_title: str = "LOCALDICOM"
    fsync: bool = False
    #: Verification of the remote's TLS certificate: an ssl.SSLContext, or False.
    tls: Any = True
    #: First wait before a retry (seconds), doubled at each attempt.
    backoff: float = 0.5
    #: Processes that de-identify (push --deidentify); None: one per CPU.
    workers: int | None = None
