"""DICOM JSON to the Native DICOM Model (PS3.19 A.1), over pydicom's whole test corpus: every
document is valid against the normative schema (PS3.19 A.1.6) and says what pydicom reads
from the original file, attribute for attribute (values, person name components, sequence
items, private creators, inline and bulk binary values)."""

from __future__ import annotations

import base64
import math
import warnings
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pydicom.data.download
import pytest
import rnc2rng
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from localdicom.dicom.describing import describe
from localdicom.dicom.dicomxml import NAME_COMPONENTS, NAMESPACE, native_xml
from localdicom.dicom.header import NotDicom
from tests.helpers.corpus import corpus_files

NS = {"d": NAMESPACE}

#: The normative schema of PS3.19 A.1.6, in RELAX NG compact syntax, with two corrections:
#: the standard's text has an empty alternative in the list of VRs ("OV" | | "OW"), which is
#: not valid syntax, and it leaves out the ``xml:space="preserve"`` that A.1.5 requires on
#: the root element, which a validator then refuses as an unknown attribute.
SCHEMA = """
default namespace = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
start = element NativeDicomModel { attribute xml:space { "preserve" }, DicomDataSet }
DicomDataSet = DicomAttribute*
DicomAttribute = element DicomAttribute {
  Tag, VR, Keyword?, PrivateCreator?,
  (BulkData | Value+ | Item+ | PersonName+ | InlineBinary)?
}
BulkData = element BulkData { UUID | URI }
Value = element Value { Number, xsd:string }
InlineBinary = element InlineBinary { xsd:base64Binary }
Item = element Item { Number, DicomDataSet }
PersonName = element PersonName {
  Number,
  element Alphabetic { NameComponents }?,
  element Ideographic { NameComponents }?,
  element Phonetic { NameComponents }?
}
NameComponents =
  element FamilyName { xsd:string }?,
  element GivenName { xsd:string }?,
  element MiddleName { xsd:string }?,
  element NamePrefix { xsd:string }?,
  element NameSuffix { xsd:string }?
Keyword = attribute keyword { xsd:token }
Tag = attribute tag { xsd:string { minLength = "8" maxLength = "8" pattern = "[0-9A-F]{8}" } }
VR = attribute vr { "AE" | "AS" | "AT" | "CS" | "DA" | "DS" | "DT" | "FL" | "FD" | "IS" | "LO"
  | "LT" | "OB" | "OD" | "OF" | "OL" | "OV" | "OW" | "PN" | "SH" | "SL" | "SQ" | "SS" | "ST"
  | "SV" | "TM" | "UC" | "UI" | "UL" | "UN" | "UR" | "US" | "UT" | "UV" }
PrivateCreator = attribute privateCreator { xsd:string }
UUID = attribute uuid { xsd:string }
URI = attribute uri { xsd:anyURI }
Number = attribute number { xsd:positiveInteger }
"""

INTEGER_VRS = {"IS", "SL", "SS", "SV", "UL", "US", "UV"}
REAL_VRS = {"DS", "FL", "FD"}


@cache
def schema() -> etree.RelaxNG:
    grammar = rnc2rng.dumps(rnc2rng.loads(SCHEMA))
    return etree.RelaxNG(etree.fromstring(grammar.encode()))


def assert_valid(document: bytes) -> None:
    tree = etree.fromstring(document)
    assert schema().validate(tree), schema().error_log


CORPUS = corpus_files(charsets=True)


def metadata_of(path: Path) -> dict[str, Any]:
    """The DICOM JSON the server keeps of the file (its sidecar's), or skip a file the server
    refuses to store."""
    with path.open("rb") as fp:
        try:
            return describe(fp).metadata
        except NotDicom as exc:
            pytest.skip(f"not storable: {exc}")


# the whole corpus --------------------------------------------------------------------------


def test_the_corpus_is_there():
    assert len(CORPUS) > 100
    assert {"rtplan.dcm", "CT_small.dcm", "chrH31.dcm"} <= {p.name for p in CORPUS}


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_xml_of_each_file_is_valid_and_says_what_pydicom_reads(path: Path):
    document = native_xml(metadata_of(path))
    assert_valid(document)
    root = ET.fromstring(document)
    assert root.tag == f"{{{NAMESPACE}}}NativeDicomModel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
    assert_same_dataset(root, ds, where=path.name)


def assert_same_dataset(node: ET.Element, ds: Dataset, where: str) -> None:
    """Every element pydicom reads (group lengths aside) is in ``node`` once, and says the
    same."""
    seen = set()
    for attribute in node.findall("d:DicomAttribute", NS):
        tag = resolve_tag(attribute, ds)
        assert tag not in seen, f"{where}: {tag:08X} twice"
        seen.add(tag)
        assert tag in ds, f"{where}: {tag:08X} is not in the file"
        written_vr = ds.get_item(tag).VR  # as in the file, before pydicom corrects it
        assert_same_element(attribute, ds[tag], written_vr, f"{where} {tag:08X}")
    expected = {int(elem.tag) for elem in ds if elem.tag.element != 0}
    assert seen == expected, f"{where}: missing {sorted(map(hex, expected - seen))}"


def resolve_tag(attribute: ET.Element, ds: Dataset) -> int:
    """The tag in the file: a private attribute names its block through its creator."""
    tag = int(attribute.get("tag"), 16)
    creator = attribute.get("privateCreator")
    if creator is None:
        return tag
    assert tag & 0xFF00 == 0, "a private attribute's tag is gggg00ee (PS3.19 A.1.5)"
    block = ds.private_block(tag >> 16, creator)
    return int(block.get_tag(tag & 0xFF))


def assert_same_element(attribute: ET.Element, elem: Any, written_vr: str, where: str) -> None:
    """One attribute against pydicom's element; its VR is the one written in the file or
    the one pydicom decided (an ambiguous "US or SS" resolved, a UN one looked up); a number
    that cannot be read as one is kept as text, LO (as the server's DICOM JSON has it)."""
    vr = attribute.get("vr")
    as_text = vr == "LO" and elem.VR in INTEGER_VRS | REAL_VRS
    assert (
        vr in (written_vr, elem.VR, *elem.VR.split(" or ")) or "UN" in (vr, elem.VR) or as_text
    ), where

    # PS3.6's keyword, repeating groups (60xx) included; none for private attributes
    assert attribute.get("keyword") == (keyword_for_tag(elem.tag) or None), where
    children = list(attribute)
    if not children:
        assert elem.is_empty, f"{where}: value {elem.value!r} missing"
        return
    kind = children[0].tag.split("}")[1]
    if kind == "BulkData":
        assert attribute.find("d:BulkData", NS).get("uri").split("/bulk/")[1], where
    elif kind == "InlineBinary":
        assert base64.b64decode(children[0].text or "") == elem.value, where
    elif kind == "Item":
        assert [item.get("number") for item in children] == [
            str(n) for n in range(1, len(elem.value) + 1)
        ], where
        for item, inner in zip(children, elem.value, strict=True):
            assert_same_dataset(item, inner, where)
    elif kind == "PersonName":
        for person_name, value in zip(children, values_of(elem), strict=True):
            assert_same_name(person_name, value, where)
    else:
        texts = [(value.text or "") for value in children]
        assert [value.get("number") for value in children] == [
            str(n) for n in range(1, len(texts) + 1)
        ], where
        for text, value in zip(texts, values_of(elem), strict=True):
            assert same_value(text, value, vr), f"{where}: {text!r} != {value!r}"


def values_of(elem: Any) -> list[Any]:
    value = elem.value
    return list(value) if isinstance(value, MultiValue | list) else [value]


def assert_same_name(node: ET.Element, value: PersonName | str, where: str) -> None:
    """Each component group's five components as pydicom splits them (PS3.5 6.2)."""
    groups = PersonName(value).components if value else ()
    for name, text in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        group = node.find(f"d:{name}", NS)
        components = text.split("^") if text else []
        written = [
            (group.find(f"d:{component}", NS).text or "")
            if group is not None and group.find(f"d:{component}", NS) is not None
            else ""
            for component in NAME_COMPONENTS
        ]
        padded = components[:5] + [""] * (5 - len(components[:5]))
        assert written == padded, f"{where}: {name} {written} != {padded}"


def same_value(text: str, value: Any, vr: str) -> bool:
    if value is None or value == "":
        return text == ""
    if vr == "AT":
        return text == f"{int(value):08X}"
    try:
        if vr in INTEGER_VRS:
            return int(text) == int(value)
        if vr in REAL_VRS:
            return math.isclose(float(text), float(value), rel_tol=1e-12)
    except (TypeError, ValueError):
        pass  # an invalid number in the file: kept as text
    return text == str(value)


# what the corpus may not hold ---------------------------------------------------------------


def parse(dataset: dict[str, Any]) -> ET.Element:
    document = native_xml(dataset)
    assert_valid(document)
    return ET.fromstring(document)


def test_private_attribute_carries_its_creator_and_a_block_free_tag():
    root = parse(
        {
            "00090010": {"vr": "LO", "Value": ["ACME 1.0"]},
            "00091001": {"vr": "SH", "Value": ["x"]},
            "00092001": {"vr": "SH", "Value": ["block 0x20 has no creator"]},
        }
    )
    creator, element, orphan = root.findall("d:DicomAttribute", NS)
    assert (creator.get("tag"), creator.get("privateCreator")) == ("00090010", None)
    assert (element.get("tag"), element.get("privateCreator")) == ("00090001", "ACME 1.0")
    assert element.get("keyword") is None
    # without its creator the block cannot be named: the tag stays whole
    assert (orphan.get("tag"), orphan.get("privateCreator")) == ("00092001", None)


def test_values_numbers_empty_values_at_and_group_length():
    root = parse(
        {
            "00080000": {"vr": "UL", "Value": [12]},
            "00080008": {"vr": "CS", "Value": ["MPG", None, "XR3"]},
            "00200032": {"vr": "DS", "Value": [0.5, -91.2, 1e-05]},
            "00209165": {"vr": "AT", "Value": ["00200032"]},
            "00100020": {"vr": "LO"},
            "00280010": {"vr": "US", "Value": [512]},
        }
    )
    by_tag = {a.get("tag"): a for a in root.findall("d:DicomAttribute", NS)}
    assert "00080000" not in by_tag  # PS3.19 A.1.1: no group lengths
    values = [v.text or "" for v in by_tag["00080008"].findall("d:Value", NS)]
    assert values == ["MPG", "", "XR3"]  # PS3.19 A.1.5's own example
    assert [float(v.text) for v in by_tag["00200032"]] == [0.5, -91.2, 1e-05]
    assert by_tag["00209165"][0].text == "00200032"
    assert len(by_tag["00100020"]) == 0 and by_tag["00100020"].get("keyword") == "PatientID"
    assert by_tag["00280010"][0].text == "512"


def test_sequences_person_names_and_binary():
    root = parse(
        {
            "00081115": {
                "vr": "SQ",
                "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2.3"]}}, {}],
            },
            "00100010": {
                "vr": "PN",
                "Value": [
                    {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"},
                    None,
                    {"Alphabetic": "A^B^C^D^E^F"},
                ],
            },
            "00431028": {"vr": "OB", "InlineBinary": "AAEC"},
            "7FE00010": {"vr": "OW", "BulkDataURI": "http://h/x/bulk/7FE00010?a=1&b=2"},
        }
    )
    sequence, name, inline, bulk = root.findall("d:DicomAttribute", NS)
    items = sequence.findall("d:Item", NS)
    assert [i.get("number") for i in items] == ["1", "2"] and len(items[1]) == 0
    assert items[0].find("d:DicomAttribute/d:Value", NS).text == "1.2.3"
    first, empty, long = name.findall("d:PersonName", NS)
    assert first.find("d:Ideographic/d:GivenName", NS).text == "太郎"
    assert first.find("d:Phonetic", NS) is None and len(empty) == 0
    assert long.find("d:Alphabetic/d:NameSuffix", NS).text == "E^F"  # nothing dropped
    assert base64.b64decode(inline[0].text) == b"\x00\x01\x02"
    assert bulk[0].get("uri") == "http://h/x/bulk/7FE00010?a=1&b=2"


@given(text=st.text(), creator=st.text(min_size=1))
def test_any_text_survives_or_becomes_the_replacement_character(text: str, creator: str):
    """A carriage return, markup characters and quotes come back as they were; a character
    XML 1.0 cannot carry comes back as U+FFFD (in text and in attribute values alike)."""
    root = parse(
        {
            "00090010": {"vr": "LO", "Value": [creator]},
            "00091001": {"vr": "UT", "Value": [text]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": text.replace("^", "")}]},
        }
    )
    expected = "".join(c if _ok(c) else "\ufffd" for c in text)
    _, element, name = root.findall("d:DicomAttribute", NS)
    assert (element[0].text or "") == expected
    assert element.get("privateCreator") == "".join(c if _ok(c) else "\ufffd" for c in creator)
    family = name.find("d:PersonName/d:Alphabetic/d:FamilyName", NS)
    assert (family.text if family is not None else "") == expected.replace("^", "")


def _ok(char: str) -> bool:
    code = ord(char)
    if code in (9, 10, 13):
        return True
    return code >= 0x20 and not 0xD800 <= code < 0xE000 and code not in (0xFFFE, 0xFFFF)
