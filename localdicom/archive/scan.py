"""Reading an archive folder at startup: every instance, with its sidecar repaired where
needed, and the leftovers of interrupted writes removed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from localdicom.archive import sidecar
from localdicom.archive.files import TEMPORARY_GLOB, is_temporary
from localdicom.archive.layout import INSTANCE_SUFFIX, SIDECAR_SUFFIX, Layout
from localdicom.dicom.header import NotDicom


@dataclass
class ScanReport:
    """What the startup scan found besides intact instances."""

    regenerated: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    removed_leftovers: int = 0
    #: Instances taken from the index snapshot rather than read from their sidecars.
    from_snapshot: int = 0


def series_folders(layout: Layout, report: ScanReport) -> Iterator[Path]:
    """Every series folder; a study folder that cannot be read is reported and skipped."""
    for study in sorted(layout.study_folders()):
        try:
            series = sorted(layout.series_folders(study))
        except OSError as exc:
            report.skipped.append((study, f"the folder cannot be read ({exc.strerror})"))
            continue
        yield from series


def scan_series(
    layout: Layout, folder: Path, report: ScanReport, fsync: bool
) -> Iterator[sidecar.StoredInstance]:
    """Every instance of a series folder. A sidecar that is missing, unreadable, of another
    format, or older than its .dcm is regenerated from the .dcm; a file that is not a DICOM
    instance where it stands is reported and left alone; leftovers of interrupted writes
    are removed."""
    for path in sorted(folder.iterdir()):
        if is_temporary(path):
            path.unlink(missing_ok=True)
            report.removed_leftovers += 1
        elif path.suffix == INSTANCE_SUFFIX and not path.is_file():
            report.skipped.append((path, "not a regular file"))  # reading a FIFO blocks
        elif path.suffix == INSTANCE_SUFFIX:
            stored = _load(layout, path, report, fsync)
            if stored is not None:
                yield stored
        elif path.suffix == SIDECAR_SUFFIX and not path.with_suffix(INSTANCE_SUFFIX).exists():
            path.unlink(missing_ok=True)  # sidecar of a file deleted by hand
            report.removed_leftovers += 1


def clean_incoming(layout: Layout) -> int:
    """Delete leftovers of interrupted uploads; only safe while nothing else writes there."""
    leftovers = list(layout.incoming.iterdir()) if layout.incoming.is_dir() else []
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def clean_temporary(layout: Layout) -> int:
    """Delete temporary files of interrupted atomic writes in the archive folder, the
    thumbnail cache and the change feed (series folders are cleaned by :func:`scan_series`)."""
    leftovers = [
        path
        for folder in (layout.root, layout.thumbnails, layout.changefeed)
        if folder.is_dir()
        for path in folder.glob(TEMPORARY_GLOB)
    ]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def _load(
    layout: Layout, dcm: Path, report: ScanReport, fsync: bool
) -> sidecar.StoredInstance | None:
    current = sidecar.read_current(dcm)
    if current is not None:
        if os.access(dcm, os.R_OK):
            return current
        report.skipped.append((dcm, "the file cannot be read (permission denied)"))
        return None
    try:  # missing, unreadable or of an older format: regenerate
        stored = sidecar.regenerate(layout, dcm, fsync)
    except (NotDicom, OSError) as exc:
        report.skipped.append((dcm, str(exc)))
        return None
    except Exception as exc:  # pydicom's own errors on a damaged file
        report.skipped.append((dcm, f"not a readable DICOM Part 10 file ({str(exc)[:200]})"))
        return None
    report.regenerated.append(dcm)
    return stored
