"""Taking instances out of the trash and back into the archive, in place: the rule that
``localdicom trash restore`` (with no server running) and the server's Trash page share.

An instance goes back where it was unless an instance with its SOP Instance UID is stored
again meanwhile: with the very same bytes, the trashed copy is dropped (``present``); with
others, it is a conflict, listed and left in the trash (nothing stored is ever replaced by
a restore). The caller holds the archive against other writers (the archive lock, or the
server's commit lock) and says which instances are stored (``stored``: SOP Instance UID ->
its file), from a scan or from its index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdicom.archive import sidecar
from localdicom.archive.archive import Archive
from localdicom.archive.trash import Entry, Trash, Trashed


@dataclass(frozen=True)
class Selection:
    """Which trashed instances to restore: every one, or those of a study, series or
    instance (by UID), or of one trash entry."""

    study: str | None = None
    series: str | None = None
    instance: str | None = None
    entry: str | None = None

    def __contains__(self, trashed: Trashed) -> bool:
        return (
            self.entry in (None, trashed.entry)
            and self.study in (None, trashed.study)
            and self.series in (None, trashed.series)
            and self.instance in (None, trashed.sop)
        )


@dataclass
class RestoreReport:
    restored: list[Trashed] = field(default_factory=list)
    #: Already stored with these very bytes: dropped from the trash.
    present: list[Trashed] = field(default_factory=list)
    conflicts: list[tuple[Trashed, str]] = field(default_factory=list)
    errors: list[tuple[Trashed, str]] = field(default_factory=list)
    server: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.conflicts or self.errors else 0

    def lines(self) -> list[str]:
        where = f" through the server at {self.server}" if self.server else ""
        lines = [
            f"{len(self.restored)} instances restored{where}, {len(self.present)} already "
            f"stored (identical), {len(self.conflicts)} conflicts, {len(self.errors)} errors"
        ]
        lines += [f"  conflict {t.sop} (.trash/{t.entry}): {why}" for t, why in self.conflicts]
        lines += [f"  error {t.sop} (.trash/{t.entry}): {why}" for t, why in self.errors]
        return lines


def selected(trash: Trash, selection: Selection) -> list[Trashed]:
    """The trashed instances chosen, newest removal first: when one SOP Instance UID is in
    the trash more than once (replaced, then deleted), the last copy removed is restored
    and the older ones are conflicts."""
    newest_first = reversed(list(trash.entries()))
    return [each for entry in newest_first for each in entry.instances if each in selection]


def stored_files(archive: Archive) -> dict[str, Path]:
    """Every stored instance's file by SOP Instance UID, from a scan of the folders."""
    return {path.stem: path for path in archive.instance_files()}


def restore_in_place(
    archive: Archive, chosen: Iterable[Trashed], stored: dict[str, Path]
) -> RestoreReport:
    """Put the ``chosen`` instances back (see the module docstring), flush the folders they
    went to and remove the trash entries left empty. ``stored`` is updated."""
    report = RestoreReport()
    for trashed in chosen:
        present = stored.get(trashed.sop)
        try:
            if present is None:
                stored[trashed.sop] = archive.put_back(trashed)
                report.restored.append(trashed)
            elif _digest(present) == _digest(trashed.path):
                archive.trash.forget(trashed)
                report.present.append(trashed)
            else:
                report.conflicts.append((trashed, _stored_at(archive, present)))
        except OSError as exc:
            report.errors.append((trashed, f"cannot be restored: {exc}"))
    folders = [archive.root]
    for each in report.restored:
        folders += [archive.study_dir(each.study), archive.series_dir(each.study, each.series)]
    archive.trash.tidy(report.restored + report.present, folders)
    return report


def _digest(dcm: Path) -> str | None:
    stored = sidecar.read_current(dcm)
    return stored.digest if stored is not None else None


def _stored_at(archive: Archive, stored: Path) -> str:
    where = stored.relative_to(archive.root)
    return f"an instance with this UID is stored ({where}); delete it first to restore this one"


def summary(entry: Entry) -> dict[str, Any]:
    """An entry as the Trash page shows it (JSON-ready): when, why, by whom, how much, and
    the studies and patients it holds, read from the trashed instances' sidecars."""
    manifest = entry.manifest
    code = manifest.get("code")
    studies: dict[str, dict[str, str]] = {}
    for trashed in entry.instances:
        if trashed.study not in studies:
            studies[trashed.study] = _study_of(trashed)
    return {
        "entry": entry.name,
        "removed": entry.removed_at,
        "reason": str(manifest.get("reason", "")),
        "code": f"{code.get('value')}^{code.get('designator')}" if isinstance(code, dict) else "",
        "by": str(manifest.get("by", "")),
        "instances": len(entry.instances),
        "size": sum(each.size for each in entry.instances),
        "studies": [{"study": uid, **about} for uid, about in studies.items()],
    }


def _study_of(trashed: Trashed) -> dict[str, str]:
    """Patient name, ID and study description of a trashed instance ("" when unknown)."""
    stored = sidecar.read_current(trashed.path)
    metadata = stored.header.metadata if stored is not None else {}
    return {
        "patient": _text(metadata, "00100010"),
        "patient_id": _text(metadata, "00100020"),
        "description": _text(metadata, "00081030"),
    }


def _text(metadata: dict[str, Any], tag: str) -> str:
    values = (metadata.get(tag) or {}).get("Value") or [""]
    first = values[0]
    if isinstance(first, dict):  # a person name (PS3.18 F.2.2)
        first = first.get("Alphabetic", "")
    return str(first)
