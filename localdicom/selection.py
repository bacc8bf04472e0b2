"""Which instances a command works on: ``--study``, ``--series``, ``--query KEY=VALUE`` and
``--all``, the same for every command that moves data (``export``, ``push``, ``pull``).

A selection is read two ways: against a remote, as the QIDO-RS searches that find it
(:meth:`Selection.searches`), and against a local archive, from the sidecars alone
(:func:`local_instances`), so that it is safe while a server runs on the archive: nothing is
written, and nothing of the server's (its upload area, its snapshot) is touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import click

from localdicom.archive import Layout, StoredInstance, sidecar
from localdicom.dicom.qido import (
    INSTANCE,
    SERIES,
    STUDY,
    Condition,
    accepts,
    attribute_tag,
    json_value,
    parse_condition,
    searchable,
)
from localdicom.dicom.uids import check_uid

STUDY_UID, SERIES_UID = "0020000D", "0020000E"


@dataclass(frozen=True)
class Selection:
    """Studies and series named by UID (either selects), narrowed by attribute conditions
    (all must hold, with QIDO-RS matching: PS3.18 8.3.4); ``everything`` when none is named."""

    studies: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    queries: tuple[tuple[str, str], ...] = ()
    everything: bool = False

    def __post_init__(self) -> None:
        if self.everything == bool(self.studies or self.series or self.queries):
            raise ValueError("give --all, or at least one of --study, --series and --query")
        for uid in self.studies:
            check_uid(uid, "--study")
        for uid in self.series:
            check_uid(uid, "--series")
        self.conditions  # noqa: B018 (parsed now: a QueryError names the bad key or value)

    @cached_property
    def conditions(self) -> dict[str, Condition]:
        """The ``--query`` conditions by tag."""
        tags = [(attribute_tag(name), value) for name, value in self.queries]
        return {tag: parse_condition(tag, value) for tag, value in tags}

    def searches(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The QIDO-RS searches (level, query parameters) whose matches are the selection:
        one per named study or series, or one for the conditions alone, at the highest level
        that can test every key (PS3.18 Table 10.6.1-5 lists each level's keys)."""
        extra = list(self.queries)
        if self.studies or self.series:
            named = [(STUDY, [("StudyInstanceUID", uid), *extra]) for uid in self.studies]
            return named + [(SERIES, [("SeriesInstanceUID", uid), *extra]) for uid in self.series]
        return [(_level_of(self.conditions), extra)]

    def includes(self, metadata: dict[str, Any]) -> bool:
        """Whether an instance, by its DICOM JSON, is selected."""
        named = not (self.studies or self.series) or (
            json_value(metadata.get(STUDY_UID)) in self.studies
            or json_value(metadata.get(SERIES_UID)) in self.series
        )
        return named and all(
            accepts(condition, json_value(metadata.get(tag)))
            for tag, condition in self.conditions.items()
        )


def _level_of(tags: dict[str, Condition]) -> str:
    for level in (STUDY, SERIES):
        if set(tags) <= set(searchable(level)):
            return level
    return INSTANCE


def local_instances(root: Path, selection: Selection) -> Iterator[tuple[Path, StoredInstance]]:
    """The selected instances of the archive at ``root`` (their .dcm and what their sidecar
    says), study by study. An instance without a readable sidecar is not selected:
    ``localdicom reindex`` repairs it."""
    layout = Layout(root)
    for dcm in layout.instance_files():
        try:
            stored = sidecar.read_with_length(dcm)[0]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if selection.includes(stored.header.metadata):
            yield dcm, stored


def selection_from(
    studies: tuple[str, ...],
    series: tuple[str, ...],
    queries: tuple[tuple[str, str], ...],
    everything: bool,
) -> Selection:
    """The options ``--study``, ``--series``, ``--query`` and ``--all`` (declared in
    :mod:`localdicom.settings`) as a :class:`Selection`, or a usage error
    a person can act on."""
    try:
        return Selection(studies, series, queries, everything)
    except ValueError as exc:  # and QueryError, InvalidUID
        raise click.UsageError(str(exc)) from None
