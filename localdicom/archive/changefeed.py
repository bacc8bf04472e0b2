"""The change feed on disk: every instance stored, replaced or deleted, in the order it
happened, under a dense sequence number from 1 (the shape of Microsoft's DICOM service
change feed: Sequence, Action, Timestamp, State and the UIDs).

::

    ARCHIVE/.changefeed/<first sequence, 20 digits>.tsv   segments of up to SEGMENT_ENTRIES lines
    ARCHIVE/.changefeed/lock                             held by the process appending
    ARCHIVE/.changefeed/dropped                          what retention dropped

A line is ``sequence TAB timestamp TAB action TAB study TAB series TAB sop TAB sop-class``
(UIDs never hold a tab, PS3.5 9.1). Lines are only ever appended, under a file lock and a
thread lock, so the server and a direct import (another process) number their changes
densely between them; the appender reads the last sequence from the file whenever another
process appended since its own last write. Timestamps are UTC with microseconds, fixed
width, never decreasing with the sequence, so they compare as text.

Retention: whole segments are dropped, oldest first, beyond SEGMENTS_KEPT, so the feed holds
the last (SEGMENTS_KEPT - 1) * SEGMENT_ENTRIES to SEGMENTS_KEPT * SEGMENT_ENTRIES changes
and sequence numbers never change. A crash mid-append leaves at most a partial last line,
which readers skip and the next appender cuts off.

The State of an entry is not stored: it is worked out when read, from the later entries of
the same SOP Instance (an entry is superseded by later ones; a closed segment's SOP
Instance UIDs are kept in memory as 64-bit hashes to skip segments that cannot hold any).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import fcntl
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from localdicom.archive.files import fsync_path, write_atomically
from localdicom.archive.layout import Layout

if TYPE_CHECKING:
    import numpy as np

SEGMENT_ENTRIES = 10_000
SEGMENTS_KEPT = 100
ACTIONS = ("create", "update", "delete")
SUFFIX = ".tsv"
#: Before and after every timestamp: a time window without a start or an end.
EPOCH = "0001-01-01T00:00:00.000000Z"
END = "9999-12-31T23:59:59.999999Z"


def timestamp(moment: datetime) -> str:
    """A moment as the feed writes it: UTC, microseconds, fixed width (compares as text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(len(EPOCH), "0")


@dataclass(frozen=True)
class Change:
    """Something that happened to one instance: ``action`` is one of :data:`ACTIONS`."""

    action: str
    study: str
    series: str
    sop: str
    sop_class: str


@dataclass(frozen=True)
class FeedEntry:
    """A change as the feed recorded it; ``state`` is current, replaced or deleted."""

    sequence: int
    timestamp: str
    action: str
    study: str
    series: str
    sop: str
    sop_class: str
    state: str = "current"


@dataclass(frozen=True)
class Dropped:
    """What retention dropped: sequences 1 to ``last``, from ``first_time`` to ``last_time``."""

    last: int = 0
    first_time: str = EPOCH
    last_time: str = EPOCH


class WindowGone(Exception):
    """A time window that begins among dropped changes and ends after the first of them:
    how many of its changes came before the kept ones is not known."""


@dataclass
class _Tail:
    path: Path | None
    size: int
    sequence: int
    timestamp: str


class ChangeFeed:
    """The change feed of one archive (``folder`` is ARCHIVE/.changefeed)."""

    def __init__(
        self,
        folder: Path,
        *,
        segment_entries: int = SEGMENT_ENTRIES,
        segments_kept: int = SEGMENTS_KEPT,
    ) -> None:
        self.folder = folder
        self.segment_entries = segment_entries
        self.segments_kept = max(segments_kept, 1)
        self._mutex = threading.Lock()
        self._tail: _Tail | None = None
        #: Closed segment -> sorted 64-bit hashes of its SOP Instance UIDs.
        self._hashes: dict[Path, np.ndarray] = {}
        self._unflushed: set[Path] = set()

    @classmethod
    def of(cls, archive: Path) -> ChangeFeed:
        """The feed of the archive folder ``archive``: how another process reads it (a
        reader needs no lock; ``push --follow`` follows it so)."""
        return cls(Layout(archive).changefeed)

    # appending ---------------------------------------------------------------------------

    def append(self, changes: Iterable[Change], fsync: bool) -> list[FeedEntry]:
        """Record ``changes`` in order, numbered after the last recorded one; flushed once
        if ``fsync`` (the caller's group commit, not one flush per change), else left for
        :meth:`flush`."""
        changes = list(changes)
        if not changes:
            return []
        with self._mutex, self._locked():
            tail = self._current_tail()
            moment = max(timestamp(datetime.now(UTC)), tail.timestamp)
            lines: dict[Path, list[bytes]] = {}
            path, sequence, entries = tail.path, tail.sequence, []
            for change in changes:
                sequence += 1
                if path is None or sequence - _first(path) >= self.segment_entries:
                    path = _segment(self.folder, sequence)
                entry = FeedEntry(sequence, moment, *_fields(change))
                lines.setdefault(path, []).append(_line(entry))
                entries.append(entry)
            self._write(lines, fsync, new_segment=path != tail.path)
            self._tail = _Tail(path, path.stat().st_size, sequence, moment)
            if path != tail.path:
                self._drop_old()
        return entries

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The feed to this process alone (POSIX lock: gone when the holder dies)."""
        self.folder.mkdir(exist_ok=True)
        with (self.folder / "lock").open("a+") as handle:
            fcntl.lockf(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)

    def _current_tail(self) -> _Tail:
        """The last segment, sequence and timestamp: remembered from this process's last
        append unless another process appended since (the segment grew, or the next one,
        named by the next sequence, was begun)."""
        known = self._tail
        if known is not None and known.path is not None:
            with contextlib.suppress(OSError):
                grown = known.path.stat().st_size != known.size
                if not grown and not _segment(self.folder, known.sequence + 1).exists():
                    return known
        segments = self.segments()
        if not segments:
            dropped = self.dropped()
            return _Tail(None, 0, dropped.last, dropped.last_time)
        path = segments[-1]
        data, size = _cut_partial_line(path)
        last = _parse(data.rsplit(b"\n", 2)[-2]) if data else None
        if last is None:
            return _Tail(path, size, _first(path) - 1, self.dropped().last_time)
        return _Tail(path, size, last.sequence, last.timestamp)

    def _write(self, lines: dict[Path, list[bytes]], fsync: bool, new_segment: bool) -> None:
        for path, chunk in lines.items():
            with path.open("ab") as fp:
                fp.write(b"".join(chunk))
        touched = [*lines, *([self.folder] if new_segment else [])]
        if fsync:
            for path in touched:
                fsync_path(path)
        else:
            self._unflushed.update(touched)

    def flush(self) -> None:
        """Make what this process appended without ``fsync`` durable: one flush of each
        file written to (and of the folder, for a segment begun)."""
        with self._mutex:
            touched, self._unflushed = self._unflushed, set()
        for path in touched:
            fsync_path(path)

    def _drop_old(self) -> None:
        """Retention: the oldest segments beyond :attr:`segments_kept`, whole."""
        segments = self.segments()
        if len(segments) <= self.segments_kept:
            return
        dropping = segments[: len(segments) - self.segments_kept]
        before = self.dropped()
        first_time = before.first_time if before.last else _first_entry(dropping[0]).timestamp
        last = _first(segments[len(dropping)]) - 1
        ending = _read(dropping[-1])
        last_time = ending[-1].timestamp if ending else first_time
        record = f"{last}\t{first_time}\t{last_time}\n".encode()
        write_atomically(self.folder / "dropped", record, fsync=False)
        for path in dropping:
            path.unlink(missing_ok=True)
            self._hashes.pop(path, None)

    # reading -----------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """The segment files, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.suffix == SUFFIX and p.stem.isdigit())

    def dropped(self) -> Dropped:
        try:
            last, first_time, last_time = (self.folder / "dropped").read_text().split()
            return Dropped(int(last), first_time, last_time)
        except (OSError, ValueError):
            return Dropped()

    def latest(self) -> FeedEntry | None:
        """The last change recorded, with its state (always current or deleted)."""
        for path in reversed(self.segments()):
            with contextlib.suppress(FileNotFoundError):
                last = _last_entry(path)
                if last is not None:
                    return _own_state(last)
        return None

    def after(self, sequence: int, limit: int) -> list[FeedEntry]:
        """Up to ``limit`` changes numbered after ``sequence``, with their states."""
        found: list[FeedEntry] = []
        for path in self._segments_from(sequence + 1):
            start = max(sequence + 1 - _first(path), 0)
            found += _read(path, start, limit - len(found))
            if len(found) >= limit:
                break
        return self._with_states(found)

    def window(self, start: str, end: str, offset: int, limit: int) -> list[FeedEntry]:
        """Up to ``limit`` changes timed from ``start`` (inclusive) to ``end`` (exclusive),
        after the first ``offset`` of them: Microsoft's v2 paging. Changes dropped by
        retention count among the ``offset`` skipped, so that an offset stays good while the
        feed is trimmed; raises :class:`WindowGone` when how many of them fall in the window
        is not known."""
        if start <= EPOCH and end >= END:  # no window: the offset is the sequence
            return self.after(offset, limit)
        skip = max(offset - self._dropped_in(start, end), 0)
        # timestamps never decrease with the sequence: the window is a run of sequences
        page = self.after(self._first_at(start) - 1 + skip, limit)
        return [entry for entry in page if entry.timestamp < end]

    def _first_at(self, moment: str) -> int:
        """The sequence of the first change kept at ``moment`` or later (one past the last
        change if there is none), found by bisection."""
        after_last = self.dropped().last + 1
        for path in self._segments_at(moment):
            lines = _lines(path)
            index = bisect.bisect_left(lines, moment.encode(), key=_timestamp_of)
            if index < len(lines):
                return _first(path) + index
            after_last = _first(path) + len(lines)
        return after_last

    def _dropped_in(self, start: str, end: str) -> int:
        dropped = self.dropped()
        if not dropped.last or start > dropped.last_time or end <= dropped.first_time:
            return 0
        if start <= dropped.first_time and end > dropped.last_time:
            return dropped.last
        raise WindowGone(
            f"changes before {dropped.last_time} (sequence {dropped.last + 1}) were dropped "
            f"by retention; start the window at {dropped.last_time} or later, or page by "
            "offset without startTime"
        )

    def _segments_from(self, sequence: int) -> list[Path]:
        """The segments that may hold ``sequence`` and later ones."""
        segments = self.segments()
        before = [path for path in segments if _first(path) <= sequence]
        return segments[len(before) - 1 :] if before else segments

    def _segments_at(self, moment: str) -> list[Path]:
        """The segments that may hold changes at ``moment`` or later."""
        segments = self.segments()
        earlier = 0
        for index, path in enumerate(segments):
            first = _first_entry(path)
            if first is not None and first.timestamp < moment:
                earlier = index
        return segments[earlier:]

    def _with_states(self, entries: list[FeedEntry]) -> list[FeedEntry]:
        """Each entry with its state: current until a later change of its instance;
        then replaced, or deleted if the last change deleted it."""
        if not entries:
            return entries
        last = entries[-1].sequence
        latest = {entry.sop: entry for entry in entries}
        wanted = {sop.encode() for sop in latest}
        probe = _hash_array(hash(sop) for sop in wanted)
        segments = self._segments_from(last + 1)
        for index, path in enumerate(segments):
            closed = index < len(segments) - 1
            if closed and not _any_in(probe, self._sop_hashes(path)):
                continue
            for line in _lines(path)[max(last + 1 - _first(path), 0) :]:
                entry = _parse(line) if _sop_of(line) in wanted else None  # parse few
                if entry is not None:
                    latest[entry.sop] = entry
        return [_state_after(entry, latest[entry.sop]) for entry in entries]

    def _sop_hashes(self, path: Path) -> np.ndarray:
        hashes = self._hashes.get(path)
        if hashes is None:
            lines = _lines(path)
            values = [hash(_sop_of(line)) for line in lines]
            hashes = self._hashes[path] = _hash_array(values)
        return hashes


def _hash_array(hashes: Iterable[int]) -> np.ndarray:
    """``hashes`` sorted, 8 bytes each: a segment's 10,000 SOP Instance UIDs in 80 KB."""
    import numpy as np  # here: the commands that append to the feed never compare

    return np.array(sorted(hashes), dtype=np.int64)


def _any_in(probe: np.ndarray, hashes: np.ndarray) -> bool:
    """Whether any of ``probe`` is in the sorted ``hashes``."""
    if not len(hashes):
        return False
    at = hashes.searchsorted(probe).clip(max=len(hashes) - 1)
    return bool((hashes[at] == probe).any())


def _sop_of(line: bytes) -> bytes:
    """The SOP Instance UID of a line, the next to last field, without parsing the rest."""
    fields = line.rsplit(b"\t", 2)
    return fields[1] if len(fields) == 3 else b""


def _timestamp_of(line: bytes) -> bytes:
    return line.split(b"\t", 2)[1] if line.count(b"\t") >= 2 else b""


def _state_after(entry: FeedEntry, last: FeedEntry) -> FeedEntry:
    if last.sequence == entry.sequence:
        return _own_state(entry)
    state = "deleted" if last.action == "delete" else "replaced"
    return dataclasses.replace(entry, state=state)


def _own_state(entry: FeedEntry) -> FeedEntry:
    """The state of the last change of an instance."""
    return dataclasses.replace(entry, state="deleted" if entry.action == "delete" else "current")


def _first(path: Path) -> int:
    return int(path.stem)


def _segment(folder: Path, first: int) -> Path:
    return folder / f"{first:020d}{SUFFIX}"


def _fields(change: Change) -> tuple[str, str, str, str, str]:
    return change.action, change.study, change.series, change.sop, change.sop_class


def _line(entry: FeedEntry) -> bytes:
    """The entry's line; its state is worked out when read, never stored."""
    fields = (str(entry.sequence), entry.timestamp, entry.action, entry.study, entry.series)
    return "\t".join((*fields, entry.sop, entry.sop_class)).encode() + b"\n"


def _parse(line: bytes) -> FeedEntry | None:
    """An entry from its line; None for a line that is not one (a partial last line)."""
    fields = line.decode("ascii", "replace").split("\t")
    if len(fields) != 7 or not fields[0].isdigit() or fields[2] not in ACTIONS:
        return None
    return FeedEntry(int(fields[0]), *fields[1:])


def _lines(path: Path) -> list[bytes]:
    """The whole lines of a segment (a partial last line is left out); none if it is gone."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:  # dropped by retention meanwhile
        return []
    return data.split(b"\n")[:-1]


def _read(path: Path, start: int = 0, count: int | None = None) -> list[FeedEntry]:
    """Entries of a segment from its ``start``-th line on (lines are dense by sequence)."""
    lines = _lines(path)[start:]
    if count is not None:
        lines = lines[:count]
    return [entry for entry in map(_parse, lines) if entry is not None]


def _last_entry(path: Path) -> FeedEntry | None:
    """The last whole line of a segment, read from its end."""
    with path.open("rb") as fp:
        size = fp.seek(0, os.SEEK_END)
        fp.seek(max(size - 4096, 0))
        lines = fp.read().split(b"\n")[:-1]  # a partial last line is left out
    return _parse(lines[-1]) if lines else None


def _first_entry(path: Path) -> FeedEntry | None:
    try:
        with path.open("rb") as fp:
            line = fp.readline()
    except FileNotFoundError:
        return None
    return _parse(line.rstrip(b"\n")) if line.endswith(b"\n") else None


def _cut_partial_line(path: Path) -> tuple[bytes, int]:
    """The last few lines of a segment and its size, after cutting off a partial last line
    that a crash mid-append left (the caller holds the lock)."""
    with path.open("rb+") as fp:
        size = fp.seek(0, os.SEEK_END)
        fp.seek(max(size - 4096, 0))
        data = fp.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            size -= len(data) - keep
            fp.truncate(size)
            data = data[:keep]
    return data, size
