"""Which instances a selection names on a DICOMweb remote: its QIDO-RS searches
(:meth:`Selection.searches`) expanded study -> series -> instances, each lower search
carrying the conditions that belong to its own level (PS3.18 Table 10.6.1-5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localdicom.dicom.qido import (
    INSTANCE,
    LEVEL_ATTRIBUTES,
    SERIES,
    QueryError,
    attribute_tag,
    json_value,
)
from localdicom.selection import Selection
from localdicom.transfer.dicomweb import DicomwebClient, RemoteError

STUDY_UID, SERIES_UID, SOP_UID, SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"
SERIES_INSTANCES = "00201209"  # Number of Series Related Instances (PS3.18 Table 10.6.3-5)


@dataclass(frozen=True)
class Announced:
    """An instance as a remote's QIDO-RS announced it."""

    study: str
    series: str
    sop: str

    @property
    def uids(self) -> tuple[str, str, str]:
        return self.study, self.series, self.sop

    @property
    def path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"


@dataclass(frozen=True)
class WholeSeries:
    """A series the archive has nothing of, fetched whole without listing its instances
    (an instance-level search of a large series costs the remote more than the series)."""

    study: str
    series: str
    #: How many instances the remote says it has, if it says.
    count: int

    @property
    def path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}"


def own_level(params: list[tuple[str, str]], level: str) -> list[tuple[str, str]]:
    """The conditions on attributes of ``level`` itself (a lower search of one study or
    series carries those; the UIDs are in its path)."""
    kept = []
    for name, value in params:
        try:
            tag = attribute_tag(name)
        except QueryError:
            continue
        if tag in LEVEL_ATTRIBUTES[level] and tag not in (STUDY_UID, SERIES_UID):
            kept.append((name, value))
    return kept


async def announced(
    client: DicomwebClient, selection: Selection, absent: Callable[[str, str], bool]
) -> tuple[list[Announced], list[WholeSeries]]:
    """Every instance of the selection on the remote, each once, in the order found; a
    series the archive has nothing of (``absent``) and that no instance-level condition
    narrows comes whole instead of instance by instance."""
    found: dict[str, Announced] = {}
    whole: dict[str, WholeSeries] = {}
    for level, params in selection.searches():
        instances, series = await _expand(client, level, params, absent)
        for instance in instances:
            found.setdefault(instance.sop, instance)
        for each in series:
            whole.setdefault(each.series, each)
    return list(found.values()), list(whole.values())


async def _expand(
    client: DicomwebClient,
    level: str,
    params: list[tuple[str, str]],
    absent: Callable[[str, str], bool],
) -> tuple[list[Announced], list[WholeSeries]]:
    if level == INSTANCE:
        return _instances(await client.search("/instances", params), None, None), []
    if level == SERIES:
        series = [
            (_uid(match, STUDY_UID), match) for match in await client.search("/series", params)
        ]
    else:
        series = []
        for study_match in await client.search("/studies", params):
            study = _uid(study_match, STUDY_UID)
            path = f"/studies/{study}/series"
            series += [
                (study, match) for match in await client.search(path, own_level(params, SERIES))
            ]
    instances: list[Announced] = []
    whole: list[WholeSeries] = []
    narrowed = bool(own_level(params, INSTANCE))
    for study, match in series:
        each = _uid(match, SERIES_UID)
        if absent(study, each) and not narrowed:
            whole.append(WholeSeries(study, each, _count(match)))
            continue
        path = f"/studies/{study}/series/{each}/instances"
        instances += _instances(await client.search(path, own_level(params, INSTANCE)), study, each)
    return instances, whole


def _count(match: dict[str, Any]) -> int:
    value = json_value(match.get(SERIES_INSTANCES))
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _instances(
    matches: list[dict[str, Any]], study: str | None, series: str | None
) -> list[Announced]:
    return [
        Announced(
            _uid(match, STUDY_UID, study), _uid(match, SERIES_UID, series), _uid(match, SOP_UID)
        )
        for match in matches
    ]


def _uid(match: dict[str, Any], tag: str, known: str | None = None) -> str:
    value = json_value(match.get(tag)) or known
    if not isinstance(value, str) or not value:
        raise RemoteError(f"a QIDO-RS match without {tag}: the remote's answer is not usable")
    return value


def instances_of(matches: list[dict[str, Any]], series: WholeSeries) -> list[Announced]:
    """The matches of an instance search of ``series``."""
    return _instances(matches, series.study, series.series)
