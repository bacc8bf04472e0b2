"""Describe a stored instance once, so that serving it never parses it again.

:func:`describe` reads a Part 10 file's header and returns everything the server needs to
answer metadata, QIDO and frame requests: the DICOM JSON (PS3.18 F.2) of every attribute with
large binary values replaced by BulkDataURIs, the byte ranges of those values in the file, and
the byte ranges of every frame of the pixel data. The archive stores the result as the
instance's sidecar.

Large values are not read: pydicom's ``defer_size`` skips them and leaves their file offset
(``value_tell``), which is all a positioned read needs later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from io import BytesIO
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import (
    generate_fragmented_frames,
    parse_basic_offsets,
    parse_fragments,
)
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from localdicom.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
    check_uid,
)

logger = logging.getLogger(__name__)

#: Binary values larger than this many bytes are referenced, not inlined (pydicom's default).
BULK_DATA_THRESHOLD = 1024
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)

#: A byte range in the .dcm file: (offset, length).
ByteRange = tuple[int, int]


class NotDicom(ValueError):
    """The bytes are not a DICOM instance this server can store."""


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
    #: Bulk data path (as in the BulkDataURI after ``bulk/``) -> byte range in the file.
    bulk: dict[str, ByteRange]
    #: One entry per frame: the byte ranges whose concatenation is that frame.
    frames: list[list[ByteRange]] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study_uid,
            "series": self.series_uid,
            "sop": self.sop_uid,
            "sop_class": self.sop_class_uid,
            "transfer_syntax": self.transfer_syntax,
            "metadata": self.metadata,
            "bulk": self.bulk,
            "frames": self.frames,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Header:
        return cls(
            study_uid=data["study"],
            series_uid=data["series"],
            sop_uid=data["sop"],
            sop_class_uid=data["sop_class"],
            transfer_syntax=data["transfer_syntax"],
            metadata=data["metadata"],
            bulk={key: tuple(span) for key, span in data["bulk"].items()},
            frames=(
                None
                if data["frames"] is None
                else [[tuple(span) for span in frame] for frame in data["frames"]]
            ),
        )


def instance_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The instance's path below the service root, as used in RetrieveURL and BulkDataURI."""
    return f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def describe(fp: BinaryIO) -> Header:
    """Parse the header of the Part 10 file open in ``fp``.

    Raises :class:`NotDicom` with a reason a person can act on when the file is not a DICOM
    instance with the four identifying UIDs.
    """
    try:
        ds = _read(fp)
        study_uid, series_uid, sop_uid, sop_class_uid = _identity(ds)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, NotDicom):
            raise
        raise NotDicom(f"not a readable DICOM Part 10 file ({exc})") from exc
    transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
    positioned = transfer_syntax != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    base = instance_path(study_uid, series_uid, sop_uid) + "/bulk/"
    bulk: dict[str, ByteRange] = {}
    metadata = _dataset_json(ds, base, "", bulk, positioned)
    try:
        frames = _frames(ds, fp, transfer_syntax) if positioned else None
    except ValueError as exc:
        raise NotDicom(f"the pixel data cannot be parsed ({exc})") from exc
    return Header(
        study_uid, series_uid, sop_uid, sop_class_uid, transfer_syntax, metadata, bulk, frames
    )


def _read(fp: BinaryIO) -> Dataset:
    """Read with large values deferred, except where offsets in the file mean nothing."""
    fp.seek(0)
    ds = pydicom.dcmread(fp, defer_size=BULK_DATA_THRESHOLD)
    if "TransferSyntaxUID" not in ds.file_meta:
        raise NotDicom("the file has no File Meta Information with a Transfer Syntax UID")
    if ds.file_meta.TransferSyntaxUID == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        fp.seek(0)
        ds = pydicom.dcmread(fp)
    return ds


def _identity(ds: Dataset) -> tuple[str, str, str, str]:
    names = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
    missing = [name for name in names if not str(ds.get(name, "") or "").strip()]
    if missing:
        raise NotDicom(f"the dataset lacks {', '.join(missing)}")
    values = tuple(str(ds[name].value).strip().rstrip("\0") for name in names)
    for name, value in zip(names, values, strict=True):
        try:
            check_uid(value, name)
        except ValueError as exc:
            raise NotDicom(str(exc)) from exc
    return values  # type: ignore[return-value]


def _dataset_json(
    ds: Dataset, base: str, path: str, bulk: dict[str, ByteRange], positioned: bool
) -> dict[str, Any]:
    """DICOM JSON of ``ds``, recording the file offsets of values given as BulkDataURIs."""
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if tag.group == 0x0000 or tag.element == 0x0000:
            continue  # command and group length elements are not part of DICOM JSON
        key = f"{tag:08X}"
        vr = _vr(ds, raw)
        if _is_bulk(raw, vr):
            bulk_path = path + key
            if positioned:
                bulk[bulk_path] = (raw.value_tell, raw.length)
            out[key] = {"vr": vr, "BulkDataURI": base + bulk_path}
            continue
        elem = _convert(ds, tag, raw, vr)
        if elem.VR == "SQ":
            items = [
                _dataset_json(item, base, f"{path}{key}/{index}/", bulk, positioned)
                for index, item in enumerate(elem.value)
            ]
            out[key] = {"vr": "SQ", "Value": items}
        else:
            out[key] = elem.to_json_dict(None, BULK_DATA_THRESHOLD)
    return out


def _convert(ds: Dataset, tag: int, raw: Any, vr: str) -> DataElement:
    """The element with its value decoded; a value pydicom cannot decode is kept as text.

    Real files carry values that break their VR's rules (an IS of '1A'); dropping them from the
    metadata would hide them, failing the whole instance would be worse.
    """
    try:
        elem = ds[tag]
        elem.to_json_dict(None, BULK_DATA_THRESHOLD)
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("keeping %s (%s) as text: %s", Tag(tag), vr, exc)
        text = bytes(raw.value or b"").decode("latin-1").strip(" \0")
        return DataElement(tag, "UN" if vr in BULK_VRS else "LO", text.split("\\"))
    return elem


def _vr(ds: Dataset, raw: Any) -> str:
    vr = raw.VR
    if vr is None:
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            vr = "UN"
    if vr == "OB or OW":
        bits = ds.get("BitsAllocated", 16)
        vr = "OW" if raw.tag in PIXEL_DATA_TAGS and bits > 8 else "OB"
    return vr.split(" or ")[0]


def _is_bulk(raw: Any, vr: str) -> bool:
    if not isinstance(raw, RawDataElement):
        return False
    if raw.tag in PIXEL_DATA_TAGS:
        return True
    if raw.value is None:  # deferred: longer than the threshold
        return vr in BULK_VRS
    return vr in BULK_VRS and raw.length > BULK_DATA_THRESHOLD


def _frames(ds: Dataset, fp: BinaryIO, transfer_syntax: str) -> list[list[ByteRange]] | None:
    """Byte ranges of each frame of the top-level pixel data, or None if there is none."""
    present = [tag for tag in PIXEL_DATA_TAGS if tag in ds]
    raw = ds.get_item(present[0], keep_deferred=True) if present else None
    if raw is None or not isinstance(raw, RawDataElement):
        return None
    count = _int(ds, "NumberOfFrames", 1)
    if transfer_syntax in NATIVE_TRANSFER_SYNTAXES:
        return _native_frames(ds, raw, count)
    fp.seek(raw.value_tell)
    value = raw.value if raw.value is not None else fp.read(raw.length)
    return _encapsulated_frames(ds, value, raw.value_tell, count)


def _int(ds: Dataset, keyword: str, default: int) -> int:
    try:
        return int(ds.get(keyword) or default)
    except (TypeError, ValueError):
        return default


def _native_frames(ds: Dataset, raw: RawDataElement, count: int) -> list[list[ByteRange]] | None:
    bits = _int(ds, "BitsAllocated", 0)
    if raw.tag == 0x7FE00008:
        bits = 32
    elif raw.tag == 0x7FE00009:
        bits = 64
    frame_bits = _int(ds, "Rows", 0) * _int(ds, "Columns", 0)
    frame_bits *= _int(ds, "SamplesPerPixel", 1) * bits
    if frame_bits == 0 or (frame_bits % 8 and count > 1):
        return None  # bit-packed frames do not start on byte boundaries: no ranges
    size = (frame_bits + 7) // 8
    if size * count > raw.length:
        raise ValueError(
            f"Pixel Data holds {raw.length} bytes, {count} frame(s) need {size * count}"
        )
    return [[(raw.value_tell + index * size, size)] for index in range(count)]


def _encapsulated_frames(
    ds: Dataset, value: bytes, value_offset: int, count: int
) -> list[list[ByteRange]]:
    """Group the fragments into frames (PS3.5 A.4), by offset table when there is one."""
    stream = BytesIO(value)
    offsets = parse_basic_offsets(stream)
    if not offsets and "ExtendedOffsetTable" in ds:
        offsets = list(memoryview(ds.ExtendedOffsetTable).cast("Q"))
    first = stream.tell()
    _, starts = parse_fragments(stream)
    fragments = [
        (value_offset + start + 8, int.from_bytes(value[start + 4 : start + 8], "little"))
        for start in starts
    ]
    if offsets:
        position = {start - first: index for index, start in enumerate(starts)}
        bounds = [position[offset] for offset in offsets] + [len(fragments)]
        return [fragments[bounds[i] : bounds[i + 1]] for i in range(len(offsets))]
    if count == 1:
        return [fragments]
    if len(fragments) == count:
        return [[fragment] for fragment in fragments]
    stream.seek(0)
    sizes = [len(f) for f in generate_fragmented_frames(stream, number_of_frames=count)]
    grouped, index = [], 0
    for size in sizes:
        grouped.append(fragments[index : index + size])
        index += size
    return grouped
