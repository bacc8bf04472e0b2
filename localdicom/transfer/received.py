"""An instance as a remote gave it, held or staged, before :mod:`.intake` checks and stores
it: apart, so that the clients that produce it (:mod:`.dicomweb`, :mod:`.dimse`) do not
import the parsing that checks it, which ``push`` never needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Received:
    """An instance as it arrived: its bytes (``data``), or a file in the staging folder
    (``staged``) with its size and SHA-256."""

    data: bytes | None = None
    staged: Path | None = None
    size: int = 0
    digest: str = ""

    def discard(self) -> None:
        if self.staged is not None:
            self.staged.unlink(missing_ok=True)
