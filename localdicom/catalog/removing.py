"""Removing instances: DELETE and reject (to the trash, or for good), and the trash's
purge, listing and restore of an entry, each keeping the index in step with the files."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from localdicom.archive import Archive, Change, Trashed, Why, restoring, sidecar
from localdicom.index import Index, InstanceRecord

logger = logging.getLogger(__name__)

#: Why a DELETE removed instances, unless the caller says otherwise.
DELETED = Why("delete")
SOP_CLASS_UID = "00080016"


class RemovalFailed(Exception):
    """A delete could not move its instances to the trash (a full disk): nothing was
    removed."""


class Removing:
    """The Catalog's removals (a part of :class:`Catalog`)."""

    archive: Archive
    index: Index
    keep_removed: bool
    feed_changed: asyncio.Event
    _commit_lock: asyncio.Lock
    _trash_lock: asyncio.Lock

    async def delete_instance(self, study: str, series: str, sop: str, why: Why = DELETED) -> bool:
        """Remove an instance: to the trash (``why`` recorded there), or for good."""
        async with self._commit_lock:
            record = self.index.instance_in(study, series, sop)
            if record is None:
                return False
            deleted = self._deletions([record])
            if self.keep_removed:
                self.index.remove_instance(sop)
                move = functools.partial(self.archive.trash_instances, [(study, series, sop)], why)
                await self._trash([record], why, move)
            else:
                await self._forget([record])
            await self._record(deleted)
            return True

    async def delete_series(self, study: str, series: str, why: Why = DELETED) -> bool:
        async with self._commit_lock:
            if self.index.series_in(study, series) is None:
                return False
            deleted = self._deletions(self.index.instances_of(study, series))
            removed = self.index.remove_series(series)
            await self._remove_tree(study, series, removed, why)
            await self._record(deleted)
            return True

    async def delete_study(self, study: str, why: Why = DELETED) -> bool:
        async with self._commit_lock:
            deleted = self._deletions(self.index.instances_of(study))
            removed = self.index.remove_study(study)
            if not removed:
                return False
            await self._remove_tree(study, None, removed, why)
            await self._record(deleted)
            return True

    def _deletions(self, records: list[InstanceRecord]) -> list[Change]:
        """The change feed's delete entries of instances still in the index."""
        return [
            Change(
                "delete",
                record.study,
                record.series,
                record.sop,
                _first_value(self.index.attributes(record, (SOP_CLASS_UID,))),
            )
            for record in records
        ]

    async def _record(self, changes: list[Change]) -> None:
        """Append deletions to the change feed; the instances are gone already, so a feed
        that cannot be written is logged, not the request's failure."""
        try:
            await asyncio.to_thread(self.archive.changes.append, changes, self.archive.fsync)
        except OSError as exc:
            logger.warning("the change feed could not record %d deletions: %s", len(changes), exc)
        self.feed_changed.set()

    async def _remove_tree(
        self, study: str, series: str | None, records: list[InstanceRecord], why: Why
    ) -> None:
        sops = [record.sop for record in records]
        if self.keep_removed:
            move = functools.partial(self.archive.trash_tree, study, series, sops, why)
            await self._trash(records, why, move)
            return
        folder = self.archive.study_dir(study)
        if series is not None:
            folder = self.archive.series_dir(study, series)
        await asyncio.to_thread(self.archive.remove_tree, folder, sops)

    async def _trash(
        self, records: list[InstanceRecord], why: Why, move: Callable[[], str]
    ) -> None:
        """Run ``move`` (records already out of the index) and log it; if it fails, what it
        put back in place is indexed again and :class:`RemovalFailed` raised."""
        try:
            entry = await asyncio.to_thread(move)
        except OSError as exc:
            back = await asyncio.to_thread(self._still_stored, records)
            for stored in back:
                self.index.add(stored)
            logger.warning("trash: moving %d instances failed: %s", len(records), exc)
            raise RemovalFailed(
                f"nothing was removed: the archive cannot be written ({exc.strerror or exc})"
            ) from exc
        code = f" {why.code['value']}^{why.code['designator']}" if why.code else ""
        logger.info(
            "trash: %d instances moved to %s (%s%s%s)",
            len(records),
            f".trash/{entry}" if entry else "nowhere: their files were gone",
            why.reason,
            code,
            f" by {why.by}" if why.by else "",
        )

    def _still_stored(
        self, places: list[InstanceRecord] | list[Trashed]
    ) -> list[sidecar.StoredInstance]:
        """The instances at these places (study, series, sop) as the index takes them; one
        unreadable now is left to the next start's scan."""
        back = []
        for place in places:
            try:
                dcm = self.archive.instance_file(place.study, place.series, place.sop)
                back.append(sidecar.read(dcm))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return back

    async def _forget(self, records: list[InstanceRecord]) -> None:
        for record in records:
            self.index.remove_instance(record.sop)
            await asyncio.to_thread(
                self.archive.remove_instance, record.study, record.series, record.sop
            )

    async def empty_trash(self, older_than: float | None) -> int:
        """Purge the trash entries older than ``older_than`` seconds (None: all); how many
        went."""
        async with self._trash_lock:
            purged = await asyncio.to_thread(self.archive.trash.empty, older_than)
        for entry in purged:
            logger.info("trash: purged .trash/%s (%d instances)", entry.name, len(entry.instances))
        return len(purged)

    async def trash_entries(self) -> list[dict[str, Any]]:
        """The trash, an entry per removal, oldest first (:func:`restoring.summary`)."""
        return await asyncio.to_thread(
            lambda: [restoring.summary(entry) for entry in self.archive.trash.entries()]
        )

    async def restore_entry(self, entry: str) -> restoring.RestoreReport | None:
        """Put back what one trash entry holds (None: no such entry), as ``localdicom trash
        restore --entry`` does (:func:`restoring.restore_in_place`: a UID stored again is a
        conflict, left in the trash), and index it at once."""
        async with self._commit_lock, self._trash_lock:
            chosen = await asyncio.to_thread(
                restoring.selected, self.archive.trash, restoring.Selection(entry=entry)
            )
            if not chosen:
                return None
            stored = {
                each.sop: self.archive.instance_file(record.study, record.series, each.sop)
                for each in chosen
                if (record := self.index.instances.get(each.sop)) is not None
            }
            place = functools.partial(restoring.restore_in_place, self.archive, chosen, stored)
            report = await asyncio.to_thread(place)
            back = await asyncio.to_thread(self._still_stored, report.restored)
            for instance in back:
                self.index.add(instance)
            self.feed_changed.set()
            logger.info("trash: %d instances restored from .trash/%s", len(back), entry)
            return report


def _first_value(attributes: dict[str, Any]) -> str:
    """The first value of the one attribute of a DICOM JSON object, or ""."""
    for element in attributes.values():
        return str((element.get("Value") or [""])[0])
    return ""
