"""Where everything of an archive lives: the one place that names its files and folders.

::

    ARCHIVE/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm    bytes as received
    ARCHIVE/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.json   its sidecar
    ARCHIVE/.incoming/                    uploads and copies waiting to be committed
    ARCHIVE/.cache/thumbnails/            rendered thumbnails
    ARCHIVE/.trash/                       what DELETE and --overwrite removed (:mod:`.trash`)
    ARCHIVE/.index-snapshot               the index as saved at the last start or stop
    ARCHIVE/.changefeed/                  the change feed (:mod:`.changefeed`)
    ARCHIVE/.localdicom-server            the server running on the archive, if any
    ARCHIVE/.import.lock                  held by an import or reindex writing directly
    ARCHIVE/.transfers/<remote>.json      what pull and push moved to and from each remote

Every path is built from UIDs that :func:`check_uid` accepted (PS3.5 9.1: digits and dots,
at most 64 characters), so nothing a client sends can name a file outside the folder.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from localdicom.archive.files import is_temporary
from localdicom.dicom.uids import check_uid, is_valid_uid

INSTANCE_SUFFIX = ".dcm"
SIDECAR_SUFFIX = ".json"
STAGING_SUFFIX = ".part"
SNAPSHOT = ".index-snapshot"
SERVER_FILE = ".localdicom-server"


def sidecar_of(dcm: Path) -> Path:
    return dcm.with_suffix(SIDECAR_SUFFIX)


class Layout:
    """The paths of one archive folder; nothing here reads or writes a file's content."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_name = str(root)
        self.incoming = root / ".incoming"
        self.thumbnails = root / ".cache" / "thumbnails"
        self.trash_dir = root / ".trash"
        self.snapshot = root / SNAPSHOT
        self.changefeed = root / ".changefeed"
        self.server_file = root / SERVER_FILE
        self.lock_file = root / ".import.lock"
        self.transfers = root / ".transfers"
        #: Staging names: a random prefix drawn once, then a counter (no syscall per upload).
        self._session = uuid.uuid4().hex[:16]
        self._staged = itertools.count()

    def study_dir(self, study: str) -> Path:
        return self.root / check_uid(study, "StudyInstanceUID")

    def series_dir(self, study: str, series: str) -> Path:
        return self.study_dir(study) / check_uid(series, "SeriesInstanceUID")

    def instance_file(self, study: str, series: str, sop: str) -> Path:
        sop = check_uid(sop, "SOPInstanceUID")
        return self.series_dir(study, series) / (sop + INSTANCE_SUFFIX)

    def sidecar_name(self, study: str, series: str, sop: str) -> str:
        """An instance's sidecar as a path string: a search may read thousands, and making
        a Path costs more than reading a small file."""
        uids = (check_uid(study), check_uid(series), check_uid(sop) + SIDECAR_SUFFIX)
        return os.path.join(self._root_name, *uids)

    def new_staging_file(self, folder: Path | None = None) -> Path:
        """A fresh path in the upload area (or ``folder``) for bytes that are renamed into
        place or deleted. Each process draws its own prefix (a worker makes its own
        :class:`Layout`), so names never clash across the processes of an import."""
        name = f"{self._session}-{next(self._staged)}{STAGING_SUFFIX}"
        return (folder or self.incoming) / name

    def thumbnail_file(self, sop: str, key: str) -> Path:
        """A cached thumbnail of an instance; ``key`` names its content and options."""
        return self.thumbnails / f"{check_uid(sop, 'SOPInstanceUID')}_{key}"

    def thumbnails_of(self, sop: str) -> Iterator[Path]:
        if self.thumbnails.is_dir():
            yield from self.thumbnails.glob(f"{check_uid(sop, 'SOPInstanceUID')}_*")

    # walking ---------------------------------------------------------------------------------

    def study_folders(self) -> Iterator[Path]:
        return _subfolders(self.root)

    def series_folders(self, study: Path) -> Iterator[Path]:
        return _subfolders(study)

    def instance_files(self) -> Iterator[Path]:
        """Every .dcm in the layout, reading and repairing nothing."""
        for study in self.study_folders():
            for series in self.series_folders(study):
                with os.scandir(series) as entries:
                    for entry in entries:
                        if is_instance_name(entry.name):
                            yield Path(entry.path)

    def owns(self, inside: tuple[str, ...], name: str) -> bool:
        """Whether ``name`` in the folder ``inside`` (relative to the root) is the archive's
        own: the dot files at its root and the instances, sidecars and temporary files of
        the layout. An import of a folder holding the archive leaves these alone."""
        if not inside:
            return name.startswith(".")
        if len(inside) != 2 or not all(is_valid_uid(part) for part in inside):
            return False
        if is_temporary(Path(name)):
            return True
        stem, suffix = os.path.splitext(name)
        return suffix in (INSTANCE_SUFFIX, SIDECAR_SUFFIX) and is_valid_uid(stem)


def is_instance_name(name: str) -> bool:
    return name.endswith(INSTANCE_SUFFIX) and not name.startswith(".")


def _subfolders(folder: Path) -> Iterator[Path]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith("."):
                yield Path(entry.path)
