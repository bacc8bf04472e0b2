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
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import (
    generate_fragmented_frames,
    parse_basic_offsets,
)
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.tag import Tag

from localdicom.dicom.header import ByteRange, Header, NotDicom, instance_path
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
UNDEFINED_LENGTH = 0xFFFFFFFF
MAX_UID_LENGTH = 64
#: What pydicom raises on a file it cannot read.
_UNREADABLE = (EOFError, OSError, ValueError, KeyError, TypeError, BytesLengthException)


def describe(fp: BinaryIO) -> Header:
    """Parse the header of the Part 10 file open in ``fp``.

    Raises :class:`NotDicom` with a reason a person can act on when the file is not a DICOM
    instance with the four identifying UIDs, naming the instance where the file does.
    """
    ds = _parsed(fp)
    try:
        return _described(ds, fp)
    except NotDicom as exc:
        exc.sop_class_uid, exc.sop_uid = _claimed_identity(ds)
        raise


def _parsed(fp: BinaryIO) -> Dataset:
    try:
        return _read(fp)
    except InvalidDicomError as exc:
        raise NotDicom(
            "not a DICOM Part 10 file: no 'DICM' after a 128-byte preamble, "
            "or no File Meta Information"
        ) from exc
    except _UNREADABLE as exc:
        raise NotDicom(f"not a readable DICOM Part 10 file ({exc})") from exc


def _described(ds: Dataset, fp: BinaryIO) -> Header:
    if "TransferSyntaxUID" not in ds.file_meta:
        raise NotDicom("the file has no File Meta Information with a Transfer Syntax UID")
    try:
        charset = ("charset", _raw_text(ds, 0x00080005))  # before anything converts it
        study_uid, series_uid, sop_uid, sop_class_uid = _identity(ds)
    except NotDicom:
        raise
    except _UNREADABLE as exc:
        raise NotDicom(f"not a readable DICOM Part 10 file ({exc})") from exc
    transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
    positioned = transfer_syntax != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    if positioned:
        _check_complete(ds, fp)
    base = instance_path(study_uid, series_uid, sop_uid) + "/bulk/"
    bulk: dict[str, ByteRange | None] = {}
    metadata = _dataset_json(ds, base, "", bulk, fp if positioned else None, charset=charset)
    try:
        frames = _frames(ds, metadata, fp, transfer_syntax) if positioned else None
    except ValueError as exc:
        raise NotDicom(f"the pixel data cannot be parsed ({exc})") from exc
    return Header(
        study_uid, series_uid, sop_uid, sop_class_uid, transfer_syntax, metadata, bulk, frames
    )


def describe_opened(fp: BinaryIO, path: Path) -> Header:
    """:func:`describe` the file at ``path``, open in ``fp``; every reason it cannot be read
    is a :class:`NotDicom` (this runs in worker processes, and only that crosses back
    intact)."""
    try:
        return describe(fp)
    except NotDicom:
        raise
    except Exception as exc:  # pydicom's own errors on hostile bytes
        logger.warning("%s could not be parsed", path, exc_info=True)
        raise NotDicom(f"not a readable DICOM Part 10 file ({str(exc)[:200]})") from None


def _read(fp: BinaryIO) -> Dataset:
    """Read with large values deferred, except where offsets in the file mean nothing."""
    fp.seek(0)
    ds = pydicom.dcmread(fp, defer_size=BULK_DATA_THRESHOLD)
    if ds.file_meta.get("TransferSyntaxUID") == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        fp.seek(0)
        ds = pydicom.dcmread(fp)
    return ds


def _check_complete(ds: Dataset, fp: BinaryIO) -> None:
    """Refuse a file cut short: pydicom skips deferred values without checking they exist."""
    size = fp.seek(0, 2)
    for _, raw in _in_order(ds):
        defined = isinstance(raw, RawDataElement) and raw.length != UNDEFINED_LENGTH
        if defined and raw.value_tell + raw.length > size:
            raise NotDicom(
                f"the file is truncated: {raw.tag} needs {raw.length} bytes at offset "
                f"{raw.value_tell}, the file has {size}"
            )


def _in_order(ds: Dataset) -> list[tuple[int, Any]]:
    """The elements of ``ds`` (as stored: a value not read yet stays unread) by tag, as
    plain ints: a BaseTag compares in Python, and sorting and looking up each tag through
    pydicom took as long as converting the values (in :func:`_dataset_json`)."""
    return sorted((int(tag), raw) for tag, raw in ds.items())


IDENTITY = {
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "SOPInstanceUID": 0x00080018,
    "SOPClassUID": 0x00080016,
}


def _claimed_identity(ds: Dataset) -> tuple[str, str]:
    """The SOP Class and Instance UIDs a refused file gives (in its dataset, or else in its
    File Meta Information), each "" when absent or longer than a UID can be (PS3.5 9.1)."""
    found = []
    for tag, meta_tag in ((0x00080016, 0x00020002), (0x00080018, 0x00020003)):
        try:
            value = _raw_text(ds, tag) or _raw_text(ds.file_meta, meta_tag)
        except _UNREADABLE:
            value = ""
        found.append(value if len(value) <= MAX_UID_LENGTH else "")
    return found[0], found[1]


def _identity(ds: Dataset) -> tuple[str, str, str, str]:
    """The four UIDs, read from the raw bytes: a UID is ASCII, and needs no conversion."""
    values = {name: _raw_text(ds, tag) for name, tag in IDENTITY.items()}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise NotDicom(f"the dataset lacks {', '.join(missing)}")
    for name, value in values.items():
        try:
            check_uid(value, name)
        except ValueError as exc:
            raise NotDicom(str(exc)) from exc
    return tuple(values.values())  # type: ignore[return-value]


def _raw_text(ds: Dataset, tag: int) -> str:
    element = ds.get_item(tag, keep_deferred=True)
    value = None if element is None else element.value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value or "").strip("\0 ").strip()


def _dataset_json(
    ds: Dataset,
    base: str,
    path: str,
    bulk: dict[str, ByteRange | None],
    fp: BinaryIO | None,
    offset: int = 0,
    charset: tuple | None = None,
) -> dict[str, Any]:
    """DICOM JSON of ``ds``, recording the file offsets of values given as BulkDataURIs.

    ``bulk`` maps each BulkDataURI's path to the value's byte range in ``fp``, or to None when
    there is no ``fp`` because offsets in the file mean nothing (deflated files). pydicom
    parses a sequence of defined length from its value's bytes, so the positions of elements
    inside it count from that value's start: ``offset`` is where that is in the file.
    ``charset`` is the top-level character set, given only at the top level (items can
    have their own): where it is known, converted values are shared (see :class:`_Converted`).
    """
    out: dict[str, Any] = {}
    for tag, raw in _in_order(ds):
        if tag >> 16 == 0x0000 or tag & 0xFFFF == 0x0000:
            continue  # command and group length elements are not part of DICOM JSON
        key = f"{tag:08X}"
        vr = _vr(raw)
        if _is_bulk(raw, vr):
            bulk_path = path + key
            position = offset + raw.value_tell
            bulk[bulk_path] = None if fp is None else (position, _value_length(raw, fp, position))
            out[key] = {"vr": vr, "BulkDataURI": base + bulk_path}
        elif vr == "SQ" or getattr(raw, "VR", None) == "SQ":
            inner = offset + raw.value_tell if isinstance(raw, RawDataElement) else offset
            items = [
                _dataset_json(item, base, f"{path}{key}/{index}/", bulk, fp, inner)
                for index, item in enumerate(ds[tag].value)
            ]
            out[key] = {"vr": "SQ", "Value": items}
        else:
            out[key] = _element_json(ds, tag, raw, vr, charset)
    return out


def _value_length(raw: RawDataElement, fp: BinaryIO, position: int) -> int:
    """Bytes of the value; an undefined length (encapsulated data) ends at its delimiter."""
    if raw.length != UNDEFINED_LENGTH:
        return raw.length
    return _scan_items(fp, position).length


def _element_json(
    ds: Dataset, tag: int, raw: Any, vr: str, charset: tuple | None
) -> dict[str, Any]:
    """The element's DICOM JSON, converted once per distinct value (see :class:`_Converted`)."""
    key = _Converted.key(raw, vr, charset)
    if key is None:
        return _convert(ds, tag, raw, vr)
    converted = _converted.get(key)
    if converted is None:
        converted = _converted.put(key, _convert(ds, tag, raw, vr))
    return converted


class _Converted:
    """DICOM JSON of element values already converted, by what the conversion depends on.

    The instances of a series repeat most of their header (patient, study, series, geometry,
    pixel description), and pydicom's conversion of values is most of what parsing a header
    costs. The key is everything the conversion reads: the tag, the VR as written (explicit
    VR only: an implicit one may depend on other elements, and not UN), the value's bytes,
    their byte order and the character set; private elements are left out (their meaning
    depends on their private creator). The dicts handed out are shared: read-only.
    """

    MAX_ENTRIES = 20_000

    def __init__(self) -> None:
        self._entries: dict[tuple, dict[str, Any]] = {}

    @staticmethod
    def key(raw: Any, vr: str, charset: tuple | None) -> tuple | None:
        if charset is None or not isinstance(raw, RawDataElement) or raw.VR in (None, "UN"):
            return None
        if raw.tag >> 16 & 1:  # private: pydicom's conversion reads its private creator
            return None
        if raw.value is None:  # deferred: the bytes are still in the file
            return None
        return (raw.tag, vr, raw.value, raw.is_little_endian, charset)

    def get(self, key: tuple) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: tuple, converted: dict[str, Any]) -> dict[str, Any]:
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = converted
        return converted


_converted = _Converted()


def _convert(ds: Dataset, tag: int, raw: Any, vr: str) -> dict[str, Any]:
    """The element's DICOM JSON; a value pydicom cannot decode is kept as text.

    Real files carry values that break their VR's rules (an IS of '1A'); dropping them from the
    metadata would hide them, failing the whole instance would be worse.
    """
    try:
        element = ds[tag].to_json_dict(None, BULK_DATA_THRESHOLD)
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("keeping %s (%s) as text: %s", Tag(tag), vr, exc)
        text = bytes(raw.value or b"").decode("latin-1").strip(" \0")
        return {"vr": "UN" if vr in BULK_VRS else "LO", "Value": text.split("\\")}
    if "Value" in element:
        element["Value"] = [_builtin(value) for value in element["Value"]]
    return element


def _builtin(value: Any) -> Any:
    """pydicom's UID (a str), or another subclass of str, float or int, as the builtin: a
    header parsed in a worker process then crosses back without pydicom validating every
    UID again as it is unpickled."""
    kind = type(value)
    if kind in (str, float, int, bool):
        return value
    for builtin in (str, float, int):
        if isinstance(value, builtin):
            return builtin(value)
    return value


def _vr(raw: Any) -> str:
    """The element's VR, an ambiguous one resolved as pydicom resolves it (PS3.5 A.1, 8.2)."""
    vr = raw.VR
    if vr is None:
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            vr = "UN"
    options = vr.split(" or ")
    if "OW" not in options or len(options) == 1:
        return options[0]
    if raw.tag in PIXEL_DATA_TAGS and raw.length == UNDEFINED_LENGTH:
        return "OB"  # encapsulated
    return "OW"  # Implicit VR: native pixel data and the other OB-or-OW values are OW


def _is_bulk(raw: Any, vr: str) -> bool:
    if not isinstance(raw, RawDataElement) or raw.length == 0:
        return False  # an empty element has no value to refer to (PS3.18 F.2.5)
    return raw.tag in PIXEL_DATA_TAGS or (vr in BULK_VRS and raw.length > BULK_DATA_THRESHOLD)


def _frames(
    ds: Dataset, metadata: dict[str, Any], fp: BinaryIO, transfer_syntax: str
) -> list[list[ByteRange]] | None:
    """Byte ranges of each frame of the top-level pixel data, or None if there is none."""
    present = [tag for tag in PIXEL_DATA_TAGS if tag in ds]
    raw = ds.get_item(present[0], keep_deferred=True) if present else None
    if raw is None or not isinstance(raw, RawDataElement) or raw.length == 0:
        return None
    count = _int(metadata, "00280008", 1)  # NumberOfFrames
    if transfer_syntax in NATIVE_TRANSFER_SYNTAXES:
        return _native_frames(metadata, raw, count)
    return _encapsulated_frames(ds, fp, raw.value_tell, count)


def _first(metadata: dict[str, Any], tag: str) -> Any:
    return (metadata.get(tag, {}).get("Value") or [None])[0]


def _int(metadata: dict[str, Any], tag: str, default: int) -> int:
    try:
        return int(_first(metadata, tag) or default)
    except (TypeError, ValueError):
        return default


def _native_frames(
    metadata: dict[str, Any], raw: RawDataElement, count: int
) -> list[list[ByteRange]] | None:
    bits = _int(metadata, "00280100", 0)  # BitsAllocated
    if raw.tag == 0x7FE00008:
        bits = 32
    elif raw.tag == 0x7FE00009:
        bits = 64
    frame_bits = _int(metadata, "00280010", 0) * _int(metadata, "00280011", 0) * bits
    if _first(metadata, "00280004") == "YBR_FULL_422":  # PhotometricInterpretation
        frame_bits *= 2  # two luminance values share one pair of chroma values (PS3.3 C.7.6.3)
    else:
        frame_bits *= _int(metadata, "00280002", 1)  # SamplesPerPixel
    if frame_bits == 0 or (frame_bits % 8 and count > 1):
        return None  # bit-packed frames do not start on byte boundaries: no ranges
    size = (frame_bits + 7) // 8
    if size * count > raw.length:
        raise ValueError(
            f"Pixel Data holds {raw.length} bytes, {count} frame(s) need {size * count}"
        )
    return [[(raw.value_tell + index * size, size)] for index in range(count)]


@dataclass
class _Items:
    """An encapsulated value (PS3.5 A.4): Basic Offset Table, fragments, total length."""

    offsets: list[int]
    fragments: list[ByteRange]
    length: int


def _scan_items(fp: BinaryIO, value_offset: int) -> _Items:
    """Walk the items of an encapsulated value by their headers, without reading fragments."""
    fp.seek(value_offset)
    offsets = parse_basic_offsets(fp)
    fragments: list[ByteRange] = []
    while len(head := fp.read(8)) == 8:
        tag, length = struct.unpack("<LL", head)
        tag = (tag & 0xFFFF) << 16 | tag >> 16  # the group comes first on disk
        if tag == 0xFFFEE0DD:
            return _Items(offsets, fragments, fp.tell() - 8 - value_offset)
        if tag != 0xFFFEE000:
            raise ValueError(f"unexpected tag {Tag(tag)} among the pixel data fragments")
        fragments.append((fp.tell(), length))
        fp.seek(length, 1)
    raise ValueError("the encapsulated pixel data ends without a sequence delimiter")


def _encapsulated_frames(
    ds: Dataset, fp: BinaryIO, value_offset: int, count: int
) -> list[list[ByteRange]]:
    """Group the fragments into frames (PS3.5 A.4), by offset table when there is one."""
    items = _scan_items(fp, value_offset)
    fragments, offsets = items.fragments, items.offsets
    if not offsets and "ExtendedOffsetTable" in ds:
        offsets = list(memoryview(ds.ExtendedOffsetTable).cast("Q"))
    if offsets and fragments:
        first = fragments[0][0] - 8
        position = {start - 8 - first: index for index, (start, _) in enumerate(fragments)}
        bounds = [position[offset] for offset in offsets] + [len(fragments)]
        return [fragments[bounds[i] : bounds[i + 1]] for i in range(len(offsets))]
    if count == 1:
        return [fragments]
    if len(fragments) == count:
        return [[fragment] for fragment in fragments]
    fp.seek(value_offset)
    value = fp.read(items.length)
    sizes = [len(f) for f in generate_fragmented_frames(value, number_of_frames=count)]
    grouped, index = [], 0
    for size in sizes:
        grouped.append(fragments[index : index + size])
        index += size
    return grouped


def bulk_by_parsing(path: Path, bulk_path: str) -> bytes:
    """A bulk value read through pydicom: for deflated files, whose offsets mean nothing."""
    ds = pydicom.dcmread(path)
    steps = bulk_path.split("/")
    for tag, index in zip(steps[:-1:2], steps[1::2], strict=True):
        ds = ds[int(tag, 16)].value[int(index)]
    return ds[int(steps[-1], 16)].value
