"""``localdicom ls``: a table of the studies in an archive, read from the sidecars."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdicom.archive import Layout, StoredInstance, Trash, sidecar


@dataclass
class SeriesSummary:
    uid: str
    number: str = ""
    modality: str = ""
    description: str = ""
    date: str = ""
    instances: int = 0
    size: int = 0


@dataclass
class StudySummary:
    uid: str
    patient: str = ""
    patient_id: str = ""
    date: str = ""
    description: str = ""
    series: dict[str, SeriesSummary] = field(default_factory=dict)

    @property
    def instances(self) -> int:
        return sum(series.instances for series in self.series.values())

    @property
    def size(self) -> int:
        return sum(series.size for series in self.series.values())

    @property
    def modalities(self) -> str:
        return ",".join(sorted({s.modality for s in self.series.values() if s.modality}))


@dataclass
class Listing:
    studies: list[StudySummary]
    #: .dcm files whose sidecar is missing or unreadable: not listed.
    unlisted: int = 0
    #: Instances in the trash (``localdicom trash ls``), and their size.
    trashed: int = 0
    trashed_size: int = 0


def list_studies(root: Path) -> Listing:
    """Studies and series of the archive, read from the sidecars only (nothing is parsed
    again, nothing is written)."""
    studies: dict[str, StudySummary] = {}
    unlisted = 0
    for dcm in Layout(root).instance_files():
        try:
            stored, length = sidecar.read_with_length(dcm)
        except (OSError, ValueError, KeyError, TypeError):
            unlisted += 1
            continue
        _add_instance(studies, stored, length)
    ordered = sorted(studies.values(), key=lambda s: (s.date, s.patient, s.uid))
    trashed = [each for entry in Trash(Layout(root), False).entries() for each in entry.instances]
    return Listing(ordered, unlisted, len(trashed), sum(each.size for each in trashed))


def _add_instance(studies: dict[str, StudySummary], stored: StoredInstance, extra: int) -> None:
    header = stored.header
    metadata = header.metadata
    study = studies.get(header.study_uid)
    if study is None:
        study = StudySummary(
            header.study_uid,
            patient=_text(metadata, "00100010"),
            patient_id=_text(metadata, "00100020"),
            date=_text(metadata, "00080020"),
            description=_text(metadata, "00081030"),
        )
        studies[study.uid] = study
    series = study.series.get(header.series_uid)
    if series is None:
        series = SeriesSummary(
            header.series_uid,
            number=_text(metadata, "00200011"),
            modality=_text(metadata, "00080060"),
            description=_text(metadata, "0008103E"),
            date=_text(metadata, "00080021"),
        )
        study.series[series.uid] = series
    series.instances += 1
    series.size += stored.size + extra


def _text(metadata: dict[str, Any], tag: str) -> str:
    """The first value of an attribute as text (a person name by its alphabetic form)."""
    values = metadata.get(tag, {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):
        value = value.get("Alphabetic", "")
    return str(value)


def listing_rows(listing: Listing, *, with_series: bool) -> list[list[str]]:
    """The table ``localdicom ls`` prints: a header row, then a row per study (and series)."""
    rows = [
        [
            "PATIENT",
            "ID",
            "DATE",
            "DESCRIPTION",
            "MODALITIES",
            "SERIES",
            "INSTANCES",
            "SIZE",
            "STUDY UID",
        ]
    ]
    for study in listing.studies:
        rows.append(
            [
                study.patient,
                study.patient_id,
                _date(study.date),
                study.description,
                study.modalities,
                str(len(study.series)),
                str(study.instances),
                human_size(study.size),
                study.uid,
            ]
        )
        if with_series:
            ordered = sorted(study.series.values(), key=lambda s: (_number(s.number), s.uid))
            rows += [
                [
                    "",
                    "",
                    _date(s.date),
                    f"  {s.description}",
                    s.modality,
                    f"#{s.number}" if s.number else "",
                    str(s.instances),
                    human_size(s.size),
                    s.uid,
                ]
                for s in ordered
            ]
    return rows


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 1 << 31


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else value


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def format_table(rows: list[list[str]], numeric: Iterable[int] = ()) -> list[str]:
    """Rows as aligned text; ``numeric`` columns are right-aligned."""
    right = set(numeric)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
