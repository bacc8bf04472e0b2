"""THE door to the archive: everything that finds, reads, stores or deletes an instance goes
through a :class:`Catalog`, and every way in shares :mod:`.ingest`'s duplicate rule.

The index's record types, :class:`Upload` (an instance received and not yet committed),
:class:`Why` (why instances go to the trash), :func:`read_ahead` and :func:`will_need` (for
senders of stored files) are given out from here so that callers never reach the index or
the archive.
"""

from localdicom.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "localdicom.archive": ["FeedEntry", "Spooled", "Upload", "Why", "WindowGone"],
        "localdicom.archive.files": ["read_ahead", "will_need"],
        "localdicom.catalog.arriving": ["Arriving"],
        "localdicom.catalog.catalog": ["Catalog", "OpenReport"],
        "localdicom.catalog.ingest": [
            "Decision",
            "FailureReason",
            "Stored",
            "StoreFailed",
            "conflict_message",
            "decide",
        ],
        "localdicom.catalog.opening": ["SnapshotKeeper"],
        "localdicom.catalog.removing": ["RemovalFailed"],
        "localdicom.catalog.searching": ["Match"],
        "localdicom.index": ["InstanceRecord", "Record", "SeriesRecord", "StudyRecord"],
    },
)
