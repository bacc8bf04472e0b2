"""QIDO-RS query semantics (PS3.18 8.3.4 and 10.6, PS3.4 C.2.2.2): pure, no HTTP, no disk.

A query string becomes a :class:`Query` of attribute conditions; each condition is one of the
matching types of PS3.4 C.2.2.2 (universal, single value, UID list, wildcard, range), spelled
out as a small class in the way pynetdicom's qrscp spells them out as functions. Every search
applies a condition to a value through :func:`accepts`, the one matcher.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from localdicom.dicom.dictionary import dictionary_VR, keyword_for_tag, tag_for_keyword
from localdicom.dicom.uids import InvalidUID, check_uid

STUDY, SERIES, INSTANCE = "study", "series", "instance"
LEVELS = (STUDY, SERIES, INSTANCE)


#: Attributes kept in memory per level: what PS3.18 Tables 10.6.1-5 and 10.6.3-3 ask a server
#: to match and return, plus the descriptive attributes viewers' study lists show.
LEVEL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    STUDY: (
        "00080005",  # SpecificCharacterSet
        "00080020",  # StudyDate
        "00080030",  # StudyTime
        "00080050",  # AccessionNumber
        "00080090",  # ReferringPhysicianName
        "00080201",  # TimezoneOffsetFromUTC
        "00081030",  # StudyDescription
        "00100010",  # PatientName
        "00100020",  # PatientID
        "00100021",  # IssuerOfPatientID
        "00100030",  # PatientBirthDate
        "00100040",  # PatientSex
        "00101010",  # PatientAge
        "0020000D",  # StudyInstanceUID
        "00200010",  # StudyID
        "00080080",  # InstitutionName
    ),
    SERIES: (
        "00080060",  # Modality
        "0008103E",  # SeriesDescription
        "0020000E",  # SeriesInstanceUID
        "00200011",  # SeriesNumber
        "00080021",  # SeriesDate
        "00080031",  # SeriesTime
        "00180015",  # BodyPartExamined
        "00181030",  # ProtocolName
        "00200060",  # Laterality
        "00080070",  # Manufacturer
        "00400244",  # PerformedProcedureStepStartDate
        "00400245",  # PerformedProcedureStepStartTime
    ),
    INSTANCE: (
        "00080016",  # SOPClassUID
        "00080018",  # SOPInstanceUID
        "00200013",  # InstanceNumber
        "00080023",  # ContentDate
        "00080033",  # ContentTime
        "00200012",  # AcquisitionNumber
        "00080008",  # ImageType
        "00280010",  # Rows
        "00280011",  # Columns
        "00280100",  # BitsAllocated
        "00280008",  # NumberOfFrames
    ),
}

#: Attributes the server computes rather than copies (PS3.18 Table 10.6.3-3).
MODALITIES_IN_STUDY, STUDY_SERIES, STUDY_INSTANCES, SERIES_INSTANCES = (
    "00080061",  # ModalitiesInStudy
    "00201206",  # NumberOfStudyRelatedSeries
    "00201208",  # NumberOfStudyRelatedInstances
    "00201209",  # NumberOfSeriesRelatedInstances
)
RETRIEVE_URL = "00081190"  # RetrieveURL
INSTANCE_AVAILABILITY = "00080056"  # InstanceAvailability
COMPUTED: dict[str, tuple[str, ...]] = {
    STUDY: (MODALITIES_IN_STUDY, STUDY_SERIES, STUDY_INSTANCES),
    SERIES: (SERIES_INSTANCES,),
    INSTANCE: (),
}

#: Returned for every match at each level (PS3.18 Table 10.6.3-3), when present.
DEFAULT_RETURN: dict[str, tuple[str, ...]] = {
    STUDY: (
        "00080005",  # SpecificCharacterSet
        "00080020",  # StudyDate
        "00080030",  # StudyTime
        "00080050",  # AccessionNumber
        "00080056",  # InstanceAvailability
        "00080061",  # ModalitiesInStudy
        "00080090",  # ReferringPhysicianName
        "00080201",  # TimezoneOffsetFromUTC
        "00081190",  # RetrieveURL
        "00100010",  # PatientName
        "00100020",  # PatientID
        "00100030",  # PatientBirthDate
        "00100040",  # PatientSex
        "0020000D",  # StudyInstanceUID
        "00200010",  # StudyID
        "00201206",  # NumberOfStudyRelatedSeries
        "00201208",  # NumberOfStudyRelatedInstances
    ),
    SERIES: (
        "00080005",  # SpecificCharacterSet
        "00080060",  # Modality
        "00080201",  # TimezoneOffsetFromUTC
        "0008103E",  # SeriesDescription
        "00081190",  # RetrieveURL
        "0020000E",  # SeriesInstanceUID
        "00200011",  # SeriesNumber
        "00201209",  # NumberOfSeriesRelatedInstances
        "00400244",  # PerformedProcedureStepStartDate
        "00400245",  # PerformedProcedureStepStartTime
        "0020000D",  # StudyInstanceUID
    ),
    INSTANCE: (
        "00080005",  # SpecificCharacterSet
        "00080016",  # SOPClassUID
        "00080018",  # SOPInstanceUID
        "00080056",  # InstanceAvailability
        "00080201",  # TimezoneOffsetFromUTC
        "00081190",  # RetrieveURL
        "00200013",  # InstanceNumber
        "00280010",  # Rows
        "00280011",  # Columns
        "00280100",  # BitsAllocated
        "00280008",  # NumberOfFrames
        "0020000D",  # StudyInstanceUID
        "0020000E",  # SeriesInstanceUID
    ),
}

#: ``orderby`` is not PS3.18's: dcm4chee-arc's QIDO-RS extension, which sorts before paging.
CONTROL_PARAMETERS = frozenset({"includefield", "limit", "offset", "fuzzymatching", "orderby"})
#: Values no matching type applies to (PS3.4 C.2.2.2 defines none for them).
UNMATCHABLE_VRS = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW"})
NUMERIC_VRS = frozenset({"DS", "IS", "FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"})


class QueryError(ValueError):
    """A query parameter this server cannot honour; the message says which and why."""


# matching types (PS3.4 C.2.2.2) ------------------------------------------------------------


class Condition:
    """One attribute's matching rule, applied to an attribute's values as text."""

    def any_matches(self, texts: Iterable[str]) -> bool:
        """Whether any of the texts (PN: any component group) matches."""
        return any(self.matches_value(text) for text in texts)

    def matches_value(self, value: str) -> bool:
        raise NotImplementedError


class Universal(Condition):
    """An empty value: every entity matches, the attribute is returned."""

    def any_matches(self, texts: Iterable[str]) -> bool:
        return True

    def matches_value(self, value: str) -> bool:
        return True


@dataclass
class SingleValue(Condition):
    value: str
    case_insensitive: bool = False

    def matches_value(self, value: str) -> bool:
        if self.case_insensitive:
            return value.casefold() == self.value.casefold()
        return value == self.value


@dataclass
class ValueList(Condition):
    """UID list matching (PS3.4 C.2.2.2.2), and any backslash-separated list of values."""

    values: frozenset[str]

    def matches_value(self, value: str) -> bool:
        return value in self.values


@dataclass
class Number(Condition):
    """Single value matching of a number (DS, IS, FL, ...): by value, so that
    SliceThickness=5.0 finds a stored "5" or "5.000000" (their DICOM JSON is the number)."""

    value: float

    def matches_value(self, value: str) -> bool:
        return _is_number(value) and float(value) == self.value


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text) is not None


#: A decimal number as DS and IS write them (PS3.5 6.2), and as Python writes a float.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass
class Wildcard(Condition):
    pattern: re.Pattern[str]

    def matches_value(self, value: str) -> bool:
        return self.pattern.fullmatch(value) is not None


@dataclass
class FuzzyName(Condition):
    """``fuzzymatching=true`` on a person name (PS3.18 8.3.4.2 leaves how to the server):
    each word of the query, in any case, begins a word of one of the name's components, in
    any order; "john" finds "Doe^John", "doe jo" finds it too. Words are split at the
    component (^) and group (=) delimiters, spaces and punctuation."""

    words: tuple[str, ...]

    def matches_value(self, value: str) -> bool:
        name = _words(value)
        return all(any(word.startswith(part) for word in name) for part in self.words)


def _words(text: str) -> list[str]:
    return [word for word in _WORD_DELIMITERS.split(text.casefold()) if word]


_WORD_DELIMITERS = re.compile(r"[\W_]+")


@dataclass
class Range(Condition):
    """Date, time and datetime ranges, compared on values padded to the same precision."""

    low: str | None
    high: str | None

    def matches_value(self, value: str) -> bool:
        value = _pad(value.split("&")[0].split("+")[0])
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


# matching --------------------------------------------------------------------------------


def accepts(condition: Condition, value: Any) -> bool:
    """Whether an attribute's value matches ``condition``: the one matcher of every search.

    ``value`` is the attribute's value as the index holds it: None when the attribute is
    absent, () when it is present without a value, one value as itself, several as a tuple;
    each a str, an int, a float, or a PN value as a dict of its component groups.
    """
    if type(value) is str:  # the common case, spelled out: every search runs it per record
        return condition.matches_value(value)
    if type(value) is dict and value:  # a PN value: its groups are texts (PS3.18 F.2.2)
        for group in value.values():  # noqa: SIM110 (a loop: 0.23 against 0.8 us by texts)
            if condition.matches_value(group):
                return True
        return False
    return condition.any_matches(() if value is None else texts(value))


def json_value(element: dict[str, Any] | None) -> Any:
    """An attribute's DICOM JSON (PS3.18 F.2) as :func:`accepts` takes it: None when absent,
    () when empty, one value as itself, several as a tuple. An InlineBinary value (a private
    element read with implicit VR is UN) is taken as the text it holds."""
    if element is None:
        return None
    if "Value" in element:
        values = element["Value"]
    elif "InlineBinary" in element:
        text = base64.b64decode(element["InlineBinary"]).decode("latin-1")
        values = text.rstrip("\0 ").split("\\")
    else:
        return ()
    return values[0] if len(values) == 1 else tuple(values)


def texts(value: Any) -> Iterator[str]:
    """A value (as :func:`accepts` takes it, not None) as the texts matching compares: each
    value, each PN component group, a whole number without a fraction (12.0 as "12")."""
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, dict):
            yield from (str(group) for group in item.values())
        elif isinstance(item, int | float):
            yield str(int(item)) if float(item).is_integer() else str(item)
        else:
            yield str(item)


# query parsing ---------------------------------------------------------------------------


@dataclass
class Query:
    """A parsed QIDO-RS query at one level."""

    level: str
    conditions: dict[str, Condition] = field(default_factory=dict)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    #: ``orderby``: (tag, descending) pairs, the first the most significant.
    order: tuple[tuple[str, bool], ...] = ()


def parse_query(params: Iterable[tuple[str, str]], level: str) -> Query:
    """Turn query string pairs into a :class:`Query`, or raise :class:`QueryError`."""
    query = Query(level)
    values: dict[str, str] = {}
    for name, value in params:
        if name in CONTROL_PARAMETERS:
            _apply_control(query, name, value)
            continue
        tag = attribute_tag(name)
        if tag in values and _vr(tag) != "UI":
            raise QueryError(f"{name} is given more than once")
        values[tag] = values[tag] + "\\" + value if tag in values else value
    for tag, value in values.items():
        query.conditions[tag] = parse_condition(tag, value, query.fuzzy)
    return query


def _apply_control(query: Query, name: str, value: str) -> None:
    if name == "includefield":
        for item in filter(None, (part.strip() for part in value.split(","))):
            if item == "all":
                query.include_all = True
            else:
                query.include.add(attribute_tag(item))
    elif name == "orderby":
        query.order += parse_order(value)
    elif name == "fuzzymatching":
        if value not in ("true", "false"):
            raise QueryError(f"fuzzymatching must be true or false, not {value!r}")
        query.fuzzy = value == "true"
    else:
        number = _non_negative(name, value)
        if name == "limit":
            query.limit = number
        else:
            query.offset = number


def parse_order(value: str) -> tuple[tuple[str, bool], ...]:
    """``orderby=PatientName,-StudyDate``: attributes by keyword or tag, ``-`` for descending
    (dcm4chee-arc's spelling)."""
    order = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        descending = item.startswith("-")
        tag = attribute_tag(item.lstrip("-+"))
        if not UNMATCHABLE_VRS.isdisjoint(_vr(tag).split(" or ")):
            raise QueryError(f"orderby {item!r}: sequences and binary values have no order")
        order.append((tag, descending))
    return tuple(order)


def order_key(element: dict[str, Any] | None) -> tuple:
    """How a result's element sorts under ``orderby``: see :func:`value_order_key`."""
    return value_order_key(json_value(element))


def value_order_key(value: Any) -> tuple:
    """How a value (as :func:`accepts` takes it) sorts under ``orderby``: numbers by value,
    text (a person name's alphabetic group) without regard to case; ``(2,)`` for an absent
    or empty value, which the caller puts last in either direction."""
    item = value[0] if isinstance(value, tuple) and value else value
    if isinstance(item, dict):
        item = item.get("Alphabetic") or next(iter(item.values()), None)
    if isinstance(item, int | float) and not isinstance(item, bool):
        return (0, float(item))
    if item is None or item == () or item == "":
        return (2,)
    return (1, str(item).casefold())


def _non_negative(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise QueryError(f"{name} must be a whole number from 0 to 999999999, not {value!r}")
    return int(value)


@functools.lru_cache(maxsize=1024)  # queries repeat their few attribute names
def attribute_tag(name: str) -> str:
    """The 8-hex-digit tag for a keyword or tag given in a query (PS3.18 8.3.4.1)."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        tag = name.upper()
        if keyword_for_tag(int(tag, 16)) or int(tag[:4], 16) % 2:
            return tag
    elif (number := tag_for_keyword(name)) is not None:
        return f"{number:08X}"
    shown = name if len(name) <= 64 else name[:61] + "..."
    raise QueryError(f"{shown!r} is not a DICOM attribute keyword or tag, nor a QIDO parameter")


@functools.cache
def searchable(level: str) -> tuple[str, ...]:
    """The attributes memory holds for a record of ``level``: its own and those of the
    levels above (``includefield=all``; what C-FIND matches). A query may match on any
    attribute: those of lower levels and those memory does not hold too."""
    tags: list[str] = []
    for each in LEVELS[: LEVELS.index(level) + 1]:
        tags.extend(LEVEL_ATTRIBUTES[each])
        tags.extend(COMPUTED[each] if each in (level, STUDY) else ())
    return tuple(tags)


def parse_condition(tag: str, value: str, fuzzy: bool = False) -> Condition:
    """The matching type a value asks for, checked against the attribute's VR."""
    if len(value) > 1024:
        raise QueryError(f"the value for {tag} is longer than 1024 characters")
    vr = _vr(tag)
    if value == "" or value == "*":
        return Universal()
    if not UNMATCHABLE_VRS.isdisjoint(vr.split(" or ")):
        name = keyword_for_tag(int(tag, 16)) or tag
        raise QueryError(
            f"{name} ({vr}) cannot be matched on a value: sequences and binary values are only "
            f"returned (give it empty, {name}=, or with includefield)"
        )
    if vr == "UI":
        uids = [part for part in re.split(r"[\\,]", value) if part]
        try:
            return ValueList(frozenset(check_uid(uid) for uid in uids))
        except InvalidUID as exc:
            raise QueryError(str(exc)) from exc
    if vr in ("DA", "TM", "DT"):
        return _date_condition(tag, value, vr)
    if "\\" in value:
        return ValueList(frozenset(value.split("\\")))
    if vr in NUMERIC_VRS and _is_number(value):
        return Number(float(value))
    case_insensitive = vr == "PN" or fuzzy
    if vr == "PN" and fuzzy and "*" not in value and "?" not in value and _words(value):
        return FuzzyName(tuple(_words(value)))
    if "*" in value or "?" in value:
        regex = "".join(
            ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in value
        )
        flags = re.IGNORECASE if case_insensitive else 0
        return Wildcard(re.compile(regex, flags | re.DOTALL))
    return SingleValue(value, case_insensitive)


_FORMATS = {
    "DA": r"\d{8}",
    "TM": r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?",
    "DT": r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?",
}


def _date_condition(tag: str, value: str, vr: str) -> Condition:
    name = keyword_for_tag(int(tag, 16)) or tag
    low, dash, high = value.partition("-")
    for part in (low, high):
        if part and not re.fullmatch(_FORMATS[vr], part):
            raise QueryError(
                f"{name}={value!r} is not a {vr} value or range "
                f"(e.g. {'20200101-20201231' if vr == 'DA' else '0800-1730'}; PS3.18 8.3.4.1)"
            )
    if not dash:
        return SingleValue(low) if vr == "DA" else Range(_pad(low), _pad(low, high=True))
    if not low and not high:
        raise QueryError(f"{name}={value!r}: a range needs at least one end")
    low_key = _pad(low) if low else None
    high_key = _pad(high, high=True) if high else None
    if low_key and high_key and low_key > high_key:
        raise QueryError(f"{name}={value!r}: the range ends before it starts")
    return Range(low_key, high_key)


def _pad(value: str, high: bool = False) -> str:
    """Pad a partial date/time so that values of different precision compare correctly."""
    head, _, fraction = value.partition(".")
    return head + ("9" if high else "0") * (20 - len(head)) + "." + fraction.ljust(6, "0")


@functools.lru_cache(maxsize=1024)
def _vr(tag: str) -> str:
    try:
        return dictionary_VR(int(tag, 16))
    except KeyError:
        return "UN"


# results ---------------------------------------------------------------------------------


def result_fields(query: Query, scope_levels: tuple[str, ...]) -> list[str]:
    """Tags a result carries: the level's defaults, the matched keys and includefield.

    ``scope_levels`` are the higher levels not fixed by the URL (``/series`` searches every
    study, so study attributes are returned too; PS3.18 Table 10.6.3-2).
    """
    tags = list(DEFAULT_RETURN[query.level])
    for level in scope_levels:
        tags.extend(DEFAULT_RETURN[level])
    if query.include_all:
        tags.extend(searchable(query.level))
    tags.extend(query.conditions)
    tags.extend(sorted(query.include))
    return list(dict.fromkeys(tags))
