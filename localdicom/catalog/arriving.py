"""An instance whose bytes arrive in pieces that are written as they come, by a caller that
reads them itself (a C-STORE's fragments, each written as its PDU is read) rather than
handing the Catalog an iterator: no task or queue between the reading and the writing,
which cost the event loop more than the writing does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from localdicom.catalog.ingest import FailureReason, Stored, StoreFailed, out_of_resources

if TYPE_CHECKING:
    from localdicom.archive import StagingFile
    from localdicom.catalog.catalog import Catalog


class Arriving:
    """One instance arriving: :meth:`write` each piece, then :meth:`store` it, or
    :meth:`abandon` it if the rest never comes."""

    def __init__(self, catalog: Catalog, staging: StagingFile) -> None:
        self._catalog = catalog
        self._staging: StagingFile | None = staging
        self._failure: StoreFailed | None = None

    def write(self, piece: bytes | memoryview) -> None:
        """The next piece. One that cannot be written (a full disk) fails the store, and
        the pieces after it are dropped: the caller reads on to the end of the instance
        and answers then."""
        if self._staging is None:
            return
        try:
            self._staging.write(piece)
        except OSError as exc:
            self._failure = out_of_resources(exc)
            self.abandon()

    def abandon(self) -> None:
        """Nothing of it is stored, and nothing of it is left in the upload area."""
        if self._staging is not None:
            self._catalog.abandon(self._staging)
            self._staging = None

    async def store(self) -> Stored:
        """Check and commit the whole instance as every way in does
        (:meth:`Catalog.store_whole`); raises :class:`StoreFailed`."""
        if self._staging is None:
            raise self._failure or StoreFailed(FailureReason.PROCESSING_FAILURE, "abandoned")
        spooled = self._catalog.spooled(self._staging)
        self._staging = None
        return await self._catalog.store_whole(spooled)
