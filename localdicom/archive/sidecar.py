"""The sidecar: what is kept beside each .dcm so that serving it never parses it again.

A sidecar is one JSON document: its format number, the size, modification time and SHA-256
of the .dcm it describes, and the instance's :class:`Header` (DICOM JSON of every attribute,
byte ranges of bulk values and frames). It is derived data: one that is missing, damaged, of
another format, or older than its .dcm is written again from the .dcm.

BulkDataURIs in the stored DICOM JSON are relative (``studies/.../bulk/...``): the metadata
cache prefixes the service root of each request to the document as stored, so a sidecar
must never hold an absolute URI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from localdicom.archive.files import file_digest, write_atomically
from localdicom.archive.layout import Layout, sidecar_of
from localdicom.dicom.header import Header, NotDicom

#: Bump when the sidecar content changes: older sidecars are then regenerated at startup.
FORMAT = 1


@dataclass(frozen=True)
class StoredInstance:
    """An instance on disk, as its sidecar describes it."""

    header: Header
    size: int
    digest: str


def document(header: Header, digest: str, size: int, mtime_ns: int) -> bytes:
    """The sidecar of a .dcm of that size and modification time (a rename keeps both)."""
    fields = {
        "format": FORMAT,
        "size": size,
        "mtime_ns": mtime_ns,
        "digest": digest,
        "study": header.study_uid,
        "series": header.series_uid,
        "sop": header.sop_uid,
        "sop_class": header.sop_class_uid,
        "transfer_syntax": header.transfer_syntax,
        "metadata": header.metadata,
        "bulk": header.bulk,
        "frames": header.frames,
    }
    return orjson.dumps(fields, default=_builtin)


def read(dcm: Path) -> StoredInstance:
    """The sidecar of ``dcm`` as it is; OSError or ValueError when unreadable."""
    return read_with_length(dcm)[0]


def read_with_length(dcm: Path) -> tuple[StoredInstance, int]:
    """The sidecar of ``dcm`` and its own size in bytes (what it adds to the archive);
    OSError, ValueError, KeyError or TypeError when unreadable."""
    raw = sidecar_of(dcm).read_bytes()
    return _stored_from(orjson.loads(raw)), len(raw)


def read_metadata(name: str) -> dict[str, Any]:
    """Only the DICOM JSON of the sidecar at ``name`` (:meth:`Layout.sidecar_name`; a search
    reads thousands: no Header is built); OSError, ValueError, KeyError or TypeError when
    unreadable."""
    with open(name, "rb") as fp:
        return orjson.loads(fp.read())["metadata"]


def read_current(dcm: Path) -> StoredInstance | None:
    """The sidecar of ``dcm`` if it is readable, of this format and not older than the .dcm;
    None when it must be regenerated."""
    try:
        fields = orjson.loads(sidecar_of(dcm).read_bytes())
        if _is_current(dcm, fields):
            return _stored_from(fields)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def write(dcm: Path, header: Header, digest: str, fsync: bool) -> StoredInstance:
    stat = dcm.stat()
    write_atomically(
        sidecar_of(dcm), document(header, digest, stat.st_size, stat.st_mtime_ns), fsync
    )
    return StoredInstance(header, stat.st_size, digest)


def regenerate(layout: Layout, dcm: Path, fsync: bool) -> StoredInstance:
    """Describe a .dcm again and write its sidecar; it must sit where its UIDs say."""
    # Imported here, where a .dcm is parsed: a command that only reads sidecars (push, ls)
    # starts without pydicom, which takes 0.2-0.3 s to import.
    from localdicom.dicom.describing import describe

    with dcm.open("rb") as fp:
        header = describe(fp)
        digest = file_digest(fp)
    expected = layout.instance_file(header.study_uid, header.series_uid, header.sop_uid)
    if expected != dcm:
        raise NotDicom(
            f"its UIDs place it at {expected.relative_to(layout.root)}, not here; "
            "move it or store it through STOW-RS"
        )
    return write(dcm, header, digest, fsync)


def _is_current(dcm: Path, fields: dict[str, Any]) -> bool:
    stat = dcm.stat()
    return (
        fields.get("format") == FORMAT
        and fields["size"] == stat.st_size
        and fields["mtime_ns"] == stat.st_mtime_ns
        and [fields["study"], fields["series"], fields["sop"] + dcm.suffix]
        == [dcm.parent.parent.name, dcm.parent.name, dcm.name]
    )


def _stored_from(fields: dict[str, Any]) -> StoredInstance:
    header = Header(
        study_uid=fields["study"],
        series_uid=fields["series"],
        sop_uid=fields["sop"],
        sop_class_uid=fields["sop_class"],
        transfer_syntax=fields["transfer_syntax"],
        metadata=fields["metadata"],
        bulk={key: span and tuple(span) for key, span in fields["bulk"].items()},
        frames=(
            None
            if fields["frames"] is None
            else [[tuple(span) for span in frame] for frame in fields["frames"]]
        ),
    )
    return StoredInstance(header, fields["size"], fields["digest"])


def _builtin(value: Any) -> Any:
    """pydicom's float subclass (DSfloat) as the float it is; orjson takes only builtins."""
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
