"""Flat DICOM JSON written as a data set: the bytes pydicom writes for the same JSON, on the
attributes of pydicom's own test files (PS3.18 F.2, PS3.5 7.1)."""

from __future__ import annotations

import warnings

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from localdicom.dicom.jsonwrite import write

UNICODE = {"vr": "CS", "Value": ["ISO_IR 192"]}
NAMES = sorted({path.rsplit("/", 1)[-1] for path in get_testdata_files("*.dcm")})[:80]


def flat_json(name: str) -> dict:
    """The top-level attributes of a test file that a C-FIND answer could hold, as JSON."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True, force=True)
        elements = {}
        for element in dataset:
            try:
                elements[f"{element.tag:08X}"] = element.to_json_dict(None, 0)
            except Exception:  # values pydicom itself cannot put in JSON
                continue
    elements.pop("00080005", None)
    return elements


def pydicoms(elements: dict, implicit: bool) -> bytes | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return encode(Dataset.from_json(elements), implicit, True)
        except Exception:
            return None


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit VR", "explicit VR"])
@pytest.mark.parametrize("name", NAMES)
def test_each_writable_attribute_is_written_as_pydicom_writes_it(name: str, implicit: bool):
    written_any = False
    for tag, element in flat_json(name).items():
        alone = {tag: element, "00080005": UNICODE}  # as C-FIND answers go: in UTF-8
        ours = write(alone, implicit)
        if ours is None:
            continue
        theirs = pydicoms(alone, implicit)
        if theirs is None:  # pydicom refuses the value (e.g. too long for its VR)
            continue
        assert ours == theirs, (tag, element)
        written_any = True
    assert written_any


def test_a_c_find_answer_is_written_whole_in_tag_order():
    elements = {
        "00100010": {
            "vr": "PN",
            "Value": [{"Alphabetic": "Müller^Jürgen", "Ideographic": "ミュラー"}],
        },
        "00080020": {"vr": "DA", "Value": ["20240102"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3.4.5"]},
        "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
        "00201208": {"vr": "IS", "Value": [12]},
        "00280010": {"vr": "US", "Value": [512]},
        "00081030": {"vr": "LO"},
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
    }
    for implicit in (True, False):
        assert write(elements, implicit) == pydicoms(elements, implicit)


@pytest.mark.parametrize(
    "element",
    [
        {"vr": "SQ", "Value": [{}]},
        {"vr": "OB", "InlineBinary": "AAAA"},
        {"vr": "OW", "BulkDataURI": "http://x"},
        {"vr": "DS", "Value": [0.30000000000000004]},
    ],
    ids=["sequence", "inline binary", "bulk data", "a DS too long to copy"],
)
def test_what_needs_pydicom_is_left_to_it(element: dict):
    assert write({"00081030": element}, True) is None
