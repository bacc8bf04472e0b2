"""Which instances a selection names on a DICOMweb remote: its QIDO-RS searches
(:meth:`Selection.searches`) expanded study -> series -> instances, each lower search
carrying the conditions that belong to its own level (PS3.18 Table 10.6.1-5)."""

from __future__ import annotations

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


async def announced(client: DicomwebClient, selection: Selection) -> list[Announced]:
    """Every instance of the selection on the remote, each once, in the order found."""
    found: dict[str, Announced] = {}
    for level, params in selection.searches():
        for instance in await _expand(client, level, params):
            found.setdefault(instance.sop, instance)
    return list(found.values())


async def _expand(
    client: DicomwebClient, level: str, params: list[tuple[str, str]]
) -> list[Announced]:
    if level == INSTANCE:
        return _instances(await client.search("/instances", params), None, None)
    if level == SERIES:
        series = [
            (_uid(match, STUDY_UID), _uid(match, SERIES_UID))
            for match in await client.search("/series", params)
        ]
    else:
        series = []
        for study_match in await client.search("/studies", params):
            study = _uid(study_match, STUDY_UID)
            path = f"/studies/{study}/series"
            matches = await client.search(path, own_level(params, SERIES))
            series += [(study, _uid(match, SERIES_UID)) for match in matches]
    result = []
    for study, each in series:
        path = f"/studies/{study}/series/{each}/instances"
        result += _instances(await client.search(path, own_level(params, INSTANCE)), study, each)
    return result


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
