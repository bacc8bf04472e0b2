"""The record of what ``localdicom pull`` and ``push`` moved between this archive and one
remote: per direction, SOP Instance UID -> SHA-256 of the instance as moved (the digest its
sidecar holds). A re-run moves only what the record lacks or what changed since.

One JSON document per remote, ``ARCHIVE/.transfers/<key>.json``, replaced whole (atomic
rename) at each save: a crash leaves the previous record, and the next run then moves an
instance or two again, which the other side answers as already there. The record holds the
remote's address without credentials; it never holds a secret.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from localdicom.archive.files import write_atomically
from localdicom.archive.layout import Layout

DIRECTIONS = ("pulled", "pushed")


@dataclass
class TransferRecord:
    """What was moved to and from one remote (``address``: no user, password or query)."""

    path: Path
    address: str
    moved: dict[str, dict[str, str]] = field(default_factory=dict)
    #: ``push --follow``: per selection (a key naming it), the change feed's sequence up to
    #: which every change has been pushed.
    offsets: dict[str, int] = field(default_factory=dict)

    def digests(self, direction: str) -> dict[str, str]:
        """SOP Instance UID -> digest moved in ``direction`` ("pulled" or "pushed")."""
        if direction not in DIRECTIONS:
            raise ValueError(f"{direction!r} is not one of {DIRECTIONS}")
        return self.moved.setdefault(direction, {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"remote": self.address, **self.moved, "offsets": self.offsets}
        write_atomically(self.path, orjson.dumps(document), fsync=False)


def record_key(address: str) -> str:
    """A file name for a remote: readable (its host) and unique (a digest of the address)."""
    host = re.sub(r"[^A-Za-z0-9.-]+", "_", address.split("://", 1)[-1].split("/", 1)[0])
    digest = hashlib.sha256(address.encode()).hexdigest()[:16]
    return f"{host[:64]}-{digest}"


def open_record(root: Path, address: str) -> TransferRecord:
    """The record for ``address`` in the archive at ``root``; empty when there is none yet or
    it cannot be read (then the remote's duplicate answers say what is there already)."""
    path = Layout(root).transfers / f"{record_key(address)}.json"
    try:
        document = orjson.loads(path.read_bytes())
        moved = {
            direction: {str(sop): str(digest) for sop, digest in document[direction].items()}
            for direction in DIRECTIONS
            if isinstance(document.get(direction), dict)
        }
        offsets = {str(key): int(value) for key, value in document.get("offsets", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        moved, offsets = {}, {}
    return TransferRecord(path, address, moved, offsets)
