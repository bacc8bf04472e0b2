"""De-identification (PS3.15 Annex E Basic Application Level Confidentiality Profile and its
options) on pydicom's real files: one test per action code of Table E.1-1, the keyed UID and
date mappings across a study with a segmentation (pydicom-data's liver SEG, pointed at CT
slices made from CT_small.dcm), private attributes, nested sequences, and the key file.

Expected values come from pydicom's reading of the originals and from the standard (the
table's code for the attribute), never from an earlier output.
"""

from __future__ import annotations

import datetime
import io
import stat
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from localdicom.deid import (
    Deidentifier,
    DeidKey,
    DeidOption,
    KeyFileError,
    burned_in,
    deidentify_part10,
    load_key,
    record_patients,
)
from localdicom.dicom.confidentiality import Actions, basic_profile
from tests.helpers.corpus import pydicom_file
from tests.helpers.deid import liver_study

KEY = DeidKey(b"k" * 32)
ALL_OPTIONS = list(DeidOption)


def read(name: str) -> Dataset:
    return pydicom.dcmread(pydicom_file(name), force=True)  # some have no file meta


def deid(ds: Dataset, *options: DeidOption, key: DeidKey = KEY) -> Dataset:
    return Deidentifier(key, options).deidentify(ds).dataset


def elements(ds: Dataset) -> Iterator[pydicom.DataElement]:
    """Every element of ``ds`` and of its sequences' items, depth first."""
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value:
                yield from elements(item)


def table_code(keyword: str) -> str:
    exact, _ = basic_profile()
    return exact[pydicom.datadict.tag_for_keyword(keyword)]


def shifted(date: str, days: int) -> str:
    moved = datetime.datetime.strptime(date, "%Y%m%d") + datetime.timedelta(days=days)
    return moved.strftime("%Y%m%d")


# one test per action code of Table E.1-1 (PS3.15 E.1.1) ------------------------------------


def test_e1_1_action_d_replaces_with_a_dummy_value_of_the_vr() -> None:
    original = read("rtplan.dcm")
    assert table_code("RTPlanLabel") == "D"
    result = deid(original)
    assert original.RTPlanLabel and result.RTPlanLabel not in ("", original.RTPlanLabel)


def test_e1_1_action_d_on_a_sequence_cleans_its_items() -> None:
    """Content Sequence (D) of an SR: kept, and the dates and names deep inside replaced."""
    original = read("test-SR.dcm")
    assert table_code("ContentSequence") == "D"
    result = deid(original)
    assert "ContentSequence" in result
    for keywords in (("Date", "DateTime"), ("TextValue",)):
        before = {str(e.value) for e in elements(original) if e.keyword in keywords}
        after = {str(e.value) for e in elements(result) if e.keyword in keywords}
        assert before and after and not before & after, keywords

    def codes(ds: Dataset) -> list[str]:
        items = ds.ContentSequence
        return [e.value for item in items for e in elements(item) if e.keyword == "CodeValue"]

    assert codes(original) and codes(result) == codes(original)


def test_e1_1_action_z_leaves_the_attribute_empty() -> None:
    original = read("CT_small.dcm")
    assert table_code("StudyID") == "Z" and original.StudyID
    result = deid(original)
    assert "StudyID" in result and result.StudyID == ""


def test_e1_1_action_x_removes_the_attribute() -> None:
    original = read("CT_small.dcm")
    assert table_code("ImageComments") == "X" and "ImageComments" in original
    assert "ImageComments" not in deid(original)


def test_e1_1_action_u_replaces_the_uid_by_the_keyed_mapping() -> None:
    original = read("CT_small.dcm")
    assert table_code("FrameOfReferenceUID") == "U"
    result = deid(original)
    assert result.FrameOfReferenceUID == KEY.uid(original.FrameOfReferenceUID)
    assert result.FrameOfReferenceUID.startswith("2.25.") and len(result.FrameOfReferenceUID) <= 64


@pytest.mark.parametrize(
    ("keyword", "code", "expected"),
    [
        ("AcquisitionDate", "X/Z", ""),  # kept empty: Type 2 where the IOD has it
        ("SeriesDate", "X/D", "19000101"),  # a dummy date
        ("InstitutionName", "X/Z/D", "ANONYMOUS"),
        ("ContrastBolusAgent", "Z/D", "ANONYMOUS"),
    ],
)
def test_e1_1_combined_codes_keep_the_attribute_present(keyword, code, expected) -> None:
    original = read("CT_small.dcm")
    assert table_code(keyword) == code and original[keyword].value
    assert deid(original)[keyword].value == expected


def test_e1_1_action_x_z_u_star_keeps_the_sequence_with_replaced_uids() -> None:
    """Source Image Sequence (X/Z/U*), nested in the SEG's per-frame functional groups."""
    original = read("liver_1frame.dcm")
    assert table_code("SourceImageSequence") == "X/Z/U*"

    def sources(ds: Dataset) -> list[str]:
        frames = ds.PerFrameFunctionalGroupsSequence
        derivations = [d for f in frames for d in f.get("DerivationImageSequence", [])]
        return [s.ReferencedSOPInstanceUID for d in derivations for s in d.SourceImageSequence]

    before, after = sources(original), sources(deid(original))
    assert before and after == [KEY.uid(uid) for uid in before]


def test_e3_option_k_keeps_what_the_option_retains() -> None:
    """Retain Device Identity (E.3.8) and Patient Characteristics (E.3.7): K."""
    original = read("MR_small.dcm")
    basic = deid(original)
    kept = deid(
        original, DeidOption.RETAIN_DEVICE_IDENTITY, DeidOption.RETAIN_PATIENT_CHARACTERISTICS
    )
    for keyword in ("DeviceSerialNumber", "StationName", "PatientSex", "PatientWeight"):
        assert kept[keyword].value == original[keyword].value, keyword
        assert keyword not in basic or basic[keyword].value != original[keyword].value, keyword


def test_e3_5_option_c_cleans_descriptors_of_the_patients_names_and_ids() -> None:
    original = read("CT_small.dcm")
    family = str(original.PatientName).split("^")[0]
    original.StudyDescription = f"Follow-up of {family} for {original.PatientID} abdomen"
    result = deid(original, DeidOption.CLEAN_DESCRIPTORS)
    assert "abdomen" in result.StudyDescription and "Follow-up" in result.StudyDescription
    assert family not in result.StudyDescription
    assert original.PatientID not in result.StudyDescription
    assert "StudyDescription" not in deid(original)  # X without the option


def test_e3_6_option_c_shifts_dates_by_the_patients_shift() -> None:
    original = read("CT_small.dcm")
    ds = Deidentifier(KEY, [DeidOption.RETAIN_MODIFIED_DATES]).deidentify(original)
    days = ds.patient.shift_days
    assert days < 0
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        assert ds.dataset[keyword].value == shifted(original[keyword].value, days), keyword
    assert ds.dataset.StudyTime == original.StudyTime  # times are kept, dates move
    assert ds.dataset.LongitudinalTemporalInformationModified == "MODIFIED"


# what is set, and the file meta --------------------------------------------------------------


def test_patient_identity_removed_and_method_codes_cid_7050() -> None:
    result = deid(read("CT_small.dcm"), DeidOption.RETAIN_SAFE_PRIVATE)
    assert result.PatientIdentityRemoved == "YES"
    codes = [
        (c.CodeValue, c.CodingSchemeDesignator) for c in result.DeidentificationMethodCodeSequence
    ]
    assert codes == [("113100", "DCM"), ("113111", "DCM")]
    assert result.DeidentificationMethod[0] == "Basic Application Confidentiality Profile"


def test_part10_meta_follows_the_new_sop_instance_uid_and_pixels_stay() -> None:
    path = pydicom_file("MR_small_jp2klossless.dcm")
    out = io.BytesIO()
    with path.open("rb") as source:
        deidentify_part10(source, out, Deidentifier(KEY))
    out.seek(0)
    original, result = pydicom.dcmread(path), pydicom.dcmread(out)
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    assert result.SOPInstanceUID == KEY.uid(original.SOPInstanceUID)
    assert result.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert result.PixelData == original.PixelData


# UIDs and the study ------------------------------------------------------------------------


def test_seg_still_references_its_source_series_after_deidentification() -> None:
    seg, *slices = (deid(ds, DeidOption.RETAIN_MODIFIED_DATES) for ds in liver_study())
    referenced = seg.ReferencedSeriesSequence[0]
    assert {ct.SeriesInstanceUID for ct in slices} == {referenced.SeriesInstanceUID}
    assert {ct.StudyInstanceUID for ct in slices} == {seg.StudyInstanceUID}
    assert {ct.FrameOfReferenceUID for ct in slices} == {seg.FrameOfReferenceUID}
    wanted = {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence}
    assert wanted == {ct.SOPInstanceUID for ct in slices}
    assert {ct.PatientID for ct in slices} == {seg.PatientID}
    assert {ct.StudyDate for ct in slices} == {seg.StudyDate}  # shifted by the same days


def test_every_instance_uid_is_replaced_and_well_known_ones_kept() -> None:
    for original in liver_study():
        result = deid(original)
        before = {str(e.value) for e in elements(original) if e.VR == "UI"}
        after = {str(e.value) for e in elements(result) if e.VR == "UI"}
        known = {uid for uid in after if uid in UID_dictionary or uid.startswith("1.2.840.10008.")}
        assert known == {uid for uid in before if uid in UID_dictionary}
        assert all(uid.startswith("2.25.") for uid in after - known)
        assert not (before - known) & after


def test_same_key_same_output_other_key_other_uids() -> None:
    path = pydicom_file("rtplan.dcm")
    outputs = []
    for key in (KEY, KEY, DeidKey(b"other" * 7)):
        out = io.BytesIO()
        with path.open("rb") as source:
            deidentify_part10(source, out, Deidentifier(key, ALL_OPTIONS))
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
    first, other = pydicom.dcmread(io.BytesIO(outputs[0])), pydicom.dcmread(io.BytesIO(outputs[2]))
    assert first.SOPInstanceUID != other.SOPInstanceUID
    assert first.StudyInstanceUID != other.StudyInstanceUID
    assert first.PatientID != other.PatientID


def test_the_original_dataset_is_left_unchanged() -> None:
    original = read("rtplan.dcm")
    before = original.to_json_dict()
    deid(original, *ALL_OPTIONS)
    assert original.to_json_dict() == before


# sequences, private attributes, overlays ----------------------------------------------------


def test_nested_sequences_are_cleaned_at_every_depth() -> None:
    """rtplan and rtstruct nest the table's attributes several sequences deep."""
    actions = Actions(())
    for name in ("rtplan.dcm", "rtstruct.dcm", "test-SR.dcm"):
        original = read(name)
        result = deid(original)
        removed = [e for e in elements(result) if actions.get(int(e.tag)) == "X"]
        assert removed == [], name
        names = {str(e.value) for e in elements(original) if e.VR == "PN" and e.value}
        assert names and not names & {str(e.value) for e in elements(result) if e.VR == "PN"}


def with_private_blocks() -> Dataset:
    """CT_small with two private blocks, one declared safe (PS3.3 C.12.1.1.7)."""
    ds = read("CT_small.dcm")
    safe, unsafe = (
        ds.private_block(0x0011, "ACME SAFE", create=True),
        ds.private_block(0x0013, "ACME PHI", create=True),
    )
    safe.add_new(0x01, "DS", "1.5")
    unsafe.add_new(0x01, "LO", "John Doe's number")
    declared = Dataset()
    declared.PrivateGroupReference = 0x0011
    declared.PrivateCreatorReference = "ACME SAFE"
    declared.BlockIdentifyingInformationStatus = "SAFE"
    ds.PrivateDataElementCharacteristicsSequence = [declared]
    return ds


def test_private_attributes_are_removed_unless_declared_safe() -> None:
    original = with_private_blocks()
    assert any(e.tag.is_private for e in original)
    assert not any(e.tag.is_private for e in deid(original))
    kept = deid(original, DeidOption.RETAIN_SAFE_PRIVATE)
    private = {str(e.value) for e in kept if e.tag.is_private}
    assert private == {"ACME SAFE", "1.5"}


def test_private_sequences_nested_in_private_sequences_are_removed() -> None:
    result = deid(read("nested_priv_SQ.dcm"))
    assert not any(e.tag.is_private for e in elements(result))


def test_overlays_are_removed() -> None:
    result = deid(read("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert not any(0x6000 <= e.tag.group <= 0x601E for e in result)


# burned-in text --------------------------------------------------------------------------


def test_burned_in_annotation_and_text_prone_kinds_need_review() -> None:
    assert burned_in(read("US1_UNCR.dcm"))  # ultrasound
    assert burned_in(read("SC_rgb_small_odd.dcm"))  # secondary capture
    assert burned_in(read("emri_small.dcm")) == ""  # MR with Burned In Annotation NO
    ct = read("CT_small.dcm")
    assert burned_in(ct) == ""
    ct.BurnedInAnnotation = "YES"
    assert "Burned In Annotation" in Deidentifier(KEY).deidentify(ct).review


# the key file ----------------------------------------------------------------------------------


def test_key_file_is_created_private_and_keeps_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "deid.json"
    key = load_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path).secret == key.secret and len(key.secret) == 32
    assert load_key(tmp_path / "other.json").secret != key.secret


def test_key_file_map_records_patients_and_is_used_again(tmp_path: Path) -> None:
    path = tmp_path / "deid.json"
    original = read("CT_small.dcm")
    outcome = Deidentifier(load_key(path)).deidentify(original)
    assert record_patients(path, [outcome.patient]) == 1
    assert record_patients(path, [outcome.patient]) == 0
    key = load_key(path)
    assert key.patients[original.PatientID].patient_name == str(original.PatientName)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # a pseudonym edited in the map is the one used from then on
    text = path.read_text().replace(outcome.patient.pseudonym, "STUDY-007")
    path.write_text(text)
    assert deid(original, key=load_key(path)).PatientID == "STUDY-007"


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(KeyFileError, match="not a localdicom de-identification key"):
        load_key(path)
