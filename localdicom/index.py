"""The in-memory index of studies, series and instances, rebuilt from the sidecars at start.

It holds per level only the attributes QIDO matches and returns (``LEVEL_ATTRIBUTES``), in
compact form: one value per attribute, aligned with the level's tag list (a single value as
itself, several as a tuple, absent as None), with repeated values shared. That keeps each
instance small, so that a laptop's memory holds the index of a large archive.

A search descends from studies to series to instances and prunes at each level, and starts
from a UID lookup where the URL or the query names UIDs, or from a table of the studies by
value where it asks for one exact value of a study attribute (PatientID=...), so its cost
follows the matches, not the archive. Mutations happen on the event loop thread only;
readers never see a half update. Study and series attributes are those of the first instance
stored for them.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR

from localdicom.archive import StoredInstance
from localdicom.dicom.qido import (
    COMPUTED,
    INSTANCE,
    LEVEL_ATTRIBUTES,
    LEVELS,
    MODALITIES_IN_STUDY,
    SERIES,
    SERIES_INSTANCES,
    STUDY,
    STUDY_INSTANCES,
    STUDY_SERIES,
    Condition,
    Query,
    SingleValue,
    ValueList,
    accepts,
    texts,
)

Attributes = dict[str, dict[str, Any]]
STUDY_UID, SERIES_UID, SOP_UID, MODALITY = "0020000D", "0020000E", "00080018", "00080060"
UID_TAG = {STUDY: STUDY_UID, SERIES: SERIES_UID, INSTANCE: SOP_UID}
#: Values unique to one instance: sharing them would cost more than it saves.
UNSHARED = frozenset({SOP_UID, "00080033", "00200013"})
POSITION = {level: {tag: i for i, tag in enumerate(LEVEL_ATTRIBUTES[level])} for level in LEVELS}
LEVEL_OF = {tag: level for level in LEVELS for tag in (*LEVEL_ATTRIBUTES[level], *COMPUTED[level])}
_shared: dict[Any, Any] = {}
#: Names what a snapshot of the index holds: a snapshot of other tables is not used.
SCHEMA = hashlib.sha256(repr(sorted(LEVEL_ATTRIBUTES.items())).encode()).hexdigest()[:16]


def _vr(tag: str) -> str:
    return dictionary_VR(int(tag, 16)).split(" or ")[0]


VR = {tag: _vr(tag) for tag in LEVEL_OF}


def compact(metadata: Attributes, level: str) -> tuple:
    """The level's attributes of an instance's DICOM JSON, as compact values."""
    values = []
    for tag in LEVEL_ATTRIBUTES[level]:
        element = metadata.get(tag)
        value = None if element is None else element.get("Value", ())
        if tag == SOP_UID:
            value = None  # the record's own ``sop``: no second copy
        elif value is not None:
            value = [_plain(item) for item in value]
            value = value[0] if len(value) == 1 else tuple(value)
            if tag not in UNSHARED:
                value = _share(value)
        values.append(value)
    return tuple(values)


def _plain(item: Any) -> Any:
    """Builtin str, int and float: pydicom's subclasses (UID, IS, DS) cost memory and can't
    be interned."""
    for kind in (str, int, float):
        if isinstance(item, kind) and type(item) is not kind:
            return kind(item)
    return item


def element(tag: str, value: Any) -> dict[str, Any]:
    """A compact value back as DICOM JSON (PS3.18 F.2); absent or empty has no Value."""
    if value is None or value == ():
        return {"vr": VR[tag]}
    return {"vr": VR[tag], "Value": list(value) if isinstance(value, tuple) else [value]}


class InstanceRecord:
    __slots__ = (
        "digest",
        "frame_count",
        "series",
        "size",
        "sop",
        "study",
        "transfer_syntax",
        "values",
    )

    def __init__(
        self,
        study: str,
        series: str,
        sop: str,
        transfer_syntax: str,
        size: int,
        digest: str,
        values: tuple,
        frame_count: int,
    ) -> None:
        self.study, self.series, self.sop = sys.intern(study), sys.intern(series), sop
        self.transfer_syntax = sys.intern(transfer_syntax)
        self.size = size
        self.digest = bytes.fromhex(digest)
        self.values = values
        #: Frames of pixel data; 0 for an instance without any (a report, a structure set).
        self.frame_count = frame_count

    @classmethod
    def from_stored(cls, stored: StoredInstance) -> InstanceRecord:
        header = stored.header
        return cls(
            header.study_uid,
            header.series_uid,
            header.sop_uid,
            header.transfer_syntax,
            stored.size,
            stored.digest,
            compact(header.metadata, INSTANCE),
            header.frame_count(),
        )

    def snapshot(self) -> list:
        return [
            self.sop,
            self.transfer_syntax,
            self.size,
            self.digest.hex(),
            list(self.values),
            self.frame_count,
        ]

    def value(self, tag: str) -> Any:
        return self.sop if tag == SOP_UID else self.values[POSITION[INSTANCE][tag]]


class SeriesRecord:
    __slots__ = ("_ordered", "instances", "study", "uid", "values")

    def __init__(self, study: str, uid: str, values: tuple) -> None:
        self.study, self.uid, self.values = study, uid, values
        self.instances: dict[str, InstanceRecord] = {}
        self._ordered: list[InstanceRecord] | None = None

    def value(self, tag: str) -> Any:
        if tag == SERIES_INSTANCES:
            return len(self.instances)
        return self.values[POSITION[SERIES][tag]]

    def changed(self) -> None:
        """Call after adding or removing an instance."""
        self._ordered = None

    def ordered(self) -> list[InstanceRecord]:
        """Instances by instance number, then UID: a stable order for every answer."""
        if self._ordered is None:
            self._ordered = sorted(self.instances.values(), key=instance_sort_key)
        return self._ordered


class StudyRecord:
    __slots__ = ("_ordered", "series", "uid", "values")

    def __init__(self, uid: str, values: tuple) -> None:
        self.uid, self.values = uid, values
        self.series: dict[str, SeriesRecord] = {}
        self._ordered: list[SeriesRecord] | None = None

    def value(self, tag: str) -> Any:
        if tag == STUDY_SERIES:
            return len(self.series)
        if tag == STUDY_INSTANCES:
            return self.instance_count()
        if tag == MODALITIES_IN_STUDY:
            modalities = self.modalities()
            return modalities[0] if len(modalities) == 1 else tuple(modalities)
        return self.values[POSITION[STUDY][tag]]

    def instance_count(self) -> int:
        return sum(len(series.instances) for series in self.series.values())

    def modalities(self) -> list[str]:
        found = {m for s in self.series.values() if isinstance(m := s.value(MODALITY), str)}
        return sorted(found)

    def changed(self) -> None:
        """Call after adding or removing a series."""
        self._ordered = None

    def ordered(self) -> list[SeriesRecord]:
        """Series by series number, then UID; kept, as a series-level search asks every
        study for it."""
        if self._ordered is None:
            self._ordered = sorted(self.series.values(), key=series_sort_key)
        return self._ordered


Record = StudyRecord | SeriesRecord | InstanceRecord


class Index:
    """Studies, series and instances by UID."""

    def __init__(self) -> None:
        self.studies: dict[str, StudyRecord] = {}
        self.series: dict[str, SeriesRecord] = {}
        self.instances: dict[str, InstanceRecord] = {}
        self._ordered_studies: list[StudyRecord] | None = None
        #: Per study-level tag: its values -> the studies holding them, in study order.
        self._studies_by: dict[str, dict[str, list[StudyRecord]]] = {}

    def add(self, stored: StoredInstance) -> InstanceRecord:
        """Add or replace an instance."""
        record = InstanceRecord.from_stored(stored)
        metadata = stored.header.metadata
        series = self._series_for(
            record.study,
            record.series,
            lambda: compact(metadata, STUDY),
            lambda: compact(metadata, SERIES),
        )
        self._insert(series, record)
        return record

    def _series_for(
        self, study_uid: str, series_uid: str, study_values, series_values
    ) -> SeriesRecord:
        """The series record, created with its study when new (values are computed lazily)."""
        study = self.studies.get(study_uid)
        if study is None:
            study = self.studies[study_uid] = StudyRecord(study_uid, study_values())
            self._studies_changed()
        series = study.series.get(series_uid)
        if series is None:
            series = SeriesRecord(study_uid, series_uid, series_values())
            study.series[series_uid] = self.series[series_uid] = series
            study.changed()
        return series

    def _insert(self, series: SeriesRecord, record: InstanceRecord) -> None:
        self.remove_instance(record.sop)
        if series.uid not in self.series:  # the removal emptied and dropped it
            series = self._series_for(series.study, series.uid, lambda: (), lambda: ())
        series.instances[record.sop] = self.instances[record.sop] = record
        series.changed()

    # snapshots -------------------------------------------------------------------------------

    def series_snapshot(self, series: SeriesRecord) -> dict[str, Any]:
        """A series and its instances as JSON-able data (see ``restore_series``)."""
        study = self.studies[series.study]
        return {
            "study": study.uid,
            "series": series.uid,
            "study_values": list(study.values),
            "series_values": list(series.values),
            "instances": [record.snapshot() for record in series.instances.values()],
        }

    def restore_series(self, entry: dict[str, Any]) -> None:
        """Put back a series from ``series_snapshot`` data, as :meth:`add` would have."""
        series = self._series_for(
            entry["study"],
            entry["series"],
            lambda: _restored(entry["study_values"]),
            lambda: _restored(entry["series_values"]),
        )
        for sop, syntax, size, digest, values, frames in entry["instances"]:
            record = InstanceRecord(
                series.study, series.uid, sop, syntax, size, digest, _restored(values), frames
            )
            self._insert(series, record)

    def remove_instance(self, sop: str) -> InstanceRecord | None:
        record = self.instances.pop(sop, None)
        if record is None:
            return None
        series = self.series[record.series]
        del series.instances[sop]
        series.changed()
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
        study.changed()
        if not study.series:
            del self.studies[study.uid]
            self._studies_changed()
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
        if series is None:
            chosen = study_record.ordered()
        else:
            chosen = [study_record.series[series]] if series in study_record.series else []
        return [instance for s in chosen for instance in s.ordered()]

    def _studies_changed(self) -> None:
        self._ordered_studies = None
        self._studies_by = {}

    def ordered_studies(self) -> list[StudyRecord]:
        if self._ordered_studies is None:
            self._ordered_studies = sorted(self.studies.values(), key=study_sort_key)
        return self._ordered_studies

    # search ----------------------------------------------------------------------------------

    def search(self, query: Query, study: str | None = None, series: str | None = None) -> list:
        """Records matching ``query`` at its level, within the study/series of the URL, in a
        stable order. Starts from the narrowest UIDs known (URL or UID-list matching)."""
        by_level: dict[str, list[tuple[str, Condition]]] = {level: [] for level in LEVELS}
        for tag, condition in query.conditions.items():
            by_level[LEVEL_OF[tag]].append((tag, condition))
        uids = {
            STUDY: {study} if study else None,
            SERIES: {series} if series else None,
            INSTANCE: None,
        }
        for level, conditions in by_level.items():
            for tag, condition in conditions:
                if tag == UID_TAG[level] and isinstance(condition, ValueList):
                    found = set(condition.values)
                    uids[level] = found if uids[level] is None else uids[level] & found
        depth = LEVELS.index(query.level)
        start = max((i for i in range(depth + 1) if uids[LEVELS[i]] is not None), default=0)
        if start == 0 and uids[STUDY] is None:
            records = self._candidate_studies(by_level[STUDY])
        else:
            records = self._start(LEVELS[start], uids[LEVELS[start]])
            records = [r for r in records if self._above_match(r, start, by_level, uids)]
        for level in LEVELS[start : depth + 1]:
            if level != LEVELS[start]:
                records = [child for r in records for child in r.ordered()]
            records = [
                r
                for r in records
                if _passes(r, by_level[level]) and (uids[level] is None or _uid(r) in uids[level])
            ]
        return records

    def _candidate_studies(self, conditions: list[tuple[str, Condition]]) -> list[StudyRecord]:
        """Every study, in order; or, when a condition asks for one exact value of a stored
        study attribute (PatientID=..., AccessionNumber=...), only the studies holding it.
        The conditions are still applied to what this returns."""
        for tag, condition in conditions:
            exact = type(condition) is SingleValue and not condition.case_insensitive
            if exact and tag in POSITION[STUDY]:
                return self._studies_with(tag, condition.value)
        return list(self.ordered_studies())

    def _studies_with(self, tag: str, text: str) -> list[StudyRecord]:
        """A lookup table per tag, built on first use and dropped when a study comes or
        goes (study attributes do not change otherwise: they are the first instance's)."""
        table = self._studies_by.get(tag)
        if table is None:
            table = self._studies_by[tag] = {}
            position = POSITION[STUDY][tag]
            for study in self.ordered_studies():
                value = study.values[position]
                for each in dict.fromkeys(() if value is None else texts(value)):
                    table.setdefault(each, []).append(study)
        return table.get(text, [])

    def _start(self, level: str, uids: set[str] | None) -> list[Record]:
        """The records of ``level`` to start from: the named ones, or every study in order."""
        if uids is None:
            return list(self.ordered_studies())
        table = {STUDY: self.studies, SERIES: self.series, INSTANCE: self.instances}[level]
        found = [table[uid] for uid in uids if uid in table]
        return sorted(found, key=self._order_key)

    def _above_match(self, record: Record, start: int, by_level, uids) -> bool:
        """For a search that started below the study level: do the parents match too?"""
        for level in LEVELS[:start]:
            parent = self._parent(record, level)
            if not _passes(parent, by_level[level]):
                return False
            if uids[level] is not None and parent.uid not in uids[level]:
                return False
        return True

    def _parent(self, record: Record, level: str) -> Record:
        if level == STUDY:
            return self.studies[record.study]
        return self.series[record.series]

    def _order_key(self, record: Record) -> tuple:
        if isinstance(record, StudyRecord):
            return (study_sort_key(record),)
        if isinstance(record, SeriesRecord):
            return (study_sort_key(self.studies[record.study]), series_sort_key(record))
        series = self.series[record.series]
        return (*self._order_key(series), instance_sort_key(record))

    def attributes(self, record: Record, tags: tuple[str, ...]) -> Attributes:
        """DICOM JSON of those of ``tags`` that memory holds for a record or its parents."""
        holders: list[Record | None] = [None, None, None]  # by level: study, series, instance
        if isinstance(record, InstanceRecord):
            holders[2] = record
            record = self.series[record.series]
        if isinstance(record, SeriesRecord):
            holders[1] = record
            record = self.studies[record.study]
        holders[0] = record
        attributes: Attributes = {}
        for tag, level, position in _lookups(tags):
            holder = holders[level]
            if holder is not None:
                value = holder.value(tag) if position is None else holder.values[position]
                attributes[tag] = element(tag, value)
        return attributes

    def counts(self) -> tuple[int, int, int]:
        return len(self.studies), len(self.series), len(self.instances)


def _restored(values: list) -> tuple:
    """Compact values back from JSON, where tuples became lists (run for every instance at
    a start from the snapshot: spelled out for speed)."""
    restored = []
    for value in values:
        kind = type(value)
        if kind is str:
            value = sys.intern(value)
        elif kind is list:
            value = _share(tuple(value))
        restored.append(value)
    return tuple(restored)


def _share(value: Any) -> Any:
    """One object for equal strings and string tuples: dates, modalities, image types."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return _shared.setdefault(value, value)
    return value


@functools.lru_cache(maxsize=256)
def _lookups(tags: tuple[str, ...]) -> list[tuple[str, int, int | None]]:
    """For each tag memory holds: its level's number and its place in that level's values
    (None: computed, or the SOP UID). Remembered per tag list, as QIDO asks for the same few
    lists again and again and every match of a search needs it."""
    lookups = []
    for tag in tags:
        level = LEVEL_OF.get(tag)
        if level is not None:
            position = None if tag == SOP_UID else POSITION[level].get(tag)
            lookups.append((tag, LEVELS.index(level), position))
    return lookups


def _uid(record: Record) -> str:
    return record.sop if isinstance(record, InstanceRecord) else record.uid


def _passes(record: Record, conditions: Iterable[tuple[str, Condition]]) -> bool:
    for tag, condition in conditions:  # noqa: SIM110 (a loop: faster than all() here)
        if not accepts(condition, record.value(tag)):
            return False
    return True


def _first(value: Any, default: Any = "") -> Any:
    if value is None or value == ():
        return default
    return value[0] if isinstance(value, tuple) else value


def study_sort_key(study: StudyRecord) -> tuple:
    date = _first(study.values[POSITION[STUDY]["00080020"]])
    time = _first(study.values[POSITION[STUDY]["00080030"]])
    return (str(date), str(time), study.uid)


def series_sort_key(series: SeriesRecord) -> tuple:
    return (_number(_first(series.values[POSITION[SERIES]["00200011"]], None)), series.uid)


def instance_sort_key(instance: InstanceRecord) -> tuple:
    return (_number(_first(instance.values[POSITION[INSTANCE]["00200013"]], None)), instance.sop)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")
