"""The archive folder on disk: the only code that names, reads or writes its files.

:mod:`.layout` names every path, :mod:`.sidecar` owns the sidecar format, :mod:`.snapshot`
the index snapshot, :mod:`.scan` the startup read, :mod:`.upload` instances on their way in
(:mod:`.held` those held in memory), :mod:`.archive` the writes, :mod:`.trash` what was
removed, :mod:`.changefeed` the log of the changes, and :mod:`.lock` who may write.
"""

from localdicom.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "localdicom.archive.archive": ["Archive"],
        "localdicom.archive.changefeed": ["Change", "ChangeFeed", "FeedEntry", "WindowGone"],
        "localdicom.archive.layout": ["Layout"],
        "localdicom.archive.lock": [
            "ArchiveBusy",
            "announce_server",
            "archive_lock",
            "running_server",
            "server_token",
            "withdraw_server",
        ],
        "localdicom.archive.scan": ["ScanReport"],
        "localdicom.archive.sidecar": ["StoredInstance"],
        "localdicom.archive.transfers": ["TransferRecord", "open_record"],
        "localdicom.archive.trash": ["Trash", "Trashed", "Why"],
        "localdicom.archive.upload": [
            "Spooled",
            "StagingFile",
            "Upload",
            "prepare_spooled",
            "prepare_upload",
        ],
    },
)
