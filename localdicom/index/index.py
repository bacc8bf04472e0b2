"""The in-memory index of studies, series and instances, rebuilt from the sidecars at start.

A search descends from studies to series to instances and prunes at each level, and starts
from a UID lookup where the URL or the query names UIDs, or from a table of the studies by
value where it asks for one exact value of a study attribute (PatientID=...), so its cost
follows the matches, not the archive; conditions below the level searched are met by a
witness instance (:mod:`.plan`). Mutations happen on the event loop thread only; readers
never see a half update. Study and series attributes are those of the first instance stored
for them.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from localdicom.archive import StoredInstance
from localdicom.dicom.qido import (
    INSTANCE,
    LEVEL_ATTRIBUTES,
    LEVELS,
    SERIES,
    STUDY,
    Condition,
    Query,
    SingleValue,
    ValueList,
    texts,
)
from localdicom.index import plan as planning
from localdicom.index.plan import Plan
from localdicom.index.records import (
    LEVEL_OF,
    POSITION,
    SOP_UID,
    UID_TAG,
    Attributes,
    InstanceRecord,
    Record,
    SeriesRecord,
    StudyRecord,
    compact,
    element,
    instance_sort_key,
    passes,
    restored,
    series_sort_key,
    study_sort_key,
    uid_of,
)

#: The layout of a series' entry in the snapshot (:meth:`Index.series_snapshot`). A snapshot
#: of layout 1 (no number: each instance with all its values) is read too, and written anew.
ENTRY_LAYOUT = 2


def _schemas(tables: bytes) -> tuple[str, str]:
    """What a snapshot of these tables holds, in the current layout and in layout 1."""
    digest = hashlib.sha256(tables).hexdigest()[:16]
    return f"{digest}.{ENTRY_LAYOUT}", digest


#: Names what a snapshot of the index holds: a snapshot of other tables is not used.
SCHEMA, _SCHEMA_LAYOUT_1 = _schemas(repr(sorted(LEVEL_ATTRIBUTES.items())).encode())


class Index:
    """Studies, series and instances by UID."""

    def __init__(self, promoted: tuple[str, ...] = ()) -> None:
        """``promoted``: attributes kept per instance besides the built-in ones (``serve
        --index-attribute``), as tags; those the index holds anyway are left out."""
        self.promoted = tuple(dict.fromkeys(tag for tag in promoted if tag not in LEVEL_OF))
        first = len(LEVEL_ATTRIBUTES[INSTANCE])
        #: Each promoted attribute's place in an instance's values.
        self.promoted_at = {tag: first + i for i, tag in enumerate(self.promoted)}
        self.studies: dict[str, StudyRecord] = {}
        self.series: dict[str, SeriesRecord] = {}
        self.instances: dict[str, InstanceRecord] = {}
        self._ordered_studies: list[StudyRecord] | None = None
        #: Per study-level tag: its values -> the studies holding them, in study order.
        self._studies_by: dict[str, dict[str, list[StudyRecord]]] = {}

    def add(self, stored: StoredInstance) -> InstanceRecord:
        """Add or replace an instance."""
        record = InstanceRecord.from_stored(stored, self.promoted)
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
        record.share(next(reversed(series.instances.values()), None))
        series.instances[record.sop] = self.instances[record.sop] = record
        series.changed()

    # snapshots -------------------------------------------------------------------------------

    @property
    def schema(self) -> str:
        """What a snapshot of this index holds (the promoted attributes too): a snapshot
        made with other attributes is not restored (see :mod:`localdicom.catalog.opening`)."""
        return self.schemas[0]

    @property
    def schemas(self) -> tuple[str, ...]:
        """:attr:`schema`, then those of older layouts of entries that it still reads."""
        if not self.promoted:
            return SCHEMA, _SCHEMA_LAYOUT_1
        return _schemas(repr((sorted(LEVEL_ATTRIBUTES.items()), self.promoted)).encode())

    def series_snapshot(self, series: SeriesRecord) -> dict[str, Any]:
        """A series and its instances as JSON-able data (see ``restore_series``): each
        distinct tuple of instance values once, in ``shared``."""
        study = self.studies[series.study]
        shared: list[list] = []
        places: dict[int, int] = {}  # id of a tuple -> its place in shared
        instances = []
        for record in series.instances.values():
            place = places.get(id(record.shared))
            if place is None:
                place = places[id(record.shared)] = len(shared)
                shared.append(list(record.shared))
            instances.append(record.snapshot(place))
        return {
            "study": study.uid,
            "series": series.uid,
            "study_values": list(study.values),
            "series_values": list(series.values),
            "shared": shared,
            "instances": instances,
        }

    def restore_series(self, entry: dict[str, Any]) -> None:
        """Put back a series from ``series_snapshot`` data (or that of entry layout 1, which
        had no ``shared``), as :meth:`add` would have."""
        series = self._series_for(
            entry["study"],
            entry["series"],
            lambda: restored(entry["study_values"]),
            lambda: restored(entry["series_values"]),
        )
        if "shared" not in entry:
            self._restore_layout_1(series, entry["instances"])
            return
        shared = [restored(values) for values in entry["shared"]]
        study, uid = series.study, series.uid
        table, instances = self.instances, series.instances
        make, fromhex = InstanceRecord, bytes.fromhex
        # InstanceRecord.snapshot's data, read here rather than by a method of the record:
        # this loop runs for every instance at every start, where each call counts.
        for sop, number, packed, place in entry["instances"]:
            if type(number) is list:  # a tuple, in JSON
                number = tuple(number)
            record = make(study, uid, sop, number, shared[place], fromhex(packed))
            if sop in table:  # in another folder too: replaced, as add does
                self._insert(series, record)
                series = self.series[uid]
                instances = series.instances
            else:
                instances[sop] = table[sop] = record
        series.changed()

    def _restore_layout_1(self, series: SeriesRecord, instances: list[list]) -> None:
        study, uid = series.study, series.uid
        for sop, syntax, size, digest, values, frames in instances:
            values = restored(values)
            record = InstanceRecord.made(study, uid, sop, syntax, size, digest, values, frames)
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

    def plan(self, query: Query) -> Plan:
        """Where each of ``query``'s conditions is decided (see :mod:`.plan`)."""
        return planning.plan(query, self.promoted_at)

    def witnesses(self, record: Record, chosen: Plan) -> list[InstanceRecord]:
        """The instances of a match that meet the conditions memory decides below its
        level, in order; call on the event loop."""
        return list(planning.witnesses(record, chosen))

    def first_witness(self, record: Record, chosen: Plan) -> InstanceRecord | None:
        return next(planning.witnesses(record, chosen), None)

    def search(self, query: Query, study: str | None = None, series: str | None = None) -> list:
        """Records matching the conditions on attributes memory holds, at ``query``'s level,
        within the study/series of the URL, in a stable order. Starts from the narrowest UIDs
        known (URL or UID-list matching); those below the level need a witness."""
        chosen = self.plan(query)
        by_level = chosen.here
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
                if passes(r, by_level[level]) and (uids[level] is None or uid_of(r) in uids[level])
            ]
        if chosen.in_memory_below:
            records = [r for r in records if self.first_witness(r, chosen) is not None]
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
            if not passes(parent, by_level[level]):
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
        values = [None if holder is None else holder.values for holder in holders]
        for tag, level, position in _lookups(tags):
            holder = holders[level]
            if holder is not None:
                value = holder.value(tag) if position is None else values[level][position]
                attributes[tag] = element(tag, value)
        if self.promoted:
            self._add_promoted(attributes, holders, tags)
        return attributes

    def values(self, records: list[Record], tag: str) -> list[Any]:
        """The compact value memory holds of ``tag`` for each record, from the record or
        the parent of the tag's level (None where there is none, as for a study asked an
        instance attribute): what sorting needs, without building DICOM JSON."""
        level = LEVEL_OF.get(tag)
        if level is None:
            place = self.promoted_at[tag]
            return [_instance_of(record).at(place) for record in records]
        depth = LEVELS.index(level)
        position = None if tag == SOP_UID else POSITION[level].get(tag)
        found = []
        for record in records:
            holder = self._at_level(record, depth)
            if holder is None:
                found.append(None)
            else:
                found.append(holder.value(tag) if position is None else holder.at(position))
        return found

    def _at_level(self, record: Record, depth: int) -> Record | None:
        """The record itself or its parent at ``depth`` (0 study, 1 series, 2 instance)."""
        own = 0 if isinstance(record, StudyRecord) else 1 if isinstance(record, SeriesRecord) else 2
        if own < depth:
            return None
        if own > depth and depth == 1:
            return self.series[record.series]
        return self.studies[record.study] if own > depth else record

    def _add_promoted(self, attributes: Attributes, holders: list, tags: tuple[str, ...]) -> None:
        """Promoted attributes among ``tags``: the instance's own, or for a study or series
        those of its first instance (as a sidecar would give them)."""
        asked = [tag for tag in tags if tag in self.promoted_at]
        if not asked:
            return
        instance = holders[2] or _first_instance(holders[1] or holders[0])
        for tag in asked:
            attributes[tag] = element(tag, instance.at(self.promoted_at[tag]))

    def holds(self, tag: str) -> bool:
        """Whether memory holds ``tag`` for every record that has it."""
        return tag in LEVEL_OF or tag in self.promoted_at

    def counts(self) -> tuple[int, int, int]:
        return len(self.studies), len(self.series), len(self.instances)


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


def _instance_of(record: Record) -> InstanceRecord:
    return record if isinstance(record, InstanceRecord) else _first_instance(record)


def _first_instance(record: StudyRecord | SeriesRecord) -> InstanceRecord:
    if isinstance(record, StudyRecord):
        record = next(iter(record.series.values()))
    return next(iter(record.instances.values()))
