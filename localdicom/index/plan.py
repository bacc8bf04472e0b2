"""Where each condition of a query is decided, and the instances that meet those below the
level searched.

A condition on an attribute of the level searched or above is applied to each record as the
search descends. One on an attribute of a lower level (``/studies?Modality=MR``), or on an
attribute promoted into the index (kept per instance), is met by a study or series when one
of its instances meets it, together with every other such condition, as the archives that
answer these queries with a join answer them (dcm4chee): that instance is the match's
*witness*, whose values answer for those attributes. A condition on an attribute memory does
not hold is left to the Catalog, which reads it from the sidecars of the witnesses.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from localdicom.dicom.qido import (
    INSTANCE,
    LEVELS,
    SERIES,
    Condition,
    Query,
    Universal,
    accepts,
)
from localdicom.index.records import (
    LEVEL_OF,
    POSITION,
    SOP_UID,
    InstanceRecord,
    Record,
    SeriesRecord,
    StudyRecord,
    instance_sort_key,
    passes,
)

Conditions = list[tuple[str, Condition]]
#: Conditions on an instance's values, by place in them (None: the SOP UID).
Placed = list[tuple[int | None, Condition]]


@dataclass
class Plan:
    """A query's conditions, by where they are decided."""

    #: Attributes memory holds at the level searched or above, by level.
    here: dict[str, Conditions] = field(default_factory=lambda: {level: [] for level in LEVELS})
    #: Series attributes memory holds, in a study search (met by a witness's series).
    series: Conditions = field(default_factory=list)
    #: Instance attributes memory holds, in a study or series search, and attributes
    #: promoted into the index at every level (met by a witness).
    instance: Placed = field(default_factory=list)
    #: Attributes memory does not hold: met by a witness's sidecar.
    elsewhere: Conditions = field(default_factory=list)

    @property
    def in_memory_below(self) -> bool:
        """Whether memory decides conditions a match meets through a witness."""
        return bool(self.series or self.instance)

    @property
    def needs_witness(self) -> bool:
        return self.in_memory_below or bool(self.elsewhere)


def plan(query: Query, promoted: dict[str, int]) -> Plan:
    """Sort ``query``'s conditions; ``promoted`` gives the place of each attribute promoted
    into the index in an instance's values. Universal matching is left out: it matches
    every entity, with or without the attribute (PS3.4 C.2.2.2.3)."""
    result = Plan()
    depth = LEVELS.index(query.level)
    for tag, condition in query.conditions.items():
        if isinstance(condition, Universal):
            continue
        level = LEVEL_OF.get(tag)
        if level is not None and LEVELS.index(level) <= depth:
            result.here[level].append((tag, condition))
        elif level == SERIES:
            result.series.append((tag, condition))
        elif level == INSTANCE:
            place = None if tag == SOP_UID else POSITION[INSTANCE][tag]
            result.instance.append((place, condition))
        elif tag in promoted:
            result.instance.append((promoted[tag], condition))
        else:
            result.elsewhere.append((tag, condition))
    return result


def witnesses(record: Record, chosen: Plan) -> Iterator[InstanceRecord]:
    """The instances of ``record`` (itself, for an instance) that meet the conditions memory
    decides below its level, in the index's order; call on the event loop."""
    if isinstance(record, InstanceRecord):
        if _meets(record, chosen.instance):
            yield record
        return
    series_list = record.ordered() if isinstance(record, StudyRecord) else [record]
    for series in series_list:
        if passes(series, chosen.series):
            yield from _meeting(series, chosen.instance)


def _meeting(series: SeriesRecord, conditions: Placed) -> Iterable[InstanceRecord]:
    """The series' instances that meet ``conditions``, in order: each distinct set of values
    is tested once (:meth:`SeriesRecord.grouped`)."""
    if not conditions:
        return series.ordered()
    groups = series.grouped(tuple(place for place, _ in conditions))
    meeting = [group for group in groups.values() if _meets(group[0], conditions)]
    if len(meeting) <= 1:
        return meeting[0] if meeting else ()
    return heapq.merge(*meeting, key=instance_sort_key)


def _meets(instance: InstanceRecord, conditions: Placed) -> bool:
    for place, condition in conditions:  # noqa: SIM110 (a loop: faster than all() here)
        if not accepts(condition, instance.at(place)):
            return False
    return True
