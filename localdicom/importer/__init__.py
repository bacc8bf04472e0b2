"""``localdicom import``: bring existing DICOM data into an archive.

Data arrives as folder trees (files named IM0001, 1.dcm or anything), zip files and DICOMDIR
media. Import finds DICOM by content (a Part 10 file has 'DICM' at byte 128), never by name,
and stores each instance as STOW-RS would: the same layout, sidecar, digest and duplicate
rule. :mod:`.sources` walks, :mod:`.examine` runs in the workers, :mod:`.run` drives one
import, :mod:`.sinks` commits (directly, or through the running server by STOW-RS), and
:mod:`.report` counts.
"""

from localdicom.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "localdicom.archive": ["ArchiveBusy"],
        "localdicom.importer.examine": ["Examined", "Kind", "Transfer", "why"],
        "localdicom.importer.report": ["ImportReport", "NoProgress", "Progress", "count"],
        "localdicom.importer.run": [
            "CannotImport",
            "Deidentify",
            "ImportOptions",
            "ingest_sink",
            "run_import",
        ],
        "localdicom.importer.sources": ["Found", "survey"],
    },
)
