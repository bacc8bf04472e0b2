"""Which stored instances a C-GET or C-MOVE identifier names.

A retrieve names instances by their unique keys only (PS3.4 C.4.2.2 and C.4.3.2, the
hierarchical baseline): the Query/Retrieve Level, the single unique key of each level above
it, and a list of unique keys at that level. The Study Root models have no PATIENT level
(PS3.4 C.6.2); the Patient Root models name a patient by Patient ID (C.6.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from localdicom.catalog import Catalog, InstanceRecord, StudyRecord
from localdicom.dicom.qido import parse_query
from localdicom.dicom.uids import is_valid_uid

PATIENT_ROOT = frozenset(
    {PatientRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelMove}
)
#: The unique key of each level, top down (PS3.4 C.6.1 and C.6.2).
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
LEVELS = tuple(UNIQUE_KEYS)
SOP_CLASS, PATIENT_ID = "00080016", "00100020"


class IdentifierError(ValueError):
    """An identifier that does not name instances the way its model says (status A900)."""


@dataclass(frozen=True)
class Keys:
    """The unique keys of a retrieve: one value per level above ``level``, a list at it."""

    level: str
    patient: str | None = None
    studies: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    sops: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    """One stored instance to send, with what choosing a presentation context needs."""

    sop_class: str
    sop: str
    transfer_syntax: str
    path: Path


def retrieve_keys(identifier: Dataset, model: str) -> Keys:
    """The unique keys of a C-GET/C-MOVE identifier, or :class:`IdentifierError`."""
    try:
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        if level not in LEVELS or (level == "PATIENT" and model not in PATIENT_ROOT):
            raise IdentifierError(f"Query/Retrieve Level {level!r} is not one of this model")
        if level == "PATIENT":
            return Keys(level, patient=_single(identifier, "PatientID"))
        # STUDY, SERIES, IMAGE: the UIDs from the study down to this level, a list at it
        keywords = [UNIQUE_KEYS[each] for each in LEVELS[1 : LEVELS.index(level) + 1]]
        values = {kw: _uids(identifier, kw, many=kw == keywords[-1]) for kw in keywords}
    except IdentifierError:
        raise
    except Exception as exc:  # pydicom decodes lazily: a broken element raises on access
        raise IdentifierError(f"unreadable identifier: {exc}") from exc
    return Keys(
        level,
        studies=values.get("StudyInstanceUID", ()),
        series=values.get("SeriesInstanceUID", ()),
        sops=values.get("SOPInstanceUID", ()),
    )


def _single(identifier: Dataset, keyword: str) -> str:
    value = str(identifier.get(keyword, "") or "").strip()
    if not value or "\\" in value or len(value) > 64:  # LO: 64 characters (PS3.5 6.2)
        raise IdentifierError(f"{keyword} must hold one value")
    return value


def _uids(identifier: Dataset, keyword: str, *, many: bool) -> tuple[str, ...]:
    value = identifier.get(keyword)
    items = [] if value is None else [value] if isinstance(value, str) else list(value)
    uids = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    if not uids or (len(uids) > 1 and not many):
        raise IdentifierError(f"{keyword} must hold {'UIDs' if many else 'one UID'}")
    if bad := [uid for uid in uids if not is_valid_uid(uid)]:
        raise IdentifierError(f"{keyword} {bad[0][:40]!r} is not a UID")
    return uids


async def select(catalog: Catalog, keys: Keys) -> list[Match]:
    """The stored instances the keys name, in the archive's stable order, each once (run on
    the Catalog's loop)."""
    records: list[InstanceRecord] = []
    if keys.level == "PATIENT":
        for study in _studies_of_patient(catalog, keys.patient or ""):
            records += catalog.instances_of(study.uid)
    elif keys.level == "STUDY":
        for study_uid in keys.studies:
            records += catalog.instances_of(study_uid)
    elif keys.level == "SERIES":
        for series_uid in keys.series:
            records += catalog.instances_of(keys.studies[0], series_uid)
    else:
        study_uid, series_uid = keys.studies[0], keys.series[0]
        found = (catalog.instance(study_uid, series_uid, sop) for sop in keys.sops)
        records = [record for record in found if record is not None]
    unique = {record.sop: record for record in records}
    return [_match(catalog, record) for record in unique.values()]


def _studies_of_patient(catalog: Catalog, patient_id: str) -> list[StudyRecord]:
    """Studies whose Patient ID is exactly ``patient_id`` (a retrieve key never matches by
    wildcard: PS3.4 C.2.2.2.1 single value matching)."""
    found = catalog.search(parse_query([("PatientID", patient_id)], "study"), None, None)
    return [
        study
        for study in found
        if isinstance(study, StudyRecord)
        and catalog.attributes(study, (PATIENT_ID,))[PATIENT_ID].get("Value") == [patient_id]
    ]


def _match(catalog: Catalog, record: InstanceRecord) -> Match:
    sop_class = catalog.attributes(record, (SOP_CLASS,))[SOP_CLASS].get("Value", [""])[0]
    return Match(sop_class, record.sop, record.transfer_syntax, catalog.path_of(record))
