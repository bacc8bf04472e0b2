"""Unit tests without HTTP: UIDs, QIDO query semantics, frame lists, content negotiation."""

from __future__ import annotations

import posixpath
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import example, given
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from localdicom.dicom import qido
from localdicom.dicom.frames import FrameListError, parse_frame_list
from localdicom.dicom.qido import (
    INSTANCE,
    SERIES,
    STUDY,
    QueryError,
    Range,
    SingleValue,
    Universal,
    ValueList,
    Wildcard,
    accepts,
    parse_condition,
    parse_query,
    result_fields,
)
from localdicom.dicom.syntaxes import OCTET_STREAM
from localdicom.dicom.uids import InvalidUID, check_uid, is_valid_uid
from localdicom.dimse.query import STUDY_ROOT, translate
from localdicom.web.negotiation import (
    AS_STORED,
    DICOM,
    DICOM_JSON,
    MediaRange,
    Offer,
    choose,
    parse_media_ranges,
)

EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

# tags used below
PATIENT_NAME = "00100010"
PATIENT_AGE = "00101010"
STUDY_DATE = "00080020"
STUDY_TIME = "00080030"
STUDY_DESCRIPTION = "00081030"
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
MODALITY = "00080060"
MODALITIES_IN_STUDY = "00080061"
RETRIEVE_URL = "00081190"
STUDY_INSTANCES = "00201208"
SERIES_INSTANCES = "00201209"
INSTANCE_NUMBER = "00200013"


# UIDs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uid",
    [
        "0",
        "1",
        "0.0",
        "1.2.3",
        "1.0.2",
        "1.2.840.10008.1.2.1",
        "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420",
        "1." + "2" * 62,  # exactly 64 characters
        "2.25.329800735698586629295641978511506172918",
    ],
)
def test_valid_uids(uid):
    assert is_valid_uid(uid)
    assert check_uid(uid) is uid


@pytest.mark.parametrize(
    "uid",
    [
        "",
        ".",
        "..",
        "1.",
        ".1",
        "1..2",
        "01",
        "1.02.3",
        "1.2.00",
        "1.2.abc",
        "1.2.3 ",
        " 1.2.3",
        "1/2",
        "1.2.3/../..",
        "1.2.3\x00",
        "1.2.-3",
        "+1.2",
        "1,2",
        "1." + "2" * 63,  # 65 characters
        "\u0661.\u0662",  # Arabic-Indic digits
        "\uff11.\uff12",  # full-width digits
        "1\u00b2",  # superscript two
        pytest.param(
            "1.2.3\n",
            id="trailing-newline",
        ),
    ],
)
def test_invalid_uids(uid):
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUID):
        check_uid(uid)


def test_check_uid_names_the_attribute_and_the_value():
    with pytest.raises(InvalidUID, match=r"SeriesInstanceUID '1\.02' is not a valid DICOM UID"):
        check_uid("1.02", "SeriesInstanceUID")


def test_check_uid_shortens_a_long_value_in_its_message():
    with pytest.raises(InvalidUID) as raised:
        check_uid("9" * 10_000)
    assert len(str(raised.value)) < 250
    assert "..." in str(raised.value)


def test_invalid_uid_is_a_value_error():
    assert issubclass(InvalidUID, ValueError)


def _assert_safe_as_a_file_name(value: str) -> None:
    assert set(value) <= set("0123456789.")
    assert 0 < len(value) <= 64
    joined = posixpath.normpath(posixpath.join("/archive", value))
    assert posixpath.dirname(joined) == "/archive"
    assert joined != "/archive"


#: Text made of what a path traversal needs, so that the property meets it often.
PATHLIKE = st.text(alphabet="0123456789./\\%2eEfF\x00 ", max_size=80)


@given(PATHLIKE)
@example("..")
@example("1.2/../..")
def test_accepted_uids_cannot_leave_the_archive_folder(value):
    if is_valid_uid(value):
        _assert_safe_as_a_file_name(value)


@given(st.from_regex(r"(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){0,9}", fullmatch=True))
def test_well_formed_uids_are_accepted(value):
    assert is_valid_uid(value) == (len(value) <= 64)


@given(st.text())
@example("0\n")
def test_any_accepted_uid_is_only_digits_and_dots(value):
    if is_valid_uid(value):
        _assert_safe_as_a_file_name(value)


# QIDO: parsing --------------------------------------------------------------------------


def test_keyword_and_tag_forms_name_the_same_attribute():
    by_keyword = parse_query([("PatientName", "Doe")], STUDY)
    by_tag = parse_query([("00100010", "Doe")], STUDY)
    by_lower_tag = parse_query([("0020000d", "1.2.3")], STUDY)
    assert list(by_keyword.conditions) == list(by_tag.conditions) == [PATIENT_NAME]
    assert by_keyword.conditions == by_tag.conditions
    assert list(by_lower_tag.conditions) == [STUDY_UID]


@pytest.mark.parametrize("name", ["Foo", "patientname", "1234567", "123456789", "ZZZZZZZZ"])
def test_unknown_attribute_is_a_query_error(name):
    with pytest.raises(QueryError, match="not a DICOM attribute keyword or tag"):
        parse_query([(name, "x")], STUDY)


def test_private_tag_is_known_and_matchable():
    """Any attribute may be matched (read from the sidecars when memory lacks it)."""
    assert qido.attribute_tag("00091010") == "00091010"
    assert parse_query([("00091010", "x")], STUDY).conditions == {"00091010": SingleValue("x")}


@pytest.mark.parametrize("keyword", ["ReferencedSeriesSequence", "PixelData", "00420011"])
def test_sequences_and_binary_values_are_returned_but_not_matched(keyword):
    """PS3.4 C.2.2.2 defines no matching for them; universal matching returns them."""
    with pytest.raises(QueryError, match="cannot be matched on a value"):
        parse_query([(keyword, "x")], STUDY)
    assert isinstance(
        parse_query([(keyword, "")], STUDY).conditions[qido.attribute_tag(keyword)], Universal
    )


@pytest.mark.parametrize(
    ("keyword", "value", "matching", "not_matching"),
    [
        ("SliceThickness", "5.0", [5.0, 5, "5.000000", "+5", "5e0"], [5.5, "5.0x", None, ()]),
        ("SliceThickness", ".5", [0.5], [5.0]),
        ("InstanceNumber", "12", [12, 12.0, "012"], [120, 1]),
    ],
)
def test_numbers_match_by_value(keyword, value, matching, not_matching):
    condition = parse_query([(keyword, value)], INSTANCE).conditions[qido.attribute_tag(keyword)]
    assert isinstance(condition, qido.Number)
    for stored in matching:
        assert accepts(condition, stored), stored
    for stored in not_matching:
        assert not accepts(condition, stored), stored


def test_a_number_that_is_not_one_is_matched_as_text():
    assert parse_query([("SliceThickness", "5*")], INSTANCE).conditions["00180050"] == Wildcard(
        re.compile("5.*", re.DOTALL)
    )


@pytest.mark.parametrize(
    ("element", "value"),
    [
        (None, None),
        ({"vr": "DS"}, ()),
        ({"vr": "DS", "Value": [5.0]}, 5.0),
        ({"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]}, ("ORIGINAL", "PRIMARY")),
        ({"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}, {"Alphabetic": "Doe^John"}),
        ({"vr": "UN", "InlineBinary": "QUJDXERFRiA="}, ("ABC", "DEF")),  # b"ABC\\DEF "
    ],
)
def test_json_value_is_what_the_matcher_takes(element, value):
    """DICOM JSON (PS3.18 F.2) of a sidecar, as the index holds values."""
    assert qido.json_value(element) == value


def test_repeated_uid_parameters_make_one_uid_list():
    query = parse_query([("StudyInstanceUID", "1.2.3"), ("StudyInstanceUID", "4.5.6")], STUDY)
    assert query.conditions == {STUDY_UID: ValueList(frozenset({"1.2.3", "4.5.6"}))}


def test_repeated_other_parameters_are_a_query_error():
    with pytest.raises(QueryError, match="more than once"):
        parse_query([("PatientID", "a"), ("PatientID", "b")], STUDY)


def test_includefield_comma_lists_and_repeats():
    query = parse_query(
        [("includefield", "PatientAge, 00081030"), ("includefield", "StudyDescription,,")], STUDY
    )
    assert query.include == {PATIENT_AGE, STUDY_DESCRIPTION}
    assert not query.include_all
    assert query.conditions == {}


def test_includefield_all():
    query = parse_query([("includefield", "all")], STUDY)
    assert query.include_all
    assert query.include == set()
    both = parse_query([("includefield", "PatientAge,all")], STUDY)
    assert both.include_all and both.include == {PATIENT_AGE}


def test_includefield_of_unknown_keyword_is_a_query_error():
    with pytest.raises(QueryError, match="'Nope'"):
        parse_query([("includefield", "PatientAge,Nope")], STUDY)


def test_limit_and_offset():
    query = parse_query([("limit", "25"), ("offset", "50")], STUDY)
    assert (query.limit, query.offset) == (25, 50)
    default = parse_query([], STUDY)
    assert (default.limit, default.offset) == (None, 0)
    assert parse_query([("limit", "0")], STUDY).limit == 0
    assert parse_query([("offset", "999999999")], STUDY).offset == 999_999_999


@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize(
    "value",
    [
        "",
        "-1",
        "+1",
        "1.0",
        "1e3",
        "abc",
        " 1",
        "1000000000",
        pytest.param(
            "\u00b2",
            id="superscript-two",
        ),
        pytest.param(
            "\u0663",
            id="arabic-indic-three",
        ),
    ],
)
def test_bad_limit_or_offset_is_a_query_error(name, value):
    with pytest.raises(QueryError, match=name):
        parse_query([(name, value)], STUDY)


@pytest.mark.parametrize("value", ["maybe", "TRUE", "1", ""])
def test_fuzzymatching_must_be_true_or_false(value):
    with pytest.raises(QueryError, match="fuzzymatching"):
        parse_query([("fuzzymatching", value)], STUDY)


def test_fuzzymatching_makes_text_matching_case_insensitive_whatever_the_order():
    value = "Chest CT"
    strict = parse_query([("StudyDescription", "chest ct")], STUDY)
    assert not accepts(strict.conditions[STUDY_DESCRIPTION], value)
    for params in (
        [("StudyDescription", "chest ct"), ("fuzzymatching", "true")],
        [("fuzzymatching", "true"), ("StudyDescription", "chest ct")],
    ):
        query = parse_query(params, STUDY)
        assert query.fuzzy
        assert accepts(query.conditions[STUDY_DESCRIPTION], value)


def _fuzzy(value: str):
    return parse_query([("PatientName", value), ("fuzzymatching", "true")], STUDY).conditions[
        PATIENT_NAME
    ]


@pytest.mark.parametrize(
    ("value", "matching", "not_matching"),
    [
        ("john", ["Doe^John", "DOE^JOHNNY", "Johnson^Al", "Doe^Mary John"], ["Doe^Jane", "Ojohn"]),
        ("doe jo", ["Doe^John", "Jones^Doe"], ["Doe^Mary", "Do^John"]),
        ("DOE^J", ["Doe^Jane", "Doe^John"], ["Doe"]),
        ("smith-j", ["Smith-Jones^Ann", "Smith^Jo"], ["Smith^Ann"]),
        ("\u5c71", ["Yamada^Tarou=\u5c71\u7530^\u592a\u90ce"], ["Yamada^Tarou"]),
    ],
)
def test_fuzzymatching_of_person_names_matches_word_prefixes_in_any_case(
    value, matching, not_matching
):
    """PS3.18 8.3.4.2: each word of the value begins a word of the name, in any case."""
    condition = _fuzzy(value)
    assert isinstance(condition, qido.FuzzyName)
    for name in matching:
        alphabetic, _, ideographic = name.partition("=")
        assert accepts(condition, person(alphabetic, ideographic or None)), name
    for name in not_matching:
        assert not accepts(condition, person(name)), name


def test_a_person_name_matches_by_any_of_its_component_groups():
    """PS3.4 C.2.2.2: matching on PN is on each component group (PS3.18 F.2.2 names them)."""
    condition = parse_query([("PatientName", "山田*")], STUDY).conditions[PATIENT_NAME]
    assert accepts(condition, person("Yamada^Tarou", "山田^太郎"))
    assert not accepts(condition, person("Yamada^Tarou"))
    assert accepts(Universal(), {})  # present without a value: still a match for "*"
    assert not accepts(condition, {})


def test_without_fuzzymatching_a_name_matches_whole():
    condition = parse_query([("PatientName", "john")], STUDY).conditions[PATIENT_NAME]
    assert not accepts(condition, person("Doe^John"))
    false = parse_query([("PatientName", "john"), ("fuzzymatching", "false")], STUDY)
    assert not accepts(false.conditions[PATIENT_NAME], person("Doe^John"))


def test_fuzzymatching_keeps_wildcards_and_leaves_other_attributes_alone():
    assert isinstance(_fuzzy("jo*"), Wildcard)
    assert accepts(_fuzzy("jo*"), person("John^Doe"))
    assert not accepts(_fuzzy("jo*"), person("Doe^John"))
    query = parse_query([("StudyDescription", "chest"), ("fuzzymatching", "true")], STUDY)
    assert not accepts(query.conditions[STUDY_DESCRIPTION], "Chest CT")  # not a name: whole


def test_cfind_matches_names_as_before_whatever_qido_does_with_fuzzymatching():
    """C-FIND shares the matcher; fuzzy semantic matching is an extended negotiation there
    (PS3.4 C.4.1.3.1.1) that the SCP does not offer, so a name matches whole."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = "john"
    find = translate(identifier, STUDY_ROOT)
    assert not find.query.fuzzy
    assert not accepts(find.query.conditions[PATIENT_NAME], person("Doe^John"))


@pytest.mark.parametrize(
    ("level", "keyword"),
    [(STUDY, "Modality"), (STUDY, "SOPInstanceUID"), (SERIES, "SOPInstanceUID")],
)
def test_attributes_of_lower_levels_can_be_matched(level, keyword):
    """A study or series matches when one of its instances does (see test_qido_search)."""
    assert len(parse_query([(keyword, "1")], level).conditions) == 1


@pytest.mark.parametrize(
    ("level", "keyword", "value"),
    [
        (SERIES, "PatientName", "Doe"),
        (SERIES, "Modality", "CT"),
        (SERIES, "NumberOfSeriesRelatedInstances", "1"),
        (INSTANCE, "StudyDate", "20200101"),
        (INSTANCE, "Modality", "CT"),
        (INSTANCE, "InstanceNumber", "1"),
        (STUDY, "ModalitiesInStudy", "CT"),
        (STUDY, "NumberOfStudyRelatedInstances", "1"),
    ],
)
def test_attributes_of_the_level_and_above_can_be_matched(level, keyword, value):
    assert len(parse_query([(keyword, value)], level).conditions) == 1


def test_value_longer_than_1024_characters_is_a_query_error():
    with pytest.raises(QueryError, match="longer than 1024"):
        parse_query([("PatientName", "a" * 1025)], STUDY)
    assert parse_query([("PatientName", "a" * 1024)], STUDY).conditions


# QIDO: matching types -------------------------------------------------------------------


def values(*items):
    """An attribute's values as the index holds them and ``accepts`` takes them: one value as
    itself, several as a tuple."""
    return items[0] if len(items) == 1 else items


def person(alphabetic: str, ideographic: str | None = None) -> dict:
    """A PN value: its component groups."""
    value = {"Alphabetic": alphabetic}
    if ideographic:
        value["Ideographic"] = ideographic
    return value


@pytest.mark.parametrize("value", ["", "*"])
def test_universal_matching_matches_everything_even_absent_attributes(value):
    condition = parse_condition(PATIENT_NAME, value)
    assert isinstance(condition, Universal)
    assert accepts(condition, None)
    assert accepts(condition, ())  # present, no value
    assert accepts(condition, person("Doe^John"))


def test_single_value_matching_is_exact_for_codes():
    condition = parse_condition(MODALITY, "CT")
    assert condition == SingleValue("CT")
    assert accepts(condition, values("CT"))
    assert not accepts(condition, values("ct"))
    assert not accepts(condition, values("CTX"))
    assert not accepts(condition, ())
    assert not accepts(condition, None)


def test_single_value_matching_of_person_names_ignores_case():
    condition = parse_condition(PATIENT_NAME, "doe^JOHN")
    assert accepts(condition, person("Doe^John"))
    assert not accepts(condition, person("Doe^Johnny"))
    assert accepts(parse_condition(PATIENT_NAME, "\u5c71\u7530"), person("Yamada", "\u5c71\u7530"))


def test_numbers_match_their_text():
    assert accepts(parse_condition(INSTANCE_NUMBER, "3"), values(3))
    assert accepts(parse_condition(STUDY_INSTANCES, "12"), values(12.0))
    assert not accepts(parse_condition(INSTANCE_NUMBER, "3"), values(30))


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("Doe*", ["Doe^John", "Doe", "doe^jane"], ["John^Doe", "Do"]),
        ("*John", ["Doe^John", "John"], ["Doe^Johnny"]),
        ("D?e*", ["Doe^John", "Dxe"], ["De^John", "Dooe"]),
        ("?", ["X"], ["", "XY"]),
        ("a.c*", ["a.c", "A.C^D"], ["abc", "a-c"]),  # regex characters are literal
        ("(x)[y]*", ["(x)[y]", "(X)[Y]z"], ["xy"]),
        ("Line*", ["Line\nbreak"], []),
    ],
)
def test_wildcard_matching(pattern, matching, not_matching):
    condition = parse_condition(PATIENT_NAME, pattern)
    assert isinstance(condition, Wildcard)
    for name in matching:
        assert accepts(condition, person(name)), name
    for name in not_matching:
        assert not accepts(condition, person(name)), name


def test_wildcard_matching_of_codes_is_case_sensitive():
    condition = parse_condition(STUDY_DESCRIPTION, "Chest*")
    assert accepts(condition, values("Chest CT"))
    assert not accepts(condition, values("chest CT"))


@pytest.mark.parametrize("value", ["1.2.3\\4.5.6", "1.2.3,4.5.6", "1.2.3,,4.5.6\\", "4.5.6,1.2.3"])
def test_uid_list_matching_with_backslashes_and_commas(value):
    condition = parse_condition(STUDY_UID, value)
    assert condition == ValueList(frozenset({"1.2.3", "4.5.6"}))
    assert accepts(condition, values("4.5.6"))
    assert accepts(condition, values("1.2.3"))
    assert not accepts(condition, values("1.2.3.4"))


def test_single_uid_is_a_list_of_one():
    assert parse_condition(SOP_UID, "1.2.3") == ValueList(frozenset({"1.2.3"}))


@pytest.mark.parametrize("value", ["1.2.abc", "1.2.3,1.02", "1.2.*", "1.2.3\\x"])
def test_malformed_uid_in_a_uid_list_is_a_query_error(value):
    with pytest.raises(QueryError, match="not a valid DICOM UID"):
        parse_condition(SERIES_UID, value)


def test_backslash_list_of_codes_matches_any():
    condition = parse_condition(MODALITIES_IN_STUDY, "CT\\MR")
    assert condition == ValueList(frozenset({"CT", "MR"}))
    assert accepts(condition, values("PT", "MR"))
    assert not accepts(condition, values("PT", "US"))


def test_multi_valued_attribute_matches_when_any_value_matches():
    modalities = values("CT", "MR", "SR")
    assert accepts(parse_condition(MODALITIES_IN_STUDY, "MR"), modalities)
    assert accepts(parse_condition(MODALITIES_IN_STUDY, "S*"), modalities)
    assert not accepts(parse_condition(MODALITIES_IN_STUDY, "US"), modalities)
    query = parse_query([("ModalitiesInStudy", "SR")], STUDY)
    assert accepts(query.conditions[MODALITIES_IN_STUDY], modalities)


@pytest.mark.parametrize(
    ("value", "matching", "not_matching"),
    [
        ("20200101-20201231", ["20200101", "20200615", "20201231"], ["20191231", "20210101"]),
        ("20200101-", ["20200101", "29991231"], ["20191231"]),
        ("-20201231", ["19000101", "20201231"], ["20210101"]),
        ("20200615", ["20200615"], ["20200614", "20200616"]),
        ("20200615-20200615", ["20200615"], ["20200614", "20200616"]),
    ],
)
def test_date_matching(value, matching, not_matching):
    condition = parse_condition(STUDY_DATE, value)
    assert accepts(condition, values(*not_matching, *matching))
    for date in matching:
        assert accepts(condition, values(date)), date
    for date in not_matching:
        assert not accepts(condition, values(date)), date
    assert not accepts(condition, None)


def test_open_date_ranges_are_ranges_with_one_end():
    assert isinstance(parse_condition(STUDY_DATE, "20200101-"), Range)
    assert parse_condition(STUDY_DATE, "20200101-").high is None
    assert parse_condition(STUDY_DATE, "-20200101").low is None


@pytest.mark.parametrize(
    ("value", "matching", "not_matching"),
    [
        ("0800-1730", ["080000", "1200", "173000", "173059.999999"], ["075959", "173100"]),
        ("1200-", ["120000", "235959"], ["115959.999"]),
        ("-12", ["000000", "125959.999999"], ["130000"]),
        ("10", ["10", "103000", "105959.9"], ["095959", "110000"]),
        ("1030", ["103000.5"], ["103100"]),
    ],
)
def test_time_matching(value, matching, not_matching):
    condition = parse_condition(STUDY_TIME, value)
    assert isinstance(condition, Range)
    for time in matching:
        assert accepts(condition, values(time)), time
    for time in not_matching:
        assert not accepts(condition, values(time)), time


@pytest.mark.parametrize(
    ("tag", "value", "message"),
    [
        (STUDY_DATE, "2020-01", "is not a DA value"),
        (STUDY_DATE, "2020", "is not a DA value"),
        (STUDY_DATE, "20200101-2020", "is not a DA value"),
        (STUDY_DATE, "2020010a", "is not a DA value"),
        (STUDY_DATE, "-", "at least one end"),
        (STUDY_DATE, "20201231-20200101", "ends before it starts"),
        (STUDY_TIME, "12:00", "is not a TM value"),
        (STUDY_TIME, "1", "is not a TM value"),
        (STUDY_TIME, "1730-0800", "ends before it starts"),
        (STUDY_TIME, "12*", "is not a TM value"),
    ],
)
def test_malformed_dates_and_times_are_query_errors(tag, value, message):
    with pytest.raises(QueryError, match=message):
        parse_condition(tag, value)


# QIDO: what a result carries --------------------------------------------------------------


def test_study_results_carry_the_study_defaults():
    fields = result_fields(parse_query([], STUDY), ())
    for tag in (STUDY_UID, PATIENT_NAME, STUDY_DATE, MODALITIES_IN_STUDY, RETRIEVE_URL):
        assert tag in fields
    assert STUDY_INSTANCES in fields
    assert MODALITY not in fields and SERIES_UID not in fields
    assert len(fields) == len(set(fields))


def test_series_results_carry_study_attributes_only_when_the_study_is_open():
    within_study = result_fields(parse_query([], SERIES), ())
    everywhere = result_fields(parse_query([], SERIES), (STUDY,))
    for fields in (within_study, everywhere):
        assert {SERIES_UID, MODALITY, SERIES_INSTANCES, STUDY_UID, RETRIEVE_URL} <= set(fields)
    assert PATIENT_NAME not in within_study
    assert PATIENT_NAME in everywhere and MODALITIES_IN_STUDY in everywhere


def test_instance_results():
    fields = result_fields(parse_query([], INSTANCE), ())
    assert {SOP_UID, "00080016", INSTANCE_NUMBER, STUDY_UID, SERIES_UID} <= set(fields)
    assert MODALITY not in fields
    everywhere = result_fields(parse_query([], INSTANCE), (STUDY, SERIES))
    assert {MODALITY, PATIENT_NAME} <= set(everywhere)


def test_results_carry_matched_and_included_attributes_once():
    query = parse_query(
        [("PatientAge", "040Y"), ("includefield", "StudyDescription,PatientName")], STUDY
    )
    fields = result_fields(query, ())
    assert PATIENT_AGE in fields and STUDY_DESCRIPTION in fields
    assert fields.count(PATIENT_NAME) == 1
    assert len(fields) == len(set(fields))


def test_includefield_all_returns_every_searchable_attribute():
    fields = result_fields(parse_query([("includefield", "all")], SERIES), ())
    assert set(qido.searchable(SERIES)) <= set(fields)
    assert PATIENT_AGE in fields


# frame lists ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("1", [1]),
        ("3,1,2", [3, 1, 2]),
        ("2,2,1,2", [2, 2, 1, 2]),
        ("999999999", [999_999_999]),
        ("0001", [1]),
    ],
)
def test_frame_lists(text, numbers):
    assert parse_frame_list(text) == numbers


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "1,0",
        ",",
        "1,,2",
        ",1",
        "1,",
        "a",
        "1a",
        "-1",
        "+1",
        "1.0",
        "0x10",
        "1 2",
        "1;2",
        "1234567890",
        pytest.param(
            "\u00b2",
            id="superscript-two",
        ),
        pytest.param(
            "\u0661",
            id="arabic-indic-one",
        ),
    ],
)
def test_malformed_frame_lists(text):
    with pytest.raises(FrameListError, match="frame numbers from 1"):
        parse_frame_list(text)


def test_frame_list_limit():
    assert parse_frame_list("1,2,3", limit=3) == [1, 2, 3]
    with pytest.raises(FrameListError, match="at most 2 frames"):
        parse_frame_list("1,2,3", limit=2)


@given(st.lists(st.integers(min_value=1, max_value=999_999_999), min_size=1, max_size=50))
def test_frame_list_round_trip(numbers):
    assert parse_frame_list(",".join(map(str, numbers))) == numbers


# media ranges ---------------------------------------------------------------------------


def test_quoted_and_unquoted_parameters():
    quoted = parse_media_ranges(
        f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}'
    )
    unquoted = parse_media_ranges(
        f"multipart/related;type=application/dicom;transfer-syntax={EXPLICIT}"
    )
    expected = [MediaRange("multipart/related", {"type": DICOM, "transfer-syntax": EXPLICIT}, 1.0)]
    assert quoted == unquoted == expected


def test_duplicate_transfer_syntax_parameters_as_ohif_sends_them():
    (media,) = parse_media_ranges(
        "multipart/related; type=application/octet-stream; transfer-syntax=*; transfer-syntax=*"
    )
    assert media.type == "multipart/related"
    assert media.params == {"type": OCTET_STREAM, "transfer-syntax": "*"}


def test_first_of_repeated_parameters_wins():
    (media,) = parse_media_ranges(f"a/b; transfer-syntax={EXPLICIT}; Transfer-Syntax=*")
    assert media.params == {"transfer-syntax": EXPLICIT}


def test_several_ranges_with_q_values():
    ranges = parse_media_ranges(
        'multipart/related; type="application/dicom"; q=0.5, application/dicom;q=0.9 ,*/*;q=0.1'
    )
    assert [(media.type, media.q) for media in ranges] == [
        ("multipart/related", 0.5),
        (DICOM, 0.9),
        ("*/*", 0.1),
    ]
    assert ranges[0].params == {"type": DICOM}


def test_quoted_values_may_hold_commas_semicolons_and_escaped_quotes():
    ranges = parse_media_ranges('a/b; x="1,2;3"; y="say \\"hi\\"", c/d')
    assert [media.type for media in ranges] == ["a/b", "c/d"]
    assert ranges[0].params == {"x": "1,2;3", "y": 'say "hi"'}


def test_types_and_parameter_names_are_lower_cased_values_are_not():
    (media,) = parse_media_ranges('Multipart/Related; TYPE="Application/Dicom"; Q=0.3')
    assert media.type == "multipart/related"
    assert media.params == {"type": "Application/Dicom"}
    assert media.q == 0.3


@pytest.mark.parametrize(
    ("text", "q"), [("2", 1.0), ("-1", 0.0), ("abc", 1.0), ("0", 0.0), ("0.001", 0.001)]
)
def test_q_values_are_clamped(text, q):
    assert parse_media_ranges(f"a/b;q={text}")[0].q == q


def test_q_value_nan_is_clamped():
    q = parse_media_ranges("a/b;q=nan")[0].q
    assert 0.0 <= q <= 1.0


@pytest.mark.parametrize("header", ["", " ", ",", ", ,", '"'])
def test_empty_headers_have_no_ranges(header):
    assert parse_media_ranges(header) == []


def test_star_star():
    assert parse_media_ranges("*/*") == [MediaRange("*/*")]


@pytest.mark.parametrize("header", [";", ";;", "a/b,;", ",;,"])
def test_ranges_of_only_semicolons_are_ignored(header):
    ranges = parse_media_ranges(header)
    assert all(media.type for media in ranges)


@given(st.text())
@example(";")
def test_parse_media_ranges_never_raises(header):
    for media in parse_media_ranges(header):
        assert media.type
        assert media.type == media.type.lower()
        assert all(name == name.lower() for name in media.params)


@given(st.text(alphabet=st.characters(exclude_characters=";"), max_size=200))
def test_parse_media_ranges_without_semicolons_never_raises(header):
    for media in parse_media_ranges(header):
        assert media.type
        assert media.type == media.type.lower()


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+-.", min_size=1, max_size=12)
VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=20
)


@st.composite
def media_ranges(draw):
    media_type = draw(TOKEN) + "/" + draw(TOKEN)
    names = draw(st.lists(TOKEN.filter(lambda n: n != "q"), unique=True, max_size=4))
    params = {name: draw(VALUE) for name in names}
    q = draw(st.sampled_from([None, 0.0, 0.25, 0.5, 1.0]))
    return media_type, params, q


def _format(media_type: str, params: dict[str, str], q: float | None) -> str:
    parts = [media_type]
    for name, value in params.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'{name}="{escaped}"')
    if q is not None:
        parts.append(f"q={q}")
    return "; ".join(parts)


@given(st.lists(media_ranges(), min_size=1, max_size=4))
def test_formatted_ranges_parse_back(ranges):
    header = ", ".join(_format(*media) for media in ranges)
    parsed = parse_media_ranges(header)
    assert [(m.type, m.params, m.q) for m in parsed] == [
        (media_type, params, 1.0 if q is None else q) for media_type, params, q in ranges
    ]


# choosing a representation ---------------------------------------------------------------

INSTANCE_OFFERS = [
    Offer(DICOM, EXPLICIT),
    Offer(DICOM, AS_STORED),
    Offer(DICOM, EXPLICIT, multipart=False),
    Offer(DICOM, AS_STORED, multipart=False),
]
FRAME_OFFERS = [
    Offer(OCTET_STREAM, EXPLICIT),
    Offer(OCTET_STREAM, AS_STORED),
    Offer(OCTET_STREAM, EXPLICIT, multipart=False),
    Offer(OCTET_STREAM, AS_STORED, multipart=False),
]
METADATA_OFFERS = [Offer(DICOM_JSON, multipart=False), Offer("application/json", multipart=False)]


def choose_for(accept: str | None, offers: list[Offer]) -> Offer:
    headers = {} if accept is None else {"Accept": accept}
    return choose(make_mocked_request("GET", "/", headers=headers), offers)


@pytest.mark.parametrize("accept", [None, "", "*/*", "*", "*/*; q=0.8"])
def test_missing_accept_or_anything_gets_the_first_offer(accept):
    assert choose_for(accept, INSTANCE_OFFERS) is INSTANCE_OFFERS[0]
    assert choose_for(accept, METADATA_OFFERS) is METADATA_OFFERS[0]


def test_ohif_frame_request_gets_frames_as_stored():
    accept = (
        "multipart/related; type=application/octet-stream; transfer-syntax=*; transfer-syntax=*"
    )
    assert choose_for(accept, FRAME_OFFERS) == Offer(OCTET_STREAM, AS_STORED)


def test_multipart_without_transfer_syntax_asks_for_the_default():
    assert choose_for('multipart/related; type="application/dicom"', INSTANCE_OFFERS) == Offer(
        DICOM, EXPLICIT
    )
    assert choose_for("multipart/related", INSTANCE_OFFERS) == Offer(DICOM, EXPLICIT)


def test_multipart_with_type_in_other_case():
    accept = 'multipart/related; type="Application/DICOM"; transfer-syntax=*'
    assert choose_for(accept, INSTANCE_OFFERS) == Offer(DICOM, AS_STORED)


def test_single_part_request():
    assert choose_for(f"application/dicom; transfer-syntax={EXPLICIT}", INSTANCE_OFFERS) == Offer(
        DICOM, EXPLICIT, multipart=False
    )
    assert choose_for("application/dicom", INSTANCE_OFFERS) == Offer(
        DICOM, EXPLICIT, multipart=False
    )
    assert choose_for("application/*", METADATA_OFFERS) == METADATA_OFFERS[0]


def test_multipart_star_gets_the_first_multipart_offer():
    offers = [Offer(DICOM, EXPLICIT, multipart=False), Offer(DICOM, EXPLICIT)]
    assert choose_for("multipart/*", offers) is offers[1]


def test_the_client_preference_wins_over_the_server_order():
    accept = "application/dicom+json; q=0.2, application/json; q=0.9"
    assert choose_for(accept, METADATA_OFFERS) == Offer("application/json", multipart=False)
    accept = "application/json;q=0.5, application/dicom+json"
    assert choose_for(accept, METADATA_OFFERS) == Offer(DICOM_JSON, multipart=False)


def test_equal_q_values_keep_the_client_order():
    accept = "application/json, application/dicom+json"
    assert choose_for(accept, METADATA_OFFERS) == Offer("application/json", multipart=False)


def test_a_later_acceptable_range_is_used_when_the_first_cannot_be_served():
    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}, */*;q=0.1'
    )
    assert choose_for(accept, INSTANCE_OFFERS) is INSTANCE_OFFERS[0]


@pytest.mark.parametrize(
    ("accept", "offers"),
    [
        (
            f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}',
            INSTANCE_OFFERS,
        ),
        ("application/dicom+xml", METADATA_OFFERS),
        ("application/dicom+json;q=0, application/json;q=0", METADATA_OFFERS),
        ("*/*;q=0", METADATA_OFFERS),
        ("image/png", INSTANCE_OFFERS),
        ('multipart/related; type="application/octet-stream"', INSTANCE_OFFERS),
        ("application/dicom", [Offer(DICOM, EXPLICIT)]),
        ("multipart/*", METADATA_OFFERS),
    ],
)
def test_nothing_acceptable_is_406_listing_the_offers(accept, offers):
    with pytest.raises(web.HTTPNotAcceptable) as raised:
        choose_for(accept, offers)
    text = raised.value.text
    assert accept in text
    for offer in offers:
        assert str(offer) in text


def test_offers_describe_themselves():
    assert str(Offer(DICOM, EXPLICIT)) == (
        f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}'
    )
    assert str(Offer(DICOM_JSON, multipart=False)) == DICOM_JSON
    assert str(Offer(OCTET_STREAM, "*", multipart=False)) == (
        "application/octet-stream; transfer-syntax=*"
    )
