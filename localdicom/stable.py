"""``serve --on-stable-study CMD``: run a command for each study that stopped receiving
instances, for pipelines that process a study once it has arrived (AI on arrival).

DICOM has no "study complete" message, so, as Orthanc's ``StableAge``, a study counts as
complete once no instance of it arrived for ``stable_seconds``. The watcher follows the
change feed from the server's start (it wakes when the Catalog says the feed grew); each
create or update marks its study, and a study unmarked for ``stable_seconds`` runs CMD once.
An instance arriving later marks it again, and CMD runs again after the next quiet period.
Deletions mark nothing, and a study deleted before it became stable is skipped.

CMD is split like a shell would (``shlex.split``) and run without a shell, with the
environment of the server plus LOCALDICOM_STUDY_UID, LOCALDICOM_ARCHIVE and LOCALDICOM_URL
(and LOCALDICOM_TOKEN when the server requires one). Its exit status is logged; a command that
cannot start or fails never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from localdicom.catalog import Catalog

logger = logging.getLogger("localdicom")

#: Changes read from the feed at a time.
BATCH = 1000


@dataclass(frozen=True)
class StableCommand:
    command: str
    stable_seconds: float
    archive: Path
    url: str
    token: str | None = None

    def environment(self, study: str) -> dict[str, str]:
        env = dict(os.environ, LOCALDICOM_STUDY_UID=study, LOCALDICOM_URL=self.url)
        env["LOCALDICOM_ARCHIVE"] = str(self.archive)
        if self.token:
            env["LOCALDICOM_TOKEN"] = self.token
        return env


class StableStudies:
    """Watches the Catalog's change feed and runs the command for each stable study."""

    def __init__(self, catalog: Catalog, command: StableCommand) -> None:
        self.catalog = catalog
        self.command = command
        #: Study Instance UID -> loop time its last instance was seen.
        self.pending: dict[str, float] = {}
        self._running: set[asyncio.Task] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        latest = await self.catalog.latest_change()
        sequence = 0 if latest is None else latest[0].sequence
        tick = min(1.0, self.command.stable_seconds / 4)
        unread = False  # only this server writes the feed while it runs: it says when
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.catalog.feed_changed.wait(), tick)
                self.catalog.feed_changed.clear()
                unread = True
            if unread:
                try:
                    sequence = await self._read_after(sequence, loop.time())
                    unread = False
                except OSError as exc:  # unreadable for a moment: again at the next tick
                    logger.warning("--on-stable-study cannot read the change feed: %s", exc)
            self._start_stable(loop.time())

    async def _read_after(self, sequence: int, now: float) -> int:
        while True:
            page = await self.catalog.changes_after(sequence, BATCH)
            for entry, _ in page:
                sequence = entry.sequence
                if entry.action != "delete":
                    self.pending[entry.study] = now
            if len(page) < BATCH:
                return sequence

    def _start_stable(self, now: float) -> None:
        stable = [
            study
            for study, seen in self.pending.items()
            if now - seen >= self.command.stable_seconds
        ]
        for study in stable:
            del self.pending[study]
            if self.catalog.study(study) is None:
                continue  # deleted meanwhile
            logger.info("study %s is stable: running --on-stable-study", study)
            task = asyncio.create_task(self._run_command(study))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_command(self, study: str) -> None:
        try:
            argv = shlex.split(self.command.command)
            process = await asyncio.create_subprocess_exec(
                *argv, env=self.command.environment(study), stdin=asyncio.subprocess.DEVNULL
            )
            status = await process.wait()
        except (OSError, ValueError) as exc:
            logger.warning("--on-stable-study for study %s could not run: %s", study, exc)
            return
        if status == 0:
            logger.info("--on-stable-study for study %s: done", study)
        else:
            logger.warning("--on-stable-study for study %s exited with status %d", study, status)


@contextlib.asynccontextmanager
async def watching(catalog: Catalog, command: StableCommand | None) -> AsyncIterator[None]:
    """Run the watcher while the block runs (nothing when ``command`` is None)."""
    if command is None:
        yield
        return
    task = asyncio.create_task(StableStudies(catalog, command).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
