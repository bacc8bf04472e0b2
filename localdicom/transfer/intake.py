"""Pulled instances into the archive, through the import's sink (directly, or through the
server running on the archive by STOW-RS) under the same duplicate rule, after checking each
is what the remote announced.

Files arrive whole in the sink's staging folder (written by the DICOMweb or DIMSE client,
hashed on the way); :meth:`Intake.take` is called from any thread, one at a time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from localdicom.archive import TransferRecord
from localdicom.dicom.header import NotDicom, describe
from localdicom.importer import Examined, ImportReport, Kind, Progress
from localdicom.importer.sinks import Sink


@dataclass(frozen=True)
class Pulled:
    """Where an instance came from (what the summary names), standing in for the import's
    Source: ``path`` is the staged file, never a source to move."""

    path: Path
    label: str
    member: None = None

    def __str__(self) -> str:
        return self.label


#: What a file must be: (study, series, SOP Instance UID); one of several by SOP Instance
#: UID (the parts of a series); any instance of (study, series) (a series fetched whole); or
#: anything (None: a C-GET's sub-operation, checked by pynetdicom).
Expected = tuple[str, ...] | dict[str, tuple[str, str, str]] | None


class Intake:
    """One committer for a pull: checks, stores, counts and records each instance."""

    def __init__(
        self, sink: Sink, report: ImportReport, record: TransferRecord, progress: Progress
    ) -> None:
        self.sink = sink
        self.report = report
        self.pulled = record.digests("pulled")
        self.progress = progress
        self.lock = threading.Lock()

    def take(
        self,
        staged: Path,
        size: int,
        digest: str,
        announced: Expected,
        label: str,
    ) -> str | None:
        """Store the file at ``staged`` (removed in any case) if it is the instance announced
        as (study, series, SOP Instance UID), or one of those (by SOP Instance UID); else
        count it as an error. Returns the SOP Instance UID the file holds, if it parses."""
        with self.lock:
            try:
                return self._take(staged, size, digest, announced, label)
            finally:
                staged.unlink(missing_ok=True)
                self.progress.advance(1, size)

    def _take(
        self,
        staged: Path,
        size: int,
        digest: str,
        announced: Expected,
        label: str,
    ) -> str | None:
        try:
            with staged.open("rb") as fp:
                header = describe(fp)
        except (NotDicom, OSError) as exc:
            self.report.errors.append((label, f"not a DICOM instance that can be stored: {exc}"))
            return None
        found = (header.study_uid, header.series_uid, header.sop_uid)
        expected = announced.get(header.sop_uid) if isinstance(announced, dict) else announced
        if announced is not None and found[: len(expected or ())] != expected:
            self.report.errors.append((label, f"the remote sent {'/'.join(found)} instead"))
            return header.sop_uid
        report = self.report
        before = report.stored + report.duplicates
        item = Examined(Pulled(staged, label), Kind.INSTANCE, size=size, header=header)  # type: ignore[arg-type]
        item.digest, item.staged = digest, staged
        sent = self.sink.store(item, report)
        if sent is not None:
            self.sink.settle(sent, report)
        report.size += size
        if report.stored + report.duplicates > before:
            self.pulled[header.sop_uid] = digest
        return header.sop_uid

    def fail(self, label: str, reason: str) -> None:
        with self.lock:
            self.report.errors.append((label, reason))
            self.progress.advance(1, 0)
