"""The records of the in-memory index: a study, a series, an instance, each holding the
attributes QIDO matches and returns (``LEVEL_ATTRIBUTES``) in compact form: one value per
attribute, aligned with the level's tag list (a single value as itself, several as a tuple,
absent as None), with repeated values shared. That keeps each instance small, so that a
laptop's memory holds the index of a large archive. An instance's values may go on past its
level's tags with attributes promoted into the index (``serve --index-attribute``).
"""

from __future__ import annotations

import struct
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
    accepts,
)

Attributes = dict[str, dict[str, Any]]
STUDY_UID, SERIES_UID, SOP_UID, MODALITY = "0020000D", "0020000E", "00080018", "00080060"
UID_TAG = {STUDY: STUDY_UID, SERIES: SERIES_UID, INSTANCE: SOP_UID}
#: Values unique to one instance: sharing them would cost more than it saves.
UNSHARED = frozenset({SOP_UID, "00080033", "00200013"})
POSITION = {level: {tag: i for i, tag in enumerate(LEVEL_ATTRIBUTES[level])} for level in LEVELS}
LEVEL_OF = {tag: level for level in LEVELS for tag in (*LEVEL_ATTRIBUTES[level], *COMPUTED[level])}
_shared: dict[Any, Any] = {}


def _vr(tag: str) -> str:
    return dictionary_VR(int(tag, 16)).split(" or ")[0]


VR = {tag: _vr(tag) for tag in LEVEL_OF}


def compact(metadata: Attributes, level: str, extra: tuple[str, ...] = ()) -> tuple:
    """The level's attributes of an instance's DICOM JSON, then those of ``extra``, as
    compact values."""
    values = []
    for tag in (*LEVEL_ATTRIBUTES[level], *extra):
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
    vr = VR.get(tag) or _vr(tag)  # not in VR: an attribute promoted into the index
    if value is None or value == ():
        return {"vr": vr}
    return {"vr": vr, "Value": list(value) if isinstance(value, tuple) else [value]}


#: Where an instance's values hold its Instance Number (kept apart: it differs per instance).
NUMBER_AT = POSITION[INSTANCE]["00200013"]
_SIZES = struct.Struct("<QI")  # size in bytes, frame count


class InstanceRecord:
    """An instance, in as few objects as can be: its values but the Instance Number, with
    its transfer syntax at their end, are one tuple (``shared``) that the next instance of
    its series with the same values shares (:meth:`share`), and its size, frame count and
    digest are one bytes object (``_packed``)."""

    __slots__ = ("_packed", "number", "series", "shared", "sop", "study")

    def __init__(
        self, study: str, series: str, sop: str, number: Any, shared: tuple, packed: bytes
    ) -> None:
        self.study, self.series, self.sop = study, series, sop
        self.number, self.shared, self._packed = number, shared, packed

    @classmethod
    def made(
        cls,
        study: str,
        series: str,
        sop: str,
        transfer_syntax: str,
        size: int,
        digest: str,
        values: tuple,
        frame_count: int,
    ) -> InstanceRecord:
        """The record of an instance of those values (see :func:`compact`)."""
        return cls(
            sys.intern(study),
            sys.intern(series),
            sop,
            values[NUMBER_AT],
            (*values[:NUMBER_AT], None, *values[NUMBER_AT + 1 :], sys.intern(transfer_syntax)),
            _SIZES.pack(size, frame_count) + bytes.fromhex(digest),
        )

    @classmethod
    def from_stored(cls, stored: StoredInstance, extra: tuple[str, ...] = ()) -> InstanceRecord:
        """The record of a stored instance, its values followed by those of ``extra``."""
        header = stored.header
        return cls.made(
            header.study_uid,
            header.series_uid,
            header.sop_uid,
            header.transfer_syntax,
            stored.size,
            stored.digest,
            compact(header.metadata, INSTANCE, extra),
            header.frame_count(),
        )

    def share(self, other: InstanceRecord | None) -> None:
        """Hold ``other``'s tuple of values instead of an equal one of its own."""
        if other is not None and other.shared == self.shared:
            self.shared = other.shared

    @property
    def transfer_syntax(self) -> str:
        return self.shared[-1]

    @property
    def size(self) -> int:
        return _SIZES.unpack_from(self._packed)[0]

    @property
    def frame_count(self) -> int:
        """Frames of pixel data: 0 for an instance without any (a report, a structure set)."""
        return _SIZES.unpack_from(self._packed)[1]

    @property
    def digest(self) -> bytes:
        return self._packed[_SIZES.size :]

    @property
    def values(self) -> tuple:
        """The level's values, then those of the promoted attributes (see :func:`compact`)."""
        shared = self.shared
        return (*shared[:NUMBER_AT], self.number, *shared[NUMBER_AT + 1 : -1])

    def snapshot(self, place: int) -> list:
        """The instance as JSON-able data, its tuple of values at ``place`` of its series'
        (see :meth:`Index.restore_series`)."""
        return [self.sop, self.number, self._packed.hex(), place]

    def value(self, tag: str) -> Any:
        return self.at(None if tag == SOP_UID else POSITION[INSTANCE][tag])

    def at(self, place: int | None) -> Any:
        """The value at ``place`` of the values (None: the SOP UID, kept as ``sop``)."""
        if place is None:
            return self.sop
        return self.number if place == NUMBER_AT else self.shared[place]


#: Instances grouped by their values at some places of their values (None: the SOP UID).
Groups = dict[tuple, list[InstanceRecord]]
#: Groupings a series keeps at most (one per set of attributes searched): they go with it.
MAX_GROUPINGS = 4


class SeriesRecord:
    __slots__ = ("_groupings", "_ordered", "instances", "study", "uid", "values")

    def __init__(self, study: str, uid: str, values: tuple) -> None:
        self.study, self.uid, self.values = study, uid, values
        self.instances: dict[str, InstanceRecord] = {}
        self._ordered: list[InstanceRecord] | None = None
        self._groupings: dict[tuple[int | None, ...], Groups] | None = None

    def value(self, tag: str) -> Any:
        if tag == SERIES_INSTANCES:
            return len(self.instances)
        return self.values[POSITION[SERIES][tag]]

    def at(self, place: int) -> Any:
        return self.values[place]

    def changed(self) -> None:
        """Call after adding or removing an instance."""
        self._ordered = None
        self._groupings = None

    def ordered(self) -> list[InstanceRecord]:
        """Instances by instance number, then UID: a stable order for every answer."""
        if self._ordered is None:
            self._ordered = sorted(self.instances.values(), key=instance_sort_key)
        return self._ordered

    def grouped(self, places: tuple[int | None, ...]) -> Groups:
        """The instances, in order, by their values at ``places`` of their values (None: the
        SOP UID): a search below the series level tests each distinct value once, as a
        series repeats most values (slice thickness, image type, kernel) on every slice.
        Kept until the series changes."""
        if self._groupings is None:
            self._groupings = {}
        groups = self._groupings.get(places)
        if groups is None:
            if len(self._groupings) >= MAX_GROUPINGS:
                self._groupings.clear()
            groups = self._groupings[places] = {}
            for instance in self.ordered():
                key = tuple(_hashable(instance.at(place)) for place in places)
                groups.setdefault(key, []).append(instance)
        return groups


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

    def at(self, place: int) -> Any:
        return self.values[place]

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


def restored(values: list) -> tuple:
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


def uid_of(record: Record) -> str:
    return record.sop if isinstance(record, InstanceRecord) else record.uid


def passes(record: Record, conditions: Iterable[tuple[str, Condition]]) -> bool:
    for tag, condition in conditions:  # noqa: SIM110 (a loop: faster than all() here)
        if not accepts(condition, record.value(tag)):
            return False
    return True


def _hashable(value: Any) -> Any:
    """A value as a dict key: a PN value's component groups as pairs."""
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    if isinstance(value, tuple) and any(isinstance(item, dict) for item in value):
        return tuple(_hashable(item) for item in value)
    return value


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
    return (_number(_first(instance.number, None)), instance.sop)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")
