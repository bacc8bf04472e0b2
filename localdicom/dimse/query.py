"""C-FIND identifiers (PS3.4 C.4.1) as QIDO queries, and matches as C-FIND responses.

Pure, no network and no Catalog, so the translation is tested directly. Matching is QIDO's
own (:func:`localdicom.dicom.qido.parse_query`): the matching types of PS3.4 C.2.2.2 (single
value, UID list, wildcard, range, universal) and its case rules are one implementation for
both services. Keys the index cannot match at a level are returned without being matched,
as PS3.4 C.2.2.1.2 allows for optional keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from localdicom.dicom.qido import (
    COMPUTED,
    INSTANCE,
    LEVEL_ATTRIBUTES,
    LEVELS,
    SERIES,
    STUDY,
    STUDY_INSTANCES,
    STUDY_SERIES,
    Query,
    QueryError,
    parse_query,
    searchable,
)

PATIENT_ROOT, STUDY_ROOT = "Patient Root", "Study Root"
#: The levels of each information model, top down (PS3.4 C.6.1.1 and C.6.2.1).
MODEL_LEVELS = {
    PATIENT_ROOT: ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    STUDY_ROOT: ("STUDY", "SERIES", "IMAGE"),
}
#: The QIDO level searched for each C-FIND level; PATIENT searches studies and groups them.
QIDO_LEVEL = {"PATIENT": STUDY, "STUDY": STUDY, "SERIES": SERIES, "IMAGE": INSTANCE}

#: C-FIND statuses (PS3.4 C.4.1.1.4, Table C.4-1).
PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
#: Error Comment is LO: 64 characters at most (PS3.7 C.4.2, PS3.5 6.2).
ERROR_COMMENT_LENGTH = 64


def _tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


LEVEL_TAG, CHARSET_TAG, RETRIEVE_AE_TAG, AVAILABILITY_TAG = map(
    _tag, ("QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability")
)
PATIENT_ID, PATIENT_NAME = _tag("PatientID"), _tag("PatientName")
#: What a PATIENT level query matches on: the Patient module's attributes the index holds.
PATIENT_KEYS = frozenset(
    map(_tag, ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex"))
)
PATIENT_STUDIES, PATIENT_SERIES, PATIENT_INSTANCES = map(
    _tag,
    (
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    ),
)
#: Attributes memory holds or computes: absent there means absent in the instance, so only
#: the other keys need a sidecar read.
IN_MEMORY = frozenset(
    [PATIENT_STUDIES, PATIENT_SERIES, PATIENT_INSTANCES, AVAILABILITY_TAG]
    + [tag for level in LEVELS for tag in LEVEL_ATTRIBUTES[level] + COMPUTED[level]]
)
#: Keys every response carries, set here whatever the request gave (PS3.4 C.4.1.1.3.2).
OWN_KEYS = frozenset({LEVEL_TAG, CHARSET_TAG, RETRIEVE_AE_TAG})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"})


class Refused(Exception):
    """A C-FIND request this server answers with a failure status, and why."""

    def __init__(self, status: int, comment: str, offending: Iterable[int] = ()) -> None:
        super().__init__(comment)
        self.status = status
        self.offending = list(offending)

    def response(self) -> Dataset:
        """The failure response's status, Error Comment and Offending Element (PS3.7 C.4)."""
        answer = Dataset()
        answer.Status = self.status
        answer.ErrorComment = str(self)[:ERROR_COMMENT_LENGTH]
        if self.offending:
            answer.OffendingElement = self.offending
        return answer


@dataclass(frozen=True)
class FindQuery:
    """A C-FIND request as the index's search and the keys its responses carry."""

    level: str
    query: Query
    #: (tag, VR) of every key asked, but those set for every response (:data:`OWN_KEYS`).
    returned: tuple[tuple[str, str], ...]
    #: Keys given a value the index cannot match on at this level: returned, not matched.
    unmatched: tuple[str, ...] = field(default=())

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(tag for tag, _ in self.returned)

    @property
    def needs_sidecars(self) -> bool:
        return any(tag not in IN_MEMORY for tag in self.tags)


def translate(identifier: Dataset, model: str) -> FindQuery:
    """The search an Identifier asks for; raises :class:`Refused`."""
    level = query_level(identifier, model)
    matchable = PATIENT_KEYS if level == "PATIENT" else frozenset(searchable(QIDO_LEVEL[level]))
    pairs: list[tuple[str, str]] = []
    returned: list[tuple[str, str]] = []
    unmatched: list[str] = []
    for element in identifier:
        tag = f"{element.tag:08X}"
        if tag in OWN_KEYS or element.tag.group in (0x0000, 0x0002) or not element.tag.element:
            continue  # set for every response; command, file meta, group lengths: not keys
        returned.append((tag, element.VR))
        text = matching_text(element)
        if not text:  # universal matching (PS3.4 C.2.2.2.3), or a key that is only returned
            continue
        if tag in matchable:
            pairs.append((tag, text))
        else:
            unmatched.append(element.keyword or tag)
    try:
        query = parse_query(pairs, QIDO_LEVEL[level])
    except QueryError as exc:
        raise Refused(UNABLE_TO_PROCESS, str(exc)) from exc
    return FindQuery(level, query, tuple(returned), tuple(unmatched))


def query_level(identifier: Dataset, model: str) -> str:
    """The Query/Retrieve Level, one of the model's (PS3.4 C.4.1.1.3.1; A900 otherwise)."""
    levels = MODEL_LEVELS[model]
    level = identifier.get("QueryRetrieveLevel")
    if not isinstance(level, str) or level.strip() not in levels:
        shown = "none" if level in (None, "") else repr(level)[:20]
        raise Refused(
            IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            f"QueryRetrieveLevel {shown}: {model} has {'/'.join(levels)}",
            [int(LEVEL_TAG, 16)],
        )
    return level.strip()


def matching_text(element: DataElement) -> str | None:
    """A key's value as QIDO's matcher reads a query parameter: several values joined by
    backslashes (a UID list, PS3.4 C.2.2.2.2); "" for an empty key (universal matching);
    None for a key that can only be returned (a sequence, a binary value)."""
    if element.VR in BINARY_VRS:
        return None
    value = element.value
    if value is None or value == "":
        return ""
    values = list(value) if isinstance(value, MultiValue) else [value]
    return "\\".join(_person_name(item) if element.VR == "PN" else str(item) for item in values)


def _person_name(value: Any) -> str:
    """The first component group given: the index matches each group of a stored name, so
    "Yamada^Tarou=山田^太郎" is looked for as "Yamada^Tarou" (PS3.5 6.2.1)."""
    if not isinstance(value, PersonName):
        return str(value)
    return next((group for group in value.components if group), "")


# responses -------------------------------------------------------------------------------


def response(find: FindQuery, attributes: dict[str, Any], ae_title: str) -> dict[str, Any]:
    """The Identifier of one match, as DICOM JSON: exactly the keys asked, valued from
    ``attributes`` (the match's DICOM JSON) or zero-length where it has none, with the level,
    the AE title to retrieve from and the character set of its values (unicode: ISO_IR 192)."""
    elements = {tag: _element(attributes.get(tag), vr) for tag, vr in find.returned}
    if AVAILABILITY_TAG in elements:  # every stored instance is on line (PS3.4 C.4.1.1.3.2)
        elements[AVAILABILITY_TAG] = {"vr": "CS", "Value": ["ONLINE"]}
    elements[CHARSET_TAG] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    elements[LEVEL_TAG] = {"vr": "CS", "Value": [find.level]}
    elements[RETRIEVE_AE_TAG] = {"vr": "AE", "Value": [ae_title]}
    return elements


def _element(found: dict[str, Any] | None, vr: str) -> dict[str, Any]:
    if found is None or "BulkDataURI" in found:  # a large value does not belong in a query
        return {"vr": found["vr"] if found else _json_vr(vr)}
    return found


def _json_vr(vr: str) -> str:
    return vr.split(" or ")[0]


def patient_key(attributes: dict[str, Any]) -> tuple[str, str]:
    """What tells patients apart at the PATIENT level: their ID and name as stored."""
    return (_text(attributes.get(PATIENT_ID)), _text(attributes.get(PATIENT_NAME)))


def _text(element: dict[str, Any] | None) -> str:
    return repr(element.get("Value")) if element else ""


def patient_counts(studies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """NumberOfPatientRelatedStudies/Series/Instances of one patient, from the DICOM JSON of
    each of its studies' NumberOfStudyRelatedSeries and NumberOfStudyRelatedInstances."""
    series = sum(_number(study.get(STUDY_SERIES)) for study in studies)
    instances = sum(_number(study.get(STUDY_INSTANCES)) for study in studies)
    return {
        PATIENT_STUDIES: {"vr": "IS", "Value": [len(studies)]},
        PATIENT_SERIES: {"vr": "IS", "Value": [series]},
        PATIENT_INSTANCES: {"vr": "IS", "Value": [instances]},
    }


def _number(element: dict[str, Any] | None) -> int:
    return int(element["Value"][0]) if element and element.get("Value") else 0
