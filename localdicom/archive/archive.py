"""The archive folder's writes: instances placed, replaced and removed, and the caches kept
beside them.

Writes go to a temporary file in the same file system and are renamed into place, so a
crash leaves the old state or the new one, never half an instance. Everything here is
blocking: callers run it in a worker thread.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from localdicom.archive import sidecar
from localdicom.archive.changefeed import Change, ChangeFeed
from localdicom.archive.files import fsync_path, write_atomically, write_temporary
from localdicom.archive.layout import Layout, sidecar_of
from localdicom.archive.trash import Trash, Trashed, Why
from localdicom.archive.upload import StagingFile, Upload
from localdicom.dicom.header import ByteRange, Header


class Archive(Layout):
    """A folder of instances in the study/series/instance layout (:mod:`.layout`)."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        super().__init__(root)
        self.fsync = fsync
        self.trash = Trash(self, fsync)
        self.changes = ChangeFeed(self.changefeed)

    def prepare(self) -> None:
        """Create the archive folder and its upload area if they do not exist yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(exist_ok=True)

    def new_upload(self) -> StagingFile:
        return StagingFile(self.new_staging_file())

    # reading -------------------------------------------------------------------------------

    def read_ranges(self, dcm: Path, ranges: list[ByteRange]) -> bytes:
        """The concatenation of byte ranges of a stored file: a frame or a bulk value."""
        with dcm.open("rb") as fp:
            parts = []
            for offset, length in ranges:
                fp.seek(offset)
                parts.append(fp.read(length))
        return b"".join(parts)

    # placing -------------------------------------------------------------------------------

    def commit_uploads(
        self, uploads: list[Upload], replacing: Collection[str] = ()
    ) -> list[sidecar.StoredInstance | OSError]:
        """Place several prepared uploads, each recorded in the change feed (an update for
        the SOP Instance UIDs in ``replacing``, else a create), then flush each folder they
        went to once: a group commit, one append to the feed and one flush of it and of
        each folder for a batch instead of one per instance. Each upload gets its
        instance, or the error that kept it out (all of them if a flush failed: then none
        is known to be durable).

        Everything that needs space (folders, sidecars, the feed's lines) is written before
        anything is replaced, so an OSError (a full disk) leaves the archive as it was: no
        instance is stored that the feed does not record. Only the renames follow (one
        that fails leaves a change in the feed whose instance is not there, the lesser harm
        for a follower than an instance it never hears of). A crash between an instance's
        two renames leaves a .dcm whose sidecar is missing or stale, which the next start
        regenerates.

        The feed is flushed beside the folders, in another thread, so that the file
        system can make both durable in one journal commit: flushed after them, it cut the
        rate of uploads sent one at a time by about 45 % (in-process A/B, 120 512x512 CT
        slices, 3 rounds); beside them it cost nothing measurable. Both are flushed before
        any upload of the batch is acknowledged."""
        results: list[sidecar.StoredInstance | OSError] = []
        ready: dict[int, _Ready] = {}
        for at, upload in enumerate(uploads):
            try:
                ready[at] = self._ready(upload)
            except OSError as exc:
                results.append(exc)
                continue
            results.append(sidecar.StoredInstance(upload.header, ready[at].size, upload.digest))
        headers = [each.upload.header for each in ready.values()]
        changes = [_change("update" if h.sop_uid in replacing else "create", h) for h in headers]
        try:
            self.changes.append(changes, fsync=False)
        except OSError as exc:
            for at, each in ready.items():
                each.abandon()
                results[at] = exc
            ready = {}
        folders: list[Path] = []
        for at, each in ready.items():
            try:
                folders += each.rename()
            except OSError as exc:
                results[at] = exc
        try:
            self._flush(folders)
        except OSError as exc:
            return [exc for _ in results]
        return results

    def _ready(self, upload: Upload) -> _Ready:
        """An upload's folders made and its sidecar written (here, if it was not yet: see
        :attr:`Upload.sidecar`), ready to be renamed into place."""
        header = upload.header
        target = self.instance_file(header.study_uid, header.series_uid, header.sop_uid)
        created = self._make_folders(target.parent)
        stat = upload.path.stat()  # a rename keeps size and modification time
        written = upload.sidecar
        if written is None:
            if self.fsync:
                fsync_path(upload.path)
            document = sidecar.document(header, upload.digest, stat.st_size, stat.st_mtime_ns)
            written = write_temporary(sidecar_of(target), document, self.fsync)
        return _Ready(upload, target, written, stat.st_size, created)

    def _flush(self, folders: list[Path]) -> None:
        """Make renames into ``folders``, the entries of new folders (each folder flushed
        once) and the change feed durable."""
        if not self.fsync:
            return
        feed = _feed_flusher().submit(self.changes.flush)
        try:
            for folder in dict.fromkeys(folders):
                fsync_path(folder)
        finally:
            feed.result()

    def _make_folders(self, folder: Path) -> list[Path]:
        """Create ``folder`` and missing parents inside the archive; the ones created."""
        created = []
        while not folder.is_dir() and folder != self.root:
            created.append(folder)
            folder = folder.parent
        for each in reversed(created):
            each.mkdir(exist_ok=True)
        return created

    # removing ------------------------------------------------------------------------------

    def remove_instance(self, study: str, series: str, sop: str) -> None:
        """Delete an instance and its sidecar, then any folder that this left empty."""
        dcm = self.instance_file(study, series, sop)
        for path in (sidecar_of(dcm), dcm):
            path.unlink(missing_ok=True)
        self._remove_empty(dcm.parent)
        self.remove_thumbnails(sop)

    def remove_tree(self, folder: Path, sops: list[str]) -> None:
        """Delete a series or study folder whole (after its instances left the index)."""
        shutil.rmtree(folder, ignore_errors=True)
        self._remove_empty(folder.parent)
        for sop in sops:
            self.remove_thumbnails(sop)

    def trash_instances(self, instances: list[tuple[str, str, str]], why: Why) -> str:
        """Move instances (study, series, sop) to the trash instead of deleting them."""
        entry = self.trash.move_instances(instances, why)
        for _, _, sop in instances:
            self.remove_thumbnails(sop)
        return entry

    def trash_tree(self, study: str, series: str | None, sops: list[str], why: Why) -> str:
        """Move a study or series folder whole to the trash (after it left the index)."""
        entry = self.trash.move_folder(study, series, why)
        for sop in sops:
            self.remove_thumbnails(sop)
        return entry

    def put_back(self, trashed: Trashed) -> Path:
        """Rename a trashed instance back into its place (:meth:`Trash.put_back`); the
        change feed records it as created again, for those who follow it."""
        target = self.trash.put_back(trashed)
        stored = sidecar.read_current(target) or sidecar.regenerate(self, target, self.fsync)
        self.changes.append([_change("create", stored.header)], self.fsync)
        return target

    def _remove_empty(self, folder: Path) -> None:
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # the thumbnail cache -------------------------------------------------------------------

    def cached_thumbnail(self, sop: str, key: str) -> Path | None:
        path = self.thumbnail_file(sop, key)
        return path if path.exists() else None

    def keep_thumbnail(self, sop: str, key: str, data: bytes) -> None:
        path = self.thumbnail_file(sop, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data, self.fsync)

    def remove_thumbnails(self, sop: str) -> None:
        """Drop the cached thumbnails of an instance that was deleted or replaced."""
        for path in self.thumbnails_of(sop):
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Ready:
    """An upload whose folders and sidecar (``written``) are there: only its renames to
    ``target`` are left."""

    upload: Upload
    target: Path
    written: Path
    size: int
    created: list[Path]

    def rename(self) -> list[Path]:
        """The upload and its sidecar into place; the folders whose entries changed."""
        try:
            os.replace(self.upload.path, self.target)
            os.replace(self.written, sidecar_of(self.target))
        except BaseException:  # renamed, it is gone: no unlink that fails on every commit
            self.written.unlink(missing_ok=True)
            raise
        return [self.target.parent, *(each.parent for each in self.created)]

    def abandon(self) -> None:
        """Not to be placed: the sidecar written for it alone goes (one the upload came
        with is removed along with the upload)."""
        if self.written != self.upload.sidecar:
            self.written.unlink(missing_ok=True)


def _change(action: str, header: Header) -> Change:
    return Change(action, header.study_uid, header.series_uid, header.sop_uid, header.sop_class_uid)


@functools.cache
def _feed_flusher() -> ThreadPoolExecutor:
    """The thread that flushes the change feed beside a commit's folders."""
    return ThreadPoolExecutor(1, thread_name_prefix="feed-flush")
