"""The in-memory index of studies, series and instances, rebuilt from the sidecars at start.

It holds per level only the attributes QIDO matches and returns (``LEVEL_ATTRIBUTES``), so a
query is answered from memory. Study and series attributes are taken from the first instance
stored for them. Mutations happen on the event loop thread only; readers never see a half
update.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from localdicom.archive import StoredInstance
from localdicom.dicom.qido import (
    INSTANCE,
    LEVEL_ATTRIBUTES,
    SERIES,
    STUDY,
    Query,
)

Attributes = dict[str, dict[str, Any]]


def _pick(metadata: Attributes, level: str) -> Attributes:
    return {tag: metadata[tag] for tag in LEVEL_ATTRIBUTES[level] if tag in metadata}


@dataclass
class InstanceRecord:
    study: str
    series: str
    sop: str
    transfer_syntax: str
    size: int
    digest: str
    attributes: Attributes
    #: Frames of pixel data; 0 for an instance without any (a report, a structure set).
    frame_count: int


@dataclass
class SeriesRecord:
    study: str
    uid: str
    attributes: Attributes
    instances: dict[str, InstanceRecord] = field(default_factory=dict)
    #: Changes whenever an instance is added or removed; names cached metadata (ETag).
    version: int = 0

    @property
    def modality(self) -> str | None:
        values = self.attributes.get("00080060", {}).get("Value")
        return values[0] if values else None


@dataclass
class StudyRecord:
    uid: str
    attributes: Attributes
    series: dict[str, SeriesRecord] = field(default_factory=dict)

    def instance_count(self) -> int:
        return sum(len(series.instances) for series in self.series.values())

    def modalities(self) -> list[str]:
        return sorted({m for s in self.series.values() if (m := s.modality)})


Record = StudyRecord | SeriesRecord | InstanceRecord


class Index:
    """Studies, series and instances by UID."""

    def __init__(self) -> None:
        self.studies: dict[str, StudyRecord] = {}
        self.series: dict[str, SeriesRecord] = {}
        self.instances: dict[str, InstanceRecord] = {}

    def add(self, stored: StoredInstance) -> InstanceRecord:
        """Add or replace an instance."""
        header = stored.header
        metadata = header.metadata
        self.remove_instance(header.sop_uid)
        study = self.studies.get(header.study_uid)
        if study is None:
            study = StudyRecord(header.study_uid, _pick(metadata, STUDY))
            self.studies[study.uid] = study
        series = study.series.get(header.series_uid)
        if series is None:
            series = SeriesRecord(study.uid, header.series_uid, _pick(metadata, SERIES))
            study.series[series.uid] = series
            self.series[series.uid] = series
        record = InstanceRecord(
            header.study_uid,
            header.series_uid,
            header.sop_uid,
            header.transfer_syntax,
            stored.size,
            stored.digest,
            _pick(metadata, INSTANCE),
            header.frame_count(),
        )
        series.instances[record.sop] = record
        series.version += 1
        self.instances[record.sop] = record
        return record

    def remove_instance(self, sop: str) -> InstanceRecord | None:
        record = self.instances.pop(sop, None)
        if record is None:
            return None
        series = self.series[record.series]
        del series.instances[sop]
        series.version += 1
        if not series.instances:
            self.remove_series(record.series)
        return record

    def remove_series(self, uid: str) -> list[InstanceRecord]:
        series = self.series.pop(uid, None)
        if series is None:
            return []
        for sop in series.instances:
            del self.instances[sop]
        study = self.studies[series.study]
        del study.series[uid]
        if not study.series:
            del self.studies[study.uid]
        return list(series.instances.values())

    def remove_study(self, uid: str) -> list[InstanceRecord]:
        study = self.studies.get(uid)
        if study is None:
            return []
        removed = []
        for series_uid in list(study.series):
            removed.extend(self.remove_series(series_uid))
        return removed

    # lookups ---------------------------------------------------------------------------------

    def series_in(self, study: str, series: str) -> SeriesRecord | None:
        record = self.series.get(series)
        return record if record is not None and record.study == study else None

    def instance_in(self, study: str, series: str, sop: str) -> InstanceRecord | None:
        record = self.instances.get(sop)
        if record is None or record.study != study or record.series != series:
            return None
        return record

    def instances_of(self, study: str, series: str | None = None) -> list[InstanceRecord]:
        """Instances of a study or series, in a stable order (series, then instance number)."""
        study_record = self.studies.get(study)
        if study_record is None:
            return []
        chosen = [study_record.series[series]] if series in study_record.series else []
        if series is None:
            chosen = sorted(study_record.series.values(), key=series_sort_key)
        return [i for s in chosen for i in sorted(s.instances.values(), key=instance_sort_key)]

    # search ----------------------------------------------------------------------------------

    def search(self, query: Query, study: str | None = None, series: str | None = None) -> list:
        """Records matching ``query`` at its level, within the study/series of the URL."""
        if query.level == STUDY:
            candidates: Iterator[Any] = iter(sorted(self.studies.values(), key=study_sort_key))
        elif query.level == SERIES:
            candidates = iter(self._series_scope(study))
        else:
            candidates = (
                instance
                for series_record in self._series_scope(study, series)
                for instance in sorted(series_record.instances.values(), key=instance_sort_key)
            )
        return [record for record in candidates if self._matches(record, query)]

    def _series_scope(self, study: str | None, series: str | None = None) -> list[SeriesRecord]:
        if series is not None:
            record = self.series_in(study, series) if study else self.series.get(series)
            return [record] if record else []
        studies = [self.studies[study]] if study in self.studies else []
        if study is None:
            studies = sorted(self.studies.values(), key=study_sort_key)
        return [s for st in studies for s in sorted(st.series.values(), key=series_sort_key)]

    def _matches(self, record: Record, query: Query) -> bool:
        attributes = self.attributes(record)
        return all(
            condition.matches(attributes.get(tag)) for tag, condition in query.conditions.items()
        )

    def attributes(self, record: Record) -> Attributes:
        """Every attribute known in memory for a record, its parents' and computed ones."""
        if isinstance(record, StudyRecord):
            return {**record.attributes, **computed_study(record)}
        if isinstance(record, SeriesRecord):
            study = self.studies[record.study]
            return {
                **self.attributes(study),
                **record.attributes,
                "00201209": {"vr": "IS", "Value": [len(record.instances)]},
            }
        return {**self.attributes(self.series[record.series]), **record.attributes}

    def counts(self) -> tuple[int, int, int]:
        return len(self.studies), len(self.series), len(self.instances)


def computed_study(study: StudyRecord) -> Attributes:
    attributes: Attributes = {
        "00201206": {"vr": "IS", "Value": [len(study.series)]},
        "00201208": {"vr": "IS", "Value": [study.instance_count()]},
    }
    modalities = study.modalities()
    attributes["00080061"] = {"vr": "CS", "Value": modalities} if modalities else {"vr": "CS"}
    return attributes


def _first(attributes: Attributes, tag: str, default: Any = "") -> Any:
    values = attributes.get(tag, {}).get("Value")
    return values[0] if values else default


def study_sort_key(study: StudyRecord) -> tuple:
    return (_first(study.attributes, "00080020"), _first(study.attributes, "00080030"), study.uid)


def series_sort_key(series: SeriesRecord) -> tuple:
    return (_number(_first(series.attributes, "00200011", None)), series.uid)


def instance_sort_key(instance: InstanceRecord) -> tuple:
    return (_number(_first(instance.attributes, "00200013", None)), instance.sop)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")
