"""The change feed as the Catalog reads it (Microsoft's v1 and v2 paging), each entry with
the current DICOM JSON of its instance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from localdicom.archive import Archive, FeedEntry, changefeed
from localdicom.catalog import metadata
from localdicom.dicom.header import Header
from localdicom.index import Index, InstanceRecord


class FeedReading:
    """The Catalog's reading of the change feed (a part of :class:`Catalog`)."""

    archive: Archive
    index: Index
    read_header: Callable[[InstanceRecord], Header]

    async def changes(
        self,
        start: datetime | None,
        end: datetime | None,
        offset: int,
        limit: int,
        root: str | None = None,
    ) -> list[tuple[FeedEntry, dict[str, Any] | None]]:
        """A page of the change feed in Microsoft's v2 paging (``offset`` and ``limit`` over
        the changes timed from ``start`` to ``end``, None: unbounded; see
        :meth:`ChangeFeed.window`), each with the current DICOM JSON of its instance
        (BulkDataURIs under ``root``) when ``root`` is given and the instance is stored.
        Raises :class:`WindowGone`."""
        window = (changefeed.EPOCH if start is None else changefeed.timestamp(start),)
        window += (changefeed.END if end is None else changefeed.timestamp(end),)
        feed = self.archive.changes
        entries = await asyncio.to_thread(feed.window, *window, offset, limit)
        return await self._with_metadata(entries, root)

    async def changes_after(
        self, sequence: int, limit: int, root: str | None = None
    ) -> list[tuple[FeedEntry, dict[str, Any] | None]]:
        """Up to ``limit`` changes numbered after ``sequence`` (Microsoft's v1 paging)."""
        entries = await asyncio.to_thread(self.archive.changes.after, sequence, limit)
        return await self._with_metadata(entries, root)

    async def latest_change(
        self, root: str | None = None
    ) -> tuple[FeedEntry, dict[str, Any] | None] | None:
        entry = await asyncio.to_thread(self.archive.changes.latest)
        if entry is None:
            return None
        return (await self._with_metadata([entry], root))[0]

    async def _with_metadata(
        self, entries: list[FeedEntry], root: str | None
    ) -> list[tuple[FeedEntry, dict[str, Any] | None]]:
        """Microsoft's Metadata: the current DICOM JSON if the instance exists (records
        chosen on the loop, sidecars read in a thread)."""
        if root is None:
            return [(entry, None) for entry in entries]
        records = [self.index.instances.get(entry.sop) for entry in entries]
        found = await asyncio.to_thread(metadata.of_instances, self.read_header, records, root)
        return list(zip(entries, found, strict=True))
