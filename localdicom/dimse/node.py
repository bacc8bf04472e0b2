"""What every DIMSE request needs: the archive, the worker processes and who we are. The
DICOM listener runs on the HTTP server's event loop, so a request calls the Catalog directly."""

from __future__ import annotations

from dataclasses import dataclass

from localdicom.catalog import Catalog
from localdicom.settings import DicomPeer
from localdicom.workers import Workers


@dataclass(frozen=True)
class Node:
    """The archive, the worker processes, and this node's AE title and known peers."""

    catalog: Catalog
    workers: Workers
    ae_title: str
    peers: dict[str, DicomPeer]
