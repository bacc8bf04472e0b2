"""The index rebuilt from the archive at start, and saved as a snapshot for the next one.

A series folder unchanged since the last snapshot (the same stamp) comes from it; any other,
or one whose entry is damaged, is read from its sidecars (repaired where needed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from localdicom.archive import Archive, ScanReport, StoredInstance, scan, snapshot
from localdicom.index import Index

logger = logging.getLogger(__name__)

#: Files of each series folder that the startup scan could not serve, by name (kept in the
#: snapshot so that a folder restored from it reports them again).
Skipped = dict[str, list[list[str]]]


def rebuild(archive: Archive, index: Index, report: ScanReport) -> Skipped:
    """Fill ``index`` from ``archive``; the snapshot is written again if anything changed."""
    archive.prepare()
    archive.trash.recover()  # before the scan: a removal cut short is put back or finished
    report.removed_leftovers += scan.clean_incoming(archive)
    report.removed_leftovers += scan.clean_temporary(archive)
    schema, entries = snapshot.read(archive, index.schemas)
    skipped: Skipped = {}
    unchanged = schema in (None, index.schema)  # one of an older layout is written anew
    for folder in scan.series_folders(archive, report):
        key = snapshot.key(folder)
        first_skipped = len(report.skipped)
        try:
            entry = snapshot.entry(entries.pop(key.encode(), None))
            if entry is not None and entry.get("stamp") == snapshot.stamp(folder):
                _restore(index, entry, folder, report)
            else:
                unchanged = False
                _read_series(archive, index, folder, report)
            skipped[key] = [[path.name, why] for path, why in report.skipped[first_skipped:]]
        except OSError as exc:  # an unreadable folder: the rest of the archive is served
            unchanged = False
            report.skipped.append((folder, f"the folder cannot be read ({exc.strerror})"))
    gone = bool(entries)  # folders in the snapshot no longer in the archive
    entries.clear()  # unmaps the old snapshot before it is replaced
    if not unchanged or gone:
        save(archive, index, skipped)
    return skipped


def _restore(index: Index, entry: dict, folder: Path, report: ScanReport) -> None:
    index.restore_series(entry)
    report.from_snapshot += len(entry["instances"])
    report.skipped += [(folder / name, why) for name, why in entry.get("skipped", [])]


def _read_series(archive: Archive, index: Index, folder: Path, report: ScanReport) -> None:
    for stored in list(scan.scan_series(archive, folder, report, archive.fsync)):
        index.add(stored)


def save(archive: Archive, index: Index, skipped: Skipped) -> None:
    """Write the index down with each series folder's stamp (at start and at stop).

    A snapshot that cannot be written (a full disk) only makes the next start slower."""
    entries = {}
    for series in index.series.values():
        folder = archive.series_dir(series.study, series.uid)
        try:
            stamp = snapshot.stamp(folder)
        except OSError:
            continue
        entry = {**index.series_snapshot(series), "stamp": stamp}
        key = snapshot.key(folder)
        kept = [item for item in skipped.get(key, []) if item[0] in stamp]
        if kept:
            entry["skipped"] = kept
        entries[key] = entry
    try:
        snapshot.write(archive, index.schema, entries, archive.fsync)
    except OSError as exc:
        logger.warning("the index snapshot could not be written: %s", exc)


class SnapshotKeeper:
    """The index of an archive that something other than the server writes to (a direct
    ``localdicom import``), kept in step with what it stores, so that the snapshot it leaves
    is current: the next start then restores every series from it instead of reading the
    sidecars of everything imported (minutes for a million instances)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.index = Index()
        self.skipped = rebuild(archive, self.index, ScanReport())

    def stored(self, instance: StoredInstance) -> None:
        self.index.add(instance)

    def save(self) -> None:
        save(self.archive, self.index, self.skipped)
