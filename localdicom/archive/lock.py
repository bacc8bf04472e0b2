"""Who writes to an archive: a running server announces itself, an import or reindex that
writes directly holds a lock, so that the two never write at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import orjson

from localdicom.archive.files import write_atomically
from localdicom.archive.layout import Layout


class ArchiveBusy(Exception):
    """Another import or reindex holds the archive."""


@contextlib.contextmanager
def archive_lock(root: Path) -> Iterator[None]:
    """Exclusive use of the archive by one import or reindex at a time.

    A POSIX record lock (lockf), not flock: worker processes forked by the holder do not
    inherit it, so it goes away the moment the holder dies, even by SIGKILL. The server does
    not take it: while a server runs, import goes through it by STOW-RS.
    """
    layout = Layout(root)
    root.mkdir(parents=True, exist_ok=True)
    with layout.lock_file.open("a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ArchiveBusy(
                f"another import or reindex is writing to {root}; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def announce_server(layout: Layout, url: str, token: str | None = None) -> None:
    """Record that a server answers for this archive at ``url`` (while it runs), and the
    token it requires, for the commands that store through it (``import``, ``trash
    restore``): readable by its owner only, as the archive's files are theirs anyway."""
    document = orjson.dumps({"url": url, "pid": os.getpid(), "token": token})
    write_atomically(layout.server_file, document, fsync=False, mode=0o600)


def withdraw_server(layout: Layout, url: str) -> None:
    try:
        if orjson.loads(layout.server_file.read_bytes()).get("url") == url:
            layout.server_file.unlink()
    except (OSError, ValueError):
        pass


def running_server(layout: Layout) -> str | None:
    """The URL of a live server on this archive, if one announced itself."""
    document = _announcement(layout)
    return None if document is None else str(document["url"])


def server_token(layout: Layout) -> str | None:
    """The token the live server on this archive requires, if any."""
    document = _announcement(layout)
    return None if document is None else document.get("token")


def _announcement(layout: Layout) -> dict | None:
    try:
        document = orjson.loads(layout.server_file.read_bytes())
        os.kill(int(document["pid"]), 0)
        str(document["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return document
