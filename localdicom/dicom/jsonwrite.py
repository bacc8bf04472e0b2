"""Flat DICOM JSON (PS3.18 F.2) written straight as a Little Endian data set (PS3.5 7.1).

A C-FIND answers each match with a few text attributes; pydicom builds a Dataset from their
JSON and then writes it, at about 0.25 ms a match, more than everything else the answer costs.
This writes the same bytes directly for what such answers hold: text, person names and
numbers, in UTF-8 (Specific Character Set ISO_IR 192). Anything else (a sequence, binary or
bulk data, a decimal string too long to copy as it is) returns None, and the caller leaves
it to pydicom.
"""

from __future__ import annotations

import struct
from typing import Any

TEXT_VRS = frozenset(
    [
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    ]
)
NUMBER_FORMATS = {"US": "<H", "SS": "<h", "UL": "<L", "SL": "<l", "FL": "<f", "FD": "<d"}
#: PS3.5 Table 7.1-1: the VRs whose explicit length is 32-bit, after two reserved bytes.
LONG_LENGTH_VRS = frozenset(
    ["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]
)
#: Element headers (PS3.5 7.1.1-7.1.3): implicit VR; explicit VR with a 32-bit length after
#: two reserved bytes; explicit VR with a 16-bit length.
IMPLICIT_HEADER = struct.Struct("<HHL")
LONG_HEADER = struct.Struct("<HH2s2xL")
SHORT_HEADER = struct.Struct("<HH2sH")
#: PS3.5 Table 6.2-1: a DS value holds at most 16 characters.
DS_LENGTH = 16


def write(elements: dict[str, dict[str, Any]], implicit: bool) -> bytes | None:
    """``elements`` (tag -> DICOM JSON) as a data set, or None when one needs pydicom."""
    encoded = []
    for number, tag in sorted((int(tag, 16), tag) for tag in elements):
        element = elements[tag]
        value = _value(element)
        if value is None or not number & 0xFFFF:  # group lengths: pydicom's to drop
            return None
        encoded += (_header(number, element["vr"], len(value), implicit), value)
    return b"".join(encoded)


def _value(element: dict[str, Any]) -> bytes | None:
    vr = element.get("vr")
    if "InlineBinary" in element or "BulkDataURI" in element:
        return None
    values = element.get("Value", [])
    if vr in NUMBER_FORMATS:
        return b"".join(struct.pack(NUMBER_FORMATS[vr], number) for number in values)
    if vr not in TEXT_VRS:
        return None
    if len(values) == 1 and type(values[0]) is str and vr != "PN":  # most values: one text
        texts = values
    else:
        texts = [_text(vr, value) for value in values]
    if any(text is None for text in texts):
        return None
    data = "\\".join(texts).encode("ascii" if vr == "UI" else "utf-8")  # type: ignore[arg-type]
    return data + (b"\0" if vr == "UI" else b" ") * (len(data) % 2)


def _text(vr: str, value: Any) -> str | None:
    if value is None:
        return ""
    if vr == "PN":
        groups = [value.get(group, "") for group in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=")
    if vr in ("DS", "IS") and not isinstance(value, str):
        text = str(value)
        return text if len(text) <= DS_LENGTH and "e" not in text else None
    return str(value)


def _header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return IMPLICIT_HEADER.pack(group, element, length)
    if vr in LONG_LENGTH_VRS:
        return LONG_HEADER.pack(group, element, vr.encode(), length)
    return SHORT_HEADER.pack(group, element, vr.encode(), length)
