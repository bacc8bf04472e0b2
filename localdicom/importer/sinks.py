"""Where examined instances go: straight into the archive under the duplicate policy, or to
the running server by STOW-RS, so that the server stays the only writer of its archive."""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from localdicom.archive import Archive, Upload, Why, sidecar
from localdicom.catalog import Decision, SnapshotKeeper, conflict_message, decide
from localdicom.dicom.header import NotDicom
from localdicom.importer.examine import Examined, Transfer, why
from localdicom.importer.report import ImportReport, count
from localdicom.importer.stow_client import StowClient, stow_outcome


class Sink(Protocol):
    staging: Path
    stow: bool

    def store(self, item: Examined, report: ImportReport) -> Future | None:
        """Store an examined instance; a future when the outcome comes later (:meth:`settle`)."""

    def settle(self, sent: Future, report: ImportReport) -> Examined: ...


class DirectSink:
    """Commits into the archive folder itself (no server runs), through the same commit as
    the server's (:meth:`Archive.commit_uploads`) and the same rule (:func:`decide`)."""

    stow = False

    def __init__(
        self, archive: Archive, transfer: Transfer, overwrite: bool, *, keep_replaced: bool = True
    ) -> None:
        self.archive = archive
        #: Also clears leftovers of the upload area and settles a removal cut short.
        self.snapshot = SnapshotKeeper(archive)
        self.transfer = transfer
        self.overwrite = overwrite
        self.keep_replaced = keep_replaced
        self.staging = archive.incoming.resolve()
        #: SOP Instance UID -> its .dcm; what is stored now, kept up to date as we store.
        self.present = {path.stem: path for path in archive.instance_files()}
        self.digests: dict[str, str] = {}
        self.noted = False

    def store(self, item: Examined, report: ImportReport) -> None:
        assert item.header is not None
        decision = None
        try:
            existing = self.present.get(item.header.sop_uid)
            stored_digest = None if existing is None else self._digest_of(existing)
            decision = decide(stored_digest, item.digest, overwrite=self.overwrite)
            if decision.writes:
                self._commit(item, existing, report)
            remedy = "delete it first, or import with --overwrite"
            count(report, decision, item.source, conflict_message(item.header.sop_uid, remedy))
        except (OSError, NotDicom) as exc:
            report.errors.append((str(item.source), f"cannot be stored: {why(exc)}"))
        finally:
            item.discard()
        if self.transfer is Transfer.MOVE and decision not in (None, Decision.CONFLICT):
            remove_source(item, report)
        if item.copied_across:
            self._note_once(
                report,
                f"--{self.transfer.value}: some sources are on another file system than the "
                "archive; they were copied",
            )

    def settle(self, sent: Future, report: ImportReport) -> Examined:
        raise AssertionError("a direct import sends nothing")

    def _digest_of(self, dcm: Path) -> str | None:
        """The digest of a stored instance, repairing a missing or stale sidecar on the way
        (an import interrupted between the two renames leaves one); None when what is there
        is no instance (the server skips it): it is replaced."""
        if dcm.stem in self.digests:
            return self.digests[dcm.stem]
        stored = sidecar.read_current(dcm)
        if stored is None:
            try:
                stored = sidecar.regenerate(self.archive, dcm, self.archive.fsync)
            except (NotDicom, OSError):
                return None
        return stored.digest

    def _commit(self, item: Examined, existing: Path | None, report: ImportReport) -> None:
        header = item.header
        assert header is not None
        kept = self._keep(existing, header.sop_uid)
        incoming = self._incoming(item, report)
        try:
            replacing = () if existing is None else (header.sop_uid,)  # an update in the feed
            upload = Upload(incoming, header, item.digest, item.sidecar)  # None unless staged
            (result,) = self.archive.commit_uploads([upload], replacing)
        finally:
            if incoming != item.source.path:
                incoming.unlink(missing_ok=True)
        if isinstance(result, OSError):
            if kept is not None:
                self.archive.trash.drop(kept)
            raise result
        if kept is not None:
            self.archive.trash.seal(kept)
        item.staged = item.sidecar = None
        target = self.archive.instance_file(header.study_uid, header.series_uid, header.sop_uid)
        if existing is not None and existing != target:  # replaced by one of another series
            study, series = existing.parent.parent.name, existing.parent.name
            self.archive.remove_instance(study, series, header.sop_uid)
        elif existing is not None:
            self.archive.remove_thumbnails(header.sop_uid)
        self.present[header.sop_uid] = target
        self.digests[header.sop_uid] = result.digest
        self.snapshot.stored(result)

    def _keep(self, existing: Path | None, sop: str) -> Path | None:
        """The instance about to be replaced, linked into a pending trash entry."""
        if existing is None or not self.keep_replaced:
            return None
        study, series = existing.parent.parent.name, existing.parent.name
        why = Why("overwrite", "localdicom import --overwrite")
        return self.archive.trash.keep(study, series, sop, why)

    def _incoming(self, item: Examined, report: ImportReport) -> Path:
        """The file to rename into place: the staged copy, the source itself (--move), or
        a fresh hard link (--link) or copy in the upload area."""
        if item.staged is not None:
            return item.staged
        if item.in_place and self.transfer is Transfer.MOVE:
            return item.source.path
        incoming = self.archive.new_staging_file()
        if item.in_place and self.transfer is Transfer.LINK:
            try:
                os.link(item.source.path, incoming)
                return incoming
            except OSError as exc:
                self._note_once(report, f"--link: hard links failed ({why(exc)}); copied")
        shutil.copyfile(item.source.path, incoming)
        return incoming

    def _note_once(self, report: ImportReport, note: str) -> None:
        if not self.noted:
            self.noted = True
            report.notes.append(note)


class StowSink:
    """Sends instances to the running server by STOW-RS, a few at a time.

    The server's response does not tell a new instance from one it already had, so a QIDO
    for the SOP Instance UID comes first; two files of this import with one SOP Instance UID
    are settled here, under the same rule, before the server sees the second.
    """

    stow = True

    def __init__(
        self, client: StowClient, transfer: Transfer, overwrite: bool, threads: int
    ) -> None:
        self.client = client
        self.transfer = transfer
        self.overwrite = overwrite
        self.threads = ThreadPoolExecutor(threads)
        self.seen: dict[str, str] = {}
        self.staging = Path(tempfile.mkdtemp(prefix="localdicom-import-"))
        self.report: ImportReport | None = None

    def __enter__(self) -> StowSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.staging, ignore_errors=True)

    def store(self, item: Examined, report: ImportReport) -> Future | None:
        header = item.header
        assert header is not None
        self._warn_options(report)
        earlier = self.seen.get(header.sop_uid)
        if earlier is None:
            self.seen[header.sop_uid] = item.digest
            return self.threads.submit(self._send_or_fail, item)
        item.discard()
        decision = decide(earlier, item.digest, overwrite=False)
        reason = (
            f"another file of this import has SOP Instance {header.sop_uid} with different content"
        )
        count(report, decision, item.source, reason)
        if decision is Decision.ALREADY_PRESENT:
            self._moved(item, report)
        return None

    def _warn_options(self, report: ImportReport) -> None:
        if self.report is report:
            return
        self.report = report
        if self.overwrite:
            report.notes.append(
                "--overwrite has no effect while a server runs: its own --overwrite applies"
            )
        if self.transfer is Transfer.LINK:
            report.notes.append("--link has no effect while a server runs: instances are sent")

    def _send_or_fail(self, item: Examined) -> tuple[Examined, Decision | None, str]:
        """Runs in a sending thread; the counting is left to :meth:`settle`."""
        try:
            decision, reason = self._send(item)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            url = self.client.url
            decision, reason = None, f"the server at {url} did not take it: {why(exc)}"
        finally:
            item.discard()
        return item, decision, reason

    def settle(self, sent: Future, report: ImportReport) -> Examined:
        """Count what the server said (in the committer thread, like every other count)."""
        item, decision, reason = sent.result()
        if decision is None:
            report.errors.append((str(item.source), reason))
            return item
        count(report, decision, item.source, reason)
        if decision is not Decision.CONFLICT:
            self._moved(item, report)
        return item

    def _moved(self, item: Examined, report: ImportReport) -> None:
        if self.transfer is Transfer.MOVE:
            remove_source(item, report)

    def _send(self, item: Examined) -> tuple[Decision | None, str]:
        header = item.header
        assert header is not None
        present = self.client.is_stored(header.sop_uid)
        with (item.staged or item.source.path).open("rb") as fp:
            status, warning, body = self.client.store(fp, item.size)
        return stow_outcome(status, warning, body, present)


def remove_source(item: Examined, report: ImportReport) -> None:
    """--move: the source goes once the archive holds its bytes; zip members stay."""
    if item.source.member is not None or not item.source.path.exists():
        return
    try:
        item.source.path.unlink()
    except OSError as exc:
        report.notes.append(f"--move: {item.source} could not be removed: {why(exc)}")
