"""The trash: instances deleted, rejected or replaced, kept whole until restored or purged.

::

    ARCHIVE/.trash/<entry>/manifest.json                       what, when, why, by whom
    ARCHIVE/.trash/<entry>/<Study>/<Series>/<SOP>.dcm (.json)  the files, as they were stored
    ARCHIVE/.trash/<entry>.pending/                            an entry being filled

One entry per removal. An entry is filled under its ``.pending`` name and then renamed to its
final name: that rename is the moment the removal is done. Files come in by ``rename(2)``
within the archive's file system (a study or series folder as one rename), or, for an
instance about to be replaced, by a hard link that keeps its bytes when the new instance is
renamed over it (a copy where links fail). Nothing is ever unlinked before it is in an entry.

A crash leaves at most some ``.pending`` entries; :func:`Trash.recover` (at start, before the
scan) settles each file in one: moved back if its place in the archive is empty or holds
the very same file (the removal never finished, and nobody was told it did), kept if the
archive now holds another instance there (a replacement that was placed). So an instance
is either in the archive or in the trash, never half in both.

The startup scan and the snapshot never see the trash: they skip every dot-folder
(:func:`localdicom.archive.layout._subfolders`).
"""

from __future__ import annotations

import contextlib
import filecmp
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from localdicom.archive.files import fsync_path, write_new
from localdicom.archive.layout import INSTANCE_SUFFIX, Layout, sidecar_of
from localdicom.dicom.uids import is_valid_uid

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PENDING = ".pending"


@dataclass(frozen=True)
class Why:
    """Why instances went to the trash: ``reason`` (delete, reject, overwrite), ``by`` (the
    request or command), and for a rejection its code (PS3.16 CID 7011)."""

    reason: str
    by: str = ""
    code: dict[str, str] | None = None


@dataclass(frozen=True)
class Trashed:
    """One instance in the trash."""

    entry: str
    study: str
    series: str
    sop: str
    path: Path
    size: int


@dataclass
class Entry:
    """A finished trash entry: its manifest and the instances it still holds."""

    name: str
    folder: Path
    manifest: dict[str, Any]
    instances: list[Trashed] = field(default_factory=list)

    @property
    def removed_at(self) -> float:
        return float(self.manifest.get("time", 0) or _time_of(self.name))


class Trash:
    """The trash folder of one archive (blocking: callers run it in a thread)."""

    def __init__(self, layout: Layout, fsync: bool) -> None:
        self.layout = layout
        self.root = layout.trash_dir
        self.fsync = fsync

    # putting in --------------------------------------------------------------------------

    def move_instances(self, instances: list[tuple[str, str, str]], why: Why) -> str:
        """Move instances (study, series, sop) with their sidecars into a new entry."""
        pending = self._begin(instances, why)
        with self._undone_on_error(pending):
            for study, series, sop in instances:
                dcm = self.layout.instance_file(study, series, sop)
                moved = _inside(pending, study, series, sop)
                moved.parent.mkdir(parents=True, exist_ok=True)
                _rename_if_there(dcm, moved)
                _rename_if_there(sidecar_of(dcm), sidecar_of(moved))
            touched = [self.layout.series_dir(s, se) for s, se, _ in instances]
            return self._seal(pending, touched)

    def move_folder(self, study: str, series: str | None, why: Why) -> str:
        """Move a whole study or series folder into a new entry: one rename."""
        if series is None:
            folder, pattern, inside = self.layout.study_dir(study), "*/*", (study,)
        else:
            folder, pattern, inside = self.layout.series_dir(study, series), "*", (study, series)
        if not folder.is_dir():  # deleted by hand: nothing to keep
            return ""
        instances = [
            (study, dcm.parent.name, dcm.stem)
            for dcm in sorted(folder.glob(pattern + INSTANCE_SUFFIX))
        ]
        pending = self._begin(instances, why)
        with self._undone_on_error(pending):
            target = pending.joinpath(*inside)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(folder, target)
            return self._seal(pending, [folder.parent])

    @contextlib.contextmanager
    def _undone_on_error(self, pending: Path) -> Iterator[None]:
        """A removal that fails half way (an OSError) puts back what it had moved."""
        try:
            yield
        except BaseException:
            self._settle_entry(pending)
            raise

    def keep(self, study: str, series: str, sop: str, why: Why) -> Path:
        """Link a stored instance (about to be replaced) into a pending entry; the caller
        then :meth:`seal` s it once the replacement is placed, or :meth:`drop` s it."""
        pending = self._begin([(study, series, sop)], why)
        dcm = self.layout.instance_file(study, series, sop)
        kept = _inside(pending, study, series, sop)
        kept.parent.mkdir(parents=True, exist_ok=True)
        try:
            _link_or_copy(dcm, kept)
            if sidecar_of(dcm).exists():
                _link_or_copy(sidecar_of(dcm), sidecar_of(kept))
            self._flush(kept.parent)
        except BaseException:
            shutil.rmtree(pending, ignore_errors=True)
            raise
        return pending

    def seal(self, pending: Path) -> str:
        return self._seal(pending, [])

    def drop(self, pending: Path) -> None:
        """Forget a pending entry whose replacement failed (its files are links or copies)."""
        shutil.rmtree(pending, ignore_errors=True)

    def _begin(self, instances: list[tuple[str, str, str]], why: Why) -> Path:
        now = time.time()
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        pending = self.root / f"{stamp}-{uuid.uuid4().hex[:8]}{PENDING}"
        pending.mkdir(parents=True)
        manifest = {
            "time": now,
            "removed": datetime.fromtimestamp(now, UTC).isoformat(),
            "reason": why.reason,
            "by": why.by,
            "code": why.code,
            "instances": [{"study": s, "series": se, "sop": sop} for s, se, sop in instances],
        }
        document = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        try:
            write_new(pending / MANIFEST, document, self.fsync)
        except BaseException:
            pending.rmdir()
            raise
        return pending

    def _seal(self, pending: Path, touched: list[Path]) -> str:
        """Rename the entry to its final name, flushing first the folders that entries were
        renamed into (the entry's own, down to the series) and out of (``touched``), so
        that a power cut cannot keep the final rename and lose the moves before it. An entry
        that got no instance (its files were deleted by hand) is dropped: its name is ""."""
        if not any(pending.glob(f"*/*/*{INSTANCE_SUFFIX}")):
            shutil.rmtree(pending, ignore_errors=True)
            return ""
        if self.fsync:
            inside = [p for p in pending.glob("*") if p.is_dir()]
            inside += [p for p in pending.glob("*/*") if p.is_dir()]
            for folder in dict.fromkeys([*inside, pending, *touched]):
                if folder.is_dir():
                    fsync_path(folder)
        final = pending.with_name(pending.name.removesuffix(PENDING))
        os.rename(pending, final)
        self._flush(self.root)
        for folder in touched:
            _remove_empty(folder, self.layout.root)
        return final.name

    def _flush(self, folder: Path) -> None:
        if self.fsync:
            fsync_path(folder)

    # taking out ----------------------------------------------------------------------------

    def entries(self) -> Iterator[Entry]:
        """Every finished entry, oldest first, with the instances it still holds."""
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or folder.name.endswith(PENDING):
                continue
            if folder.is_dir():
                yield _entry(folder)

    def pending(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.name.endswith(PENDING))

    def open(self, trashed: Trashed) -> BinaryIO:
        """A trashed instance's bytes, to send them back through a server."""
        return trashed.path.open("rb")

    def forget(self, trashed: Trashed) -> None:
        """Remove one instance from the trash (restored elsewhere, e.g. through a server);
        :meth:`tidy` its entry afterwards."""
        trashed.path.unlink(missing_ok=True)
        sidecar_of(trashed.path).unlink(missing_ok=True)

    def put_back(self, trashed: Trashed) -> Path:
        """Rename a trashed instance (and its sidecar) back into its place in the archive;
        the caller made sure that no instance with its SOP Instance UID is stored, and
        :meth:`tidy` s afterwards."""
        target = self.layout.instance_file(trashed.study, trashed.series, trashed.sop)
        target.parent.mkdir(parents=True, exist_ok=True)
        if sidecar_of(trashed.path).exists():
            os.rename(sidecar_of(trashed.path), sidecar_of(target))
        os.rename(trashed.path, target)
        return target

    def tidy(self, restored: list[Trashed], folders: Iterable[Path] = ()) -> None:
        """After a restore: flush the archive ``folders`` instances went back to, then
        remove the entries left without an instance."""
        for folder in dict.fromkeys(folders):
            self._flush(folder)
        for entry in dict.fromkeys(each.entry for each in restored):
            folder = self.root / entry
            if not any(folder.glob(f"*/*/*{INSTANCE_SUFFIX}")):
                shutil.rmtree(folder, ignore_errors=True)

    def empty(self, older_than: float | None = None) -> list[Entry]:
        """Delete the entries removed more than ``older_than`` seconds ago (all when None);
        the ones deleted. Pending entries belong to a removal in progress: left alone."""
        limit = time.time() - (older_than or 0)
        purged = []
        for entry in list(self.entries()):
            if older_than is None or entry.removed_at <= limit:
                gone = entry.folder.with_name(f".{entry.name}.purging")
                os.rename(entry.folder, gone)  # never seen half deleted
                shutil.rmtree(gone, ignore_errors=True)
                purged.append(entry)
        for leftover in self.root.glob(".*.purging") if self.root.is_dir() else []:
            shutil.rmtree(leftover, ignore_errors=True)
        return purged

    # after a crash -------------------------------------------------------------------------

    def recover(self) -> int:
        """Settle the entries a crash left pending (see the module docstring); only safe
        while nothing else writes to the archive (at start). The instances moved back."""
        return sum(self._settle_entry(pending) for pending in self.pending())

    def _settle_entry(self, pending: Path) -> int:
        back = 0
        for dcm in sorted(pending.glob(f"*/*/*{INSTANCE_SUFFIX}")):
            back += self._settle(dcm)
        for orphan in pending.glob("*/*/*.json"):  # a sidecar whose .dcm went back
            if not orphan.with_suffix(INSTANCE_SUFFIX).exists():
                orphan.unlink()
        if any(pending.rglob(f"*{INSTANCE_SUFFIX}")):
            self._seal(pending, [])
        else:
            shutil.rmtree(pending, ignore_errors=True)
        return back

    def _settle(self, dcm: Path) -> int:
        study, series, sop = dcm.parent.parent.name, dcm.parent.name, dcm.stem
        if not all(is_valid_uid(uid) for uid in (study, series, sop)):
            return 0
        target = self.layout.instance_file(study, series, sop)
        if target.exists() and not _same_file(target, dcm):
            return 0  # replaced: the old one stays in the trash
        if target.exists():  # a link or copy of what is still stored
            dcm.unlink()
            sidecar_of(dcm).unlink(missing_ok=True)
            return 0
        target.parent.mkdir(parents=True, exist_ok=True)
        _rename_if_there(sidecar_of(dcm), sidecar_of(target))
        os.rename(dcm, target)
        logger.warning("trash: the removal of %s was cut short: put back in place", sop)
        return 1


def _entry(folder: Path) -> Entry:
    try:
        manifest = orjson.loads((folder / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        manifest = {}
    entry = Entry(folder.name, folder, manifest if isinstance(manifest, dict) else {})
    for dcm in sorted(folder.glob(f"*/*/*{INSTANCE_SUFFIX}")):
        try:
            size = dcm.stat().st_size
        except OSError:
            continue
        entry.instances.append(
            Trashed(folder.name, dcm.parent.parent.name, dcm.parent.name, dcm.stem, dcm, size)
        )
    return entry


def _time_of(name: str) -> float:
    try:
        return datetime.strptime(name[:23], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def _inside(entry: Path, study: str, series: str, sop: str) -> Path:
    return entry / study / series / (sop + INSTANCE_SUFFIX)


def _rename_if_there(source: Path, target: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.rename(source, target)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no bytes copied, the same file); a copy where the file system has none."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _remove_empty(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
