"""QIDO-RS and C-FIND matches, and the conditions matched from the sidecars.

The index decides every condition on an attribute memory holds (:mod:`localdicom.index.plan`);
a condition on any other attribute (SliceThickness, a private tag) is matched after those
have narrowed the candidates, against the sidecar of each candidate instance, with the same
matcher. A study or series matches when one of its instances does (the first, in the index's
order, is its witness); the sidecars are read until one does, and no further than the
matches a page of results needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from localdicom.dicom.qido import Condition, accepts, json_value
from localdicom.index import InstanceRecord, Record

#: A match and the instances whose sidecars may make it one, in order.
Candidate = tuple[Record, list[InstanceRecord]]


@dataclass(frozen=True)
class Match:
    """A record found by a search, and the instance that met its conditions below the
    record's level (None when there were none): its values answer for those attributes."""

    record: Record
    witness: InstanceRecord | None = None

    @property
    def holder(self) -> Record:
        """The record whose values (and those of its parents) the result is made of."""
        return self.witness or self.record


class Unwitnessed(Sequence[Match]):
    """The matches of a search that needs no witness, each made when it is read: a page of
    50 out of 100,000 studies then costs 50 objects, not 100,000 (which took a QIDO-RS
    search of every study from 60 to 230 ms). Slices and sums stay lazy."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Match: ...
    @overload
    def __getitem__(self, index: slice) -> Unwitnessed: ...
    def __getitem__(self, index: int | slice) -> Match | Unwitnessed:
        if isinstance(index, slice):
            return Unwitnessed(self.records[index])
        return Match(self.records[index])

    def __iter__(self) -> Iterator[Match]:
        return (Match(record) for record in self.records)

    def __add__(self, other: Unwitnessed) -> Unwitnessed:
        return Unwitnessed(self.records + other.records)


def matched_in_sidecars(
    read: Callable[[InstanceRecord], dict[str, Any] | None],
    candidates: list[Candidate],
    conditions: list[tuple[str, Condition]],
    wanted: int | None,
) -> list[Match]:
    """The candidates one of whose instances' DICOM JSON (``read``; None: gone meanwhile)
    meets every condition, that instance as the witness; at most ``wanted`` (blocking)."""
    found: list[Match] = []
    for record, instances in candidates:
        if wanted is not None and len(found) >= wanted:
            break
        for instance in instances:
            metadata = read(instance)
            if metadata is not None and _meets(metadata, conditions):
                found.append(Match(record, instance))
                break
    return found


def _meets(metadata: dict[str, Any], conditions: list[tuple[str, Condition]]) -> bool:
    for tag, condition in conditions:  # noqa: SIM110 (a loop: faster than all() here)
        if not accepts(condition, json_value(metadata.get(tag))):
            return False
    return True
