"""THE door to the archive: everything that finds, reads, stores or deletes an instance goes
through a :class:`Catalog`, and every way in shares :mod:`.ingest`'s duplicate rule.

The index's record types, :class:`Upload` (an instance received and not yet committed),
:class:`Why` (why instances go to the trash), :func:`read_ahead` and :func:`will_need` (for
senders of stored files) are given out from here so that callers never reach the index or
the archive.
"""

from localdicom.archive import FeedEntry, Spooled, Upload, Why, WindowGone
from localdicom.archive.files import read_ahead, will_need
from localdicom.catalog.arriving import Arriving
from localdicom.catalog.catalog import Catalog, OpenReport
from localdicom.catalog.ingest import (
    Decision,
    FailureReason,
    Stored,
    StoreFailed,
    conflict_message,
    decide,
)
from localdicom.catalog.opening import SnapshotKeeper
from localdicom.catalog.removing import RemovalFailed
from localdicom.catalog.searching import Match
from localdicom.index import InstanceRecord, Record, SeriesRecord, StudyRecord

__all__ = [
    "Arriving",
    "Catalog",
    "Decision",
    "FailureReason",
    "FeedEntry",
    "InstanceRecord",
    "Match",
    "OpenReport",
    "Record",
    "RemovalFailed",
    "SeriesRecord",
    "SnapshotKeeper",
    "Spooled",
    "StoreFailed",
    "Stored",
    "StudyRecord",
    "Upload",
    "Why",
    "WindowGone",
    "conflict_message",
    "decide",
    "read_ahead",
    "will_need",
]
