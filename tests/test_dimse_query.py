"""The C-FIND translation (localdicom.dimse.query), pure: Identifiers as QIDO queries with
QIDO's matching types (PS3.4 C.2.2.2), the levels each model has (PS3.4 C.4.1.1.3.1), and
responses with exactly the keys asked (PS3.4 C.4.1.1.3.2)."""

from __future__ import annotations

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from localdicom.dicom.qido import Range, SingleValue, Universal, ValueList, Wildcard
from localdicom.dimse.query import (
    PATIENT_ROOT,
    STUDY_ROOT,
    Refused,
    matching_text,
    patient_counts,
    patient_key,
    response,
    translate,
)
from tests.helpers.dimse import identifier

OWN_KEYWORDS = {"SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle"}


def keywords(answer: Dataset) -> set[str]:
    return {element.keyword for element in answer}


def tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


def test_keys_become_qido_conditions_of_each_matching_type_c222() -> None:
    find_query = translate(
        identifier(
            "STUDY",
            PatientName="Doe*",
            StudyDate="20200101-20201231",
            StudyInstanceUID=["1.2.3", "1.2.4"],
            AccessionNumber="A1",
            StudyID="*",
            ModalitiesInStudy="",
        ),
        STUDY_ROOT,
    )
    conditions = find_query.query.conditions
    assert find_query.level == "STUDY" and find_query.query.level == "study"
    assert isinstance(conditions[tag("PatientName")], Wildcard)
    assert isinstance(conditions[tag("StudyDate")], Range)
    assert conditions[tag("StudyInstanceUID")] == ValueList(frozenset({"1.2.3", "1.2.4"}))
    assert conditions[tag("AccessionNumber")] == SingleValue("A1")
    assert isinstance(conditions[tag("StudyID")], Universal)
    assert tag("ModalitiesInStudy") not in conditions  # empty: universal, only returned
    assert set(find_query.tags) == {
        tag(k)
        for k in (
            "PatientName",
            "StudyDate",
            "StudyInstanceUID",
            "AccessionNumber",
            "StudyID",
            "ModalitiesInStudy",
        )
    }


@pytest.mark.parametrize(
    ("model", "level", "qido"),
    [
        (STUDY_ROOT, "STUDY", "study"),
        (STUDY_ROOT, "SERIES", "series"),
        (STUDY_ROOT, "IMAGE", "instance"),
        (PATIENT_ROOT, "PATIENT", "study"),
        (PATIENT_ROOT, "IMAGE", "instance"),
    ],
)
def test_each_level_of_each_model_is_a_qido_level(model, level, qido) -> None:
    assert translate(identifier(level, PatientID="X"), model).query.level == qido


@pytest.mark.parametrize("level", [None, "", "FOO", "PATIENT", "image"])
def test_a_level_the_study_root_has_not_is_refused_c4114(level) -> None:
    with pytest.raises(Refused) as refused:
        translate(identifier(level, PatientID="X"), STUDY_ROOT)
    assert refused.value.status == 0xA900 and refused.value.offending == [0x00080052]
    assert refused.value.response().OffendingElement == 0x00080052


def test_keys_the_index_cannot_match_at_a_level_are_returned_only_c2212() -> None:
    find_query = translate(
        identifier("PATIENT", PatientID="ID1", StudyDate="20200101", PatientComments="x"),
        PATIENT_ROOT,
    )
    assert list(find_query.query.conditions) == [tag("PatientID")]
    assert find_query.unmatched == ("StudyDate", "PatientComments")
    assert {tag("StudyDate"), tag("PatientComments")} <= set(find_query.tags)
    assert find_query.needs_sidecars  # PatientComments is not in memory


def test_a_value_qido_cannot_read_is_refused_c000() -> None:
    with pytest.raises(Refused) as refused:
        translate(identifier("STUDY", StudyDate="2020"), STUDY_ROOT)
    assert refused.value.status == 0xC000 and "StudyDate" in str(refused.value)


def test_matching_text_of_names_lists_and_binary_keys() -> None:
    ds = identifier("STUDY", PatientName="Yamada^Tarou=山田^太郎", OtherPatientIDsSequence=[])
    ds.add_new(0x00091001, "UN", b"x")
    assert matching_text(ds["PatientName"]) == "Yamada^Tarou"
    assert matching_text(ds["OtherPatientIDsSequence"]) is None
    assert matching_text(ds[0x00091001]) is None
    assert matching_text(identifier("STUDY", ModalitiesInStudy=["CT", "MR"])["ModalitiesInStudy"])
    assert matching_text(identifier("STUDY", Rows=None)["Rows"]) == ""


def test_a_response_has_exactly_the_keys_asked_c41132() -> None:
    find_query = translate(
        identifier(
            "IMAGE", SOPInstanceUID="", Rows="", PatientComments="", InstanceAvailability=""
        ),
        STUDY_ROOT,
    )
    attributes = {
        tag("SOPInstanceUID"): {"vr": "UI", "Value": ["1.2.3"]},
        tag("Rows"): {"vr": "US", "Value": [512]},
        tag("Columns"): {"vr": "US", "Value": [512]},  # not asked: not returned
        tag("PixelData"): {"vr": "OW", "BulkDataURI": "bulk/7FE00010"},
    }
    answer = Dataset.from_json(response(find_query, attributes, "ME"))
    assert keywords(answer) == OWN_KEYWORDS | {
        "SOPInstanceUID",
        "Rows",
        "PatientComments",
        "InstanceAvailability",
    }
    assert (answer.SOPInstanceUID, answer.Rows, answer.InstanceAvailability) == (
        "1.2.3",
        512,
        "ONLINE",
    )
    assert answer["PatientComments"].is_empty and answer["PatientComments"].VR == "LT"
    assert (answer.QueryRetrieveLevel, answer.RetrieveAETitle) == ("IMAGE", "ME")
    assert answer.SpecificCharacterSet == "ISO_IR 192"


def test_patients_are_told_apart_by_id_and_name_and_counted() -> None:
    def study(series: int, instances: int) -> dict:
        return {
            tag("NumberOfStudyRelatedSeries"): {"vr": "IS", "Value": [series]},
            tag("NumberOfStudyRelatedInstances"): {"vr": "IS", "Value": [instances]},
        }

    counts = patient_counts([study(2, 3), study(1, 5)])
    assert [
        counts[tag(f"NumberOfPatientRelated{w}")]["Value"]
        for w in ("Studies", "Series", "Instances")
    ] == [[2], [3], [8]]
    name = {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]}
    same = patient_key({tag("PatientID"): {"vr": "LO", "Value": ["1"]}, tag("PatientName"): name})
    other = patient_key({tag("PatientID"): {"vr": "LO", "Value": ["1"]}})
    assert same != other


def test_keys_every_response_carries_need_no_sidecar_read() -> None:
    asked = identifier("STUDY", RetrieveAETitle="THEM", SpecificCharacterSet="ISO_IR 100")
    asked.add_new(0x00080000, "UL", 12)  # a group length: not a key
    asked.StudyInstanceUID = ""
    find_query = translate(asked, STUDY_ROOT)
    assert find_query.tags == (tag("StudyInstanceUID"),)
    assert not find_query.needs_sidecars
    assert Dataset.from_json(response(find_query, {}, "ME")).RetrieveAETitle == "ME"
