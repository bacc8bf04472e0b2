"""The archive folder on disk: the only code that names, reads or writes its files.

:mod:`.layout` names every path, :mod:`.sidecar` owns the sidecar format, :mod:`.snapshot`
the index snapshot, :mod:`.scan` the startup read, :mod:`.upload` instances on their way in
(:mod:`.held` those held in memory), :mod:`.archive` the writes, :mod:`.trash` what was
removed, :mod:`.changefeed` the log of the changes, and :mod:`.lock` who may write.
"""

from localdicom.archive.archive import Archive
from localdicom.archive.changefeed import Change, ChangeFeed, FeedEntry, WindowGone
from localdicom.archive.layout import Layout
from localdicom.archive.lock import (
    ArchiveBusy,
    announce_server,
    archive_lock,
    running_server,
    server_token,
    withdraw_server,
)
from localdicom.archive.scan import ScanReport
from localdicom.archive.sidecar import StoredInstance
from localdicom.archive.transfers import TransferRecord, open_record
from localdicom.archive.trash import Trash, Trashed, Why
from localdicom.archive.upload import (
    Spooled,
    StagingFile,
    Upload,
    prepare_spooled,
    prepare_upload,
)

__all__ = [
    "Archive",
    "ArchiveBusy",
    "Change",
    "ChangeFeed",
    "FeedEntry",
    "Layout",
    "ScanReport",
    "Spooled",
    "StagingFile",
    "StoredInstance",
    "TransferRecord",
    "Trash",
    "Trashed",
    "Upload",
    "Why",
    "WindowGone",
    "announce_server",
    "archive_lock",
    "open_record",
    "prepare_spooled",
    "prepare_upload",
    "running_server",
    "server_token",
    "withdraw_server",
]
