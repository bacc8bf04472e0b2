"""Pulled instances into the archive, through the import's sink (directly, or through the
server running on the archive by STOW-RS) under the same duplicate rule, after checking each
is what the remote announced.

An instance arrives as its bytes in memory, or, larger than the client keeps in memory, as
a file in the sink's staging folder (hashed on the way). :meth:`Intake.take` is called from
any thread, several at once: the checks, the hashing and the staged copy of one instance
(hashing and writing leave the GIL) go on beside another's; the decision and the store are
one at a time, under the intake's lock.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localdicom.archive import TransferRecord
from localdicom.archive.held import aligned, write_held
from localdicom.dicom.describing import describe
from localdicom.dicom.header import NotDicom
from localdicom.importer import Examined, ImportReport, Kind, Progress
from localdicom.importer.sinks import Sink
from localdicom.transfer.received import Received


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
    """The way in for a pull: checks, stages, stores, counts and records each instance."""

    def __init__(
        self,
        sink: Sink,
        report: ImportReport,
        record: TransferRecord,
        progress: Progress,
        stage: Callable[[], Path],
    ) -> None:
        self.sink = sink
        self.report = report
        self.pulled = record.digests("pulled")
        self.progress = progress
        #: A fresh path in the sink's staging folder.
        self.stage = stage
        self.lock = threading.Lock()

    def take(self, received: Received, announced: Expected, label: str) -> str | None:
        """Store the instance ``received`` (its staged file removed in any case) if it is
        the instance announced as (study, series, SOP Instance UID), or one of those (by
        SOP Instance UID); else count it as an error. Returns the SOP Instance UID it holds,
        if it parses."""
        try:
            found = self._prepare(received, announced, label)
            with self.lock:
                if isinstance(found, str):
                    self.report.errors.append((label, found))
                    return None
                return self._store(found, label)
        finally:
            received.discard()
            with self.lock:
                self.progress.advance(1, received.size)

    def _prepare(self, received: Received, announced: Expected, label: str) -> Examined | str:
        """The instance described, checked, hashed and in the staging folder (outside the
        lock); or why it cannot be stored."""
        try:
            if received.data is not None:
                header = describe(io.BytesIO(received.data))  # parsed in memory: no syscalls
            else:
                assert received.staged is not None
                with received.staged.open("rb") as fp:
                    header = describe(fp)
        except (NotDicom, OSError) as exc:
            return f"not a DICOM instance that can be stored: {exc}"
        found = (header.study_uid, header.series_uid, header.sop_uid)
        expected = announced.get(header.sop_uid) if isinstance(announced, dict) else announced
        if announced is not None and found[: len(expected or ())] != expected:
            return f"the remote sent {'/'.join(found)} instead"
        if received.data is not None:
            try:
                self._write(received)
            except OSError as exc:
                return f"not saved: {exc}"
        assert received.staged is not None
        item = Examined(Pulled(received.staged, label), Kind.INSTANCE, header=header)  # type: ignore[arg-type]
        item.size, item.digest, item.staged = received.size, received.digest, received.staged
        return item

    def _write(self, received: Received) -> None:
        """The bytes into a file in the staging folder, hashed. Written past the page cache
        (:func:`write_held`), as the import writes its copies: the pull ends with a ``sync``
        that otherwise waited 0.25-0.30 s for 500 MB of them (0.015-0.025 s written this
        way; 1,000 CT from an Orthanc, in 3.35 rather than 3.45 s and in 3.25 rather than
        3.36 s, medians of two A/Bs of 6 rounds each)."""
        assert received.data is not None
        received.digest = hashlib.sha256(received.data).hexdigest()
        received.staged = self.stage()
        try:
            with aligned([received.data]) as held:
                write_held(received.staged, held, fsync=False, direct=True)
        except BaseException:
            received.discard()
            raise
        received.data = None

    def _store(self, item: Examined, label: str) -> str:
        header = item.header
        assert header is not None
        report = self.report
        before = report.stored + report.duplicates
        sent = self.sink.store(item, report)
        if sent is not None:
            self.sink.settle(sent, report)
        report.size += item.size
        if report.stored + report.duplicates > before:
            self.pulled[header.sop_uid] = item.digest
        return header.sop_uid

    def fail(self, label: str, reason: str) -> None:
        with self.lock:
            self.report.errors.append((label, reason))
            self.progress.advance(1, 0)
