"""DICOM JSON (PS3.18 F.2) to the Native DICOM Model (PS3.19 A.1): the XML of
``application/dicom+xml``.

pydicom reads and writes DICOM JSON but has no PS3.19 writer. The server holds every header
as DICOM JSON already (the sidecars), so the XML is written from that, element for element:
what a client reads in XML is exactly what it would read in JSON.

The mapping (PS3.19 A.1.5, Table A.1.5-2):

* each attribute is a ``DicomAttribute`` with ``tag`` (8 upper-case hex digits), ``vr`` and,
  for public attributes, ``keyword``; a private attribute is ``gggg00ee`` with the
  ``privateCreator`` of its block, as the standard asks (the creator elements themselves
  stay as they are); group lengths are left out;
* values are ``Value number=n`` (AT as ``ggggeeee``, numbers as JSON gives them), person names
  ``PersonName number=n`` with ``Alphabetic``/``Ideographic``/``Phonetic`` groups of
  ``FamilyName``, ``GivenName``, ``MiddleName``, ``NamePrefix``, ``NameSuffix``, sequence
  items ``Item number=n``, binary values ``InlineBinary`` (base64) or ``BulkData uri=``.

The document is written as text, not through an XML library: it is a few fixed element
kinds, and the escaping needs care a serializer does not take. A carriage return is written
as ``&#13;`` so that a parser gives it back (XML parsers turn a literal CR into LF); characters
XML 1.0 cannot carry at all (C0 controls other than tab, LF and CR; U+FFFE, U+FFFF) become
U+FFFD, the replacement character.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydicom.datadict import keyword_for_tag

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
PERSON_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
NAME_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")

_NOT_XML = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF]
_TEXT = {
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord("\r"): "&#13;",
    **{code: "\ufffd" for code in _NOT_XML},
    **{code: "\ufffd" for code in range(0xD800, 0xE000)},  # lone surrogates
}
#: In attribute values a tab or line feed would be normalized to a space (XML 1.0 3.3.3).
_ATTRIBUTE = {**_TEXT, ord('"'): "&quot;", ord("\t"): "&#9;", ord("\n"): "&#10;"}


def native_xml(dataset: Mapping[str, Any]) -> bytes:
    """One ``NativeDicomModel`` document, UTF-8, from one dataset in DICOM JSON."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<NativeDicomModel xmlns="{NAMESPACE}" xml:space="preserve">',
    ]
    _write_dataset(out, dataset)
    out.append("</NativeDicomModel>\n")
    return "".join(out).encode("utf-8")


def _write_dataset(out: list[str], dataset: Mapping[str, Any]) -> None:
    for key in sorted(dataset, key=lambda tag: int(tag, 16)):
        if key.endswith("0000"):
            continue  # group length: not part of the model (PS3.19 A.1.1)
        _write_attribute(out, dataset, key, dataset[key])


def _write_attribute(
    out: list[str], dataset: Mapping[str, Any], key: str, element: Mapping[str, Any]
) -> None:
    vr = element.get("vr", "UN")
    tag, more = _identity(dataset, key)
    out.append(f'<DicomAttribute tag="{tag}" vr="{_attribute(vr)}"{more}')
    if "BulkDataURI" in element:
        out.append(f'><BulkData uri="{_attribute(element["BulkDataURI"])}"/></DicomAttribute>')
        return
    if "InlineBinary" in element:
        out.append(f"><InlineBinary>{element['InlineBinary']}</InlineBinary></DicomAttribute>")
        return
    values = element.get("Value") or []
    if not values:
        out.append("/>")
        return
    out.append(">")
    for number, value in enumerate(values, 1):
        if vr == "SQ":
            out.append(f'<Item number="{number}">')
            _write_dataset(out, value or {})
            out.append("</Item>")
        elif vr == "PN":
            _write_person_name(out, number, value)
        else:
            out.append(f'<Value number="{number}">{_text(_value_text(value))}</Value>')
    out.append("</DicomAttribute>")


def _identity(dataset: Mapping[str, Any], key: str) -> tuple[str, str]:
    """The element's ``tag``, and its ``keyword`` or ``privateCreator`` XML attribute."""
    tag = int(key, 16)
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 0:
        keyword = _keyword(tag)
        return f"{tag:08X}", f' keyword="{keyword}"' if keyword else ""
    creator = _private_creator(dataset, group, element)
    if creator is None:  # a creator element, or a private element without its creator
        return f"{tag:08X}", ""
    return f"{group:04X}00{element & 0xFF:02X}", f' privateCreator="{_attribute(creator)}"'


@lru_cache(maxsize=4096)
def _keyword(tag: int) -> str:
    return keyword_for_tag(tag)


def _private_creator(dataset: Mapping[str, Any], group: int, element: int) -> str | None:
    """The Private Creator of the block holding a private data element (PS3.5 7.8.1)."""
    if element < 0x1000:
        return None
    creator = dataset.get(f"{group:04X}00{element >> 8:02X}", {}).get("Value") or [None]
    return creator[0] if isinstance(creator[0], str) else None


def _write_person_name(out: list[str], number: int, value: Any) -> None:
    """A PN value: its component groups, each split into its five components (PS3.5 6.2)."""
    if isinstance(value, str):  # not DICOM JSON's form, but its meaning is plain
        value = dict(zip(PERSON_NAME_GROUPS, value.split("="), strict=False))
    out.append(f'<PersonName number="{number}">')
    for group in PERSON_NAME_GROUPS:
        text = (value or {}).get(group)
        if not text:
            continue
        components = text.split("^")
        if len(components) > 5:  # not valid DICOM; nothing is dropped: the rest is the suffix
            components[4:] = ["^".join(components[4:])]
        out.append(f"<{group}>")
        for name, component in zip(NAME_COMPONENTS, components, strict=False):
            if component:
                out.append(f"<{name}>{_text(component)}</{name}>")
        out.append(f"</{group}>")
    out.append("</PersonName>")


def _value_text(value: Any) -> str:
    """A JSON value as the text of a Value element: empty for a null (an empty value of a
    multi-valued element), numbers as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):  # not a DICOM JSON value type; kept readable
        return "1" if value else "0"
    return value if isinstance(value, str) else str(value)


def _text(value: str) -> str:
    return value.translate(_TEXT)


def _attribute(value: str) -> str:
    return value.translate(_ATTRIBUTE)
