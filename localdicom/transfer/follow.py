"""``push --follow``: after the first pass, keep the remote in step with the archive by reading
its change feed (:class:`localdicom.archive.ChangeFeed`, the file the server and ``import``
append to; a reader takes no lock, so a server may run on the archive meanwhile).

Each create or update marks its study; a study that had no change for ``stable_seconds`` is
pushed (its changed instances that the selection includes), as ``serve --on-stable-study``
and Orthanc's ``StableAge`` decide that a study has arrived: DICOM has no "study complete"
message. Deletions are not propagated, only told: a delete sent to a shared archive cannot be
undone there, and a local clean-up is not a reason to remove the lab's copy.

The record keeps, per selection, the sequence up to which every change has been pushed (the
first change of the oldest study still waiting, minus one), saved after each study: a
restart reads on from there. When the feed no longer holds that sequence (retention dropped
it, or the feed was started again), the whole selection is compared with the record
instead, which sends only what the record lacks.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localdicom.archive import ChangeFeed, FeedEntry, Layout, sidecar
from localdicom.selection import Selection, local_instances
from localdicom.transfer.push import Pushing

#: Changes read from the feed at a time.
BATCH = 1000


@dataclass(frozen=True)
class Follow:
    """How ``push --follow`` runs: a study is pushed after ``stable_seconds`` without a
    change; the feed is looked at every ``poll`` seconds (a stat of its last segment: it is
    read only when that changed); ``say`` tells what happens, a line at a time."""

    stable_seconds: float
    say: Callable[[str], None]
    poll: float = 1.0

    def __call__(self, run: Pushing, root: Path, selection: Selection) -> None:
        _Follower(self, run, root, selection).follow()


@dataclass
class _Study:
    """A study with changes not pushed yet."""

    first: int
    last_seen: float
    instances: set[tuple[str, str]] = field(default_factory=set)


def selection_key(selection: Selection) -> str:
    """The record's name for a selection's offset."""
    return hashlib.sha256(repr(selection).encode()).hexdigest()[:16]


class _Follower:
    def __init__(self, how: Follow, run: Pushing, root: Path, selection: Selection) -> None:
        self.how = how
        self.run = run
        self.root = root
        self.selection = selection
        self.feed = ChangeFeed.of(root)
        self.layout = Layout(root)
        self.key = selection_key(selection)
        self.pending: dict[str, _Study] = {}
        #: The last sequence read, and the feed's last segment (name, size, mtime) then.
        self.read = 0
        self.stamp: tuple[str, int, int] | None = None

    def follow(self) -> None:
        saved = self.run.record.offsets.get(self.key)
        if saved is None or self._gap(saved):
            self._resync()
        else:
            self.read = saved
            self.how.say(f"Following the change feed from change {saved}.")
        while not self.run.stop.requested:
            entries = self._new_entries()
            if entries is None:
                self.how.say("The change feed no longer holds the changes after the last one read.")
                self._resync()
                continue
            now = time.monotonic()
            for entry in entries:
                self._note(entry, now)
            self._push_stable(now)
            self._save()
            if len(entries) < BATCH and not self.run.stop.requested:
                time.sleep(self.how.poll)

    def _gap(self, offset: int) -> bool:
        """Whether changes after ``offset`` are no longer in the feed (or it began again)."""
        latest = self.feed.latest()
        return self.feed.dropped().last > offset or (latest.sequence if latest else 0) < offset

    def _resync(self) -> None:
        """The whole selection compared with the record (what it lacks is sent), and the
        feed read on from its last change before that."""
        latest = self.feed.latest()
        self.read = latest.sequence if latest else 0
        self.how.say("Sending what the record lacks of the whole selection.")
        self.run.send(list(local_instances(self.root, self.selection)))
        self.pending.clear()
        if not self.run.stop.requested:
            self._save()
            self.how.say(f"Following the change feed from change {self.read}.")

    def _new_entries(self) -> list[FeedEntry] | None:
        """The changes after the last one read ([] when the feed's file did not change);
        None when some of them are gone."""
        segments = self.feed.segments()
        stamp = None
        if segments:
            try:
                status = segments[-1].stat()
                stamp = (segments[-1].name, status.st_size, status.st_mtime_ns)
            except FileNotFoundError:  # retention dropped it meanwhile: read
                stamp = None
        if stamp is not None and stamp == self.stamp:
            return []
        try:
            entries = self.feed.after(self.read, BATCH)
            gone = (entries and entries[0].sequence != self.read + 1) or self._gap(self.read)
        except OSError as exc:  # a segment dropped while read: again at the next look
            self.how.say(f"Cannot read the change feed now ({exc}); trying again.")
            return []
        if gone:
            return None
        if len(entries) < BATCH:
            self.stamp = stamp
        return entries

    def _note(self, entry: FeedEntry, now: float) -> None:
        self.read = entry.sequence
        if entry.action == "delete":
            self.how.say(
                f"Deleted here, not at the remote (push never deletes): studies/{entry.study}"
                f"/series/{entry.series}/instances/{entry.sop}"
            )
            return
        study = self.pending.setdefault(entry.study, _Study(entry.sequence, now))
        study.last_seen = now
        study.instances.add((entry.series, entry.sop))

    def _push_stable(self, now: float) -> None:
        for uid, study in list(self.pending.items()):
            if self.run.stop.requested:
                return
            if now - study.last_seen >= self.how.stable_seconds:
                self._push_study(uid, study)
                if not self.run.stop.requested:
                    del self.pending[uid]
                    self._save()

    def _push_study(self, uid: str, study: _Study) -> None:
        """The study's changed instances that are still here and selected."""
        instances = []
        for series, sop in sorted(study.instances):
            dcm = self.layout.instance_file(uid, series, sop)
            try:
                stored = sidecar.read(dcm)
            except (OSError, ValueError, KeyError, TypeError):  # deleted since
                continue
            if self.selection.includes(stored.header.metadata):
                instances.append((dcm, stored))
        if not instances:
            return
        report = self.run.report
        before = (report.stored, report.duplicates, len(report.conflicts), len(report.errors))
        self.run.send(instances)
        after = (report.stored, report.duplicates, len(report.conflicts), len(report.errors))
        counts = [b - a for a, b in zip(before, after, strict=True)]
        self.how.say(
            f"Study {uid}: {counts[0]} stored, {counts[1]} already there, "
            f"{counts[2]} conflicts, {counts[3]} errors."
        )

    def _save(self) -> None:
        """The sequence up to which every change is pushed, into the record."""
        firsts = [study.first for study in self.pending.values()]
        offset = min(firsts) - 1 if firsts else self.read
        if self.run.record.offsets.get(self.key) != offset:
            self.run.record.offsets[self.key] = offset
            self.run.record.save()
