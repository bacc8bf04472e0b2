"""An instance's header as rows of a table a person reads: DICOM JSON (PS3.18 F.2) flattened
with its sequences expanded, each row with the attribute's tag, keyword (PS3.6 data
dictionary, through pydicom), VR and value as text; pure, no HTTP, no disk."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import keyword_for_tag

Json = dict[str, Any]
#: Values longer than this are cut (a LUT given inline, a long text), with the length said.
MAX_TEXT = 240


def tag_rows(metadata: Json, depth: int = 0) -> list[dict[str, Any]]:
    """One row per attribute in tag order; a sequence's row is followed by a row per item
    (``keyword`` "Item n") and that item's attributes, one level deeper."""
    rows: list[dict[str, Any]] = []
    for tag in sorted(metadata):
        element = metadata[tag] or {}
        vr = element.get("vr", "UN")
        rows.append(
            {
                "depth": depth,
                "tag": f"({tag[:4]},{tag[4:]})",
                "keyword": _keyword(tag),
                "vr": vr,
                "value": value_text(element),
            }
        )
        if vr == "SQ":
            for number, item in enumerate(element.get("Value") or [], start=1):
                item_row = {"depth": depth + 1, "tag": "", "vr": "", "value": ""}
                rows.append({**item_row, "keyword": f"Item {number}"})
                rows += tag_rows(item or {}, depth + 2)
    return rows


def _keyword(tag: str) -> str:
    try:
        number = int(tag, 16)
    except ValueError:
        return ""
    if (number >> 16) % 2 and (number & 0xFFFF) < 0x100 and (number & 0xFFFF) >= 0x10:
        return "PrivateCreator"
    return keyword_for_tag(number) or ""


def value_text(element: Json) -> str:
    """What a person reads for one element's value."""
    if "BulkDataURI" in element:
        return "(bulk data)"
    if "InlineBinary" in element:
        return f"(binary, {len(element['InlineBinary']) * 3 // 4} bytes)"
    values = element.get("Value") or []
    if element.get("vr") == "SQ":
        return f"{len(values)} item{'s' if len(values) != 1 else ''}"
    text = "\\".join(_one(value) for value in values)
    if len(text) > MAX_TEXT:
        return f"{text[:MAX_TEXT]}… ({len(text)} characters)"
    return text


def _one(value: Any) -> str:
    if isinstance(value, dict):  # a person name (PS3.18 F.2.2)
        groups = (value.get(k) for k in ("Alphabetic", "Ideographic", "Phonetic"))
        return "=".join(group or "" for group in groups).rstrip("=")
    if value is None:
        return ""
    return str(value)
