"""``localdicom import``: bring existing DICOM data into an archive.

Data arrives as folder trees (files named IM0001, 1.dcm or anything), zip files and DICOMDIR
media. Import finds DICOM by content (a Part 10 file has 'DICM' at byte 128), never by name,
and stores each instance as STOW-RS would: the same layout, sidecar, digest and duplicate
rule. :mod:`.sources` walks, :mod:`.examine` runs in the workers, :mod:`.run` drives one
import, :mod:`.sinks` commits (directly, or through the running server by STOW-RS), and
:mod:`.report` counts.
"""

from localdicom.archive import ArchiveBusy
from localdicom.importer.examine import Examined, Kind, Transfer, why
from localdicom.importer.report import ImportReport, NoProgress, Progress, count
from localdicom.importer.run import (
    CannotImport,
    Deidentify,
    ImportOptions,
    ingest_sink,
    run_import,
    stopping_on_signals,
)
from localdicom.importer.sources import Found, survey

__all__ = [
    "ArchiveBusy",
    "CannotImport",
    "Deidentify",
    "Examined",
    "Found",
    "ImportOptions",
    "ImportReport",
    "Kind",
    "NoProgress",
    "Progress",
    "Transfer",
    "count",
    "ingest_sink",
    "run_import",
    "stopping_on_signals",
    "survey",
    "why",
]
