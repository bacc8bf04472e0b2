"""``localdicom trash``: list, restore and empty what DELETE, the reject route and
``--overwrite`` moved to ``ARCHIVE/.trash/`` (:mod:`localdicom.archive.trash`).

A restore puts an instance back where it was. When a server runs on the archive, the files
are sent to it by STOW-RS, as ``import`` does, so that it serves them at once and stays the
only writer of its folders; otherwise they are renamed back, holding the archive against
imports. Either way, an instance whose SOP Instance UID is stored again meanwhile is a
conflict: listed, and left in the trash (nothing stored is ever replaced by a restore).
"""

from __future__ import annotations

import functools
import http.client
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import click

from localdicom.archive import (
    Archive,
    ArchiveBusy,
    Trash,
    Trashed,
    archive_lock,
    running_server,
    server_token,
)
from localdicom.archive.restoring import (
    RestoreReport,
    Selection,
    restore_in_place,
    selected,
    stored_files,
)
from localdicom.archive.trash import Entry
from localdicom.catalog import Decision
from localdicom.console import EXIT_CODES
from localdicom.importer.stow_client import StowClient, stow_outcome
from localdicom.listing import format_table, human_size
from localdicom.settings import options

logger = logging.getLogger("localdicom")
#: Instances sent to a running server at once by a restore (as many as import sends).
STOW_THREADS = 4


def entries(root: Path) -> list[Entry]:
    return list(Archive(root, fsync=False).trash.entries())


def restore(root: Path, selection: Selection, fsync: bool = True) -> RestoreReport:
    """Put the selected instances back (see the module docstring)."""
    archive = Archive(root, fsync=fsync)
    server = running_server(archive)
    if server is not None:
        report = _restore_through(archive, server, selected(archive.trash, selection))
        archive.trash.tidy(report.restored)
    else:
        with archive_lock(root):
            archive.trash.recover()
            chosen = selected(archive.trash, selection)
            report = restore_in_place(archive, chosen, stored_files(archive))
    for trashed in report.restored:
        logger.info("trash: restored %s from .trash/%s", trashed.sop, trashed.entry)
    return report


def _restore_through(archive: Archive, server: str, chosen: list[Trashed]) -> RestoreReport:
    """STOW-RS each instance to the server, several at once, unless it stores one with that
    SOP Instance UID already (a server started with --overwrite would replace it); the
    trashed copy goes once the server has it. Copies of one instance are sent one round
    after the other, so that the first restored makes the others conflicts."""
    report = RestoreReport(server=server)
    client = StowClient(server, server_token(archive))
    with ThreadPoolExecutor(STOW_THREADS) as pool:
        while chosen:
            firsts, chosen = _first_copies(chosen)
            sent = pool.map(functools.partial(_send, client, archive.trash), firsts)
            for trashed, (decision, why) in zip(firsts, sent, strict=True):
                if decision is Decision.STORE:
                    archive.trash.forget(trashed)
                    report.restored.append(trashed)
                elif decision is Decision.CONFLICT:
                    report.conflicts.append((trashed, why))
                else:
                    report.errors.append((trashed, why))
    return report


def _first_copies(chosen: list[Trashed]) -> tuple[list[Trashed], list[Trashed]]:
    """The first copy of each instance, and the other copies, each in their order."""
    firsts: list[Trashed] = []
    later: list[Trashed] = []
    seen: set[str] = set()
    for each in chosen:
        (later if each.sop in seen else firsts).append(each)
        seen.add(each.sop)
    return firsts, later


def _send(client: StowClient, trash: Trash, trashed: Trashed) -> tuple[Decision | None, str]:
    """What became of one trashed instance sent to the server; no decision: an error."""
    try:
        if client.is_stored(trashed.sop):
            return Decision.CONFLICT, "the server stores an instance with this UID"
        with trash.open(trashed) as body:
            status, warning, answer = client.store(body, trashed.size)
    except (OSError, http.client.HTTPException) as exc:
        return None, f"cannot be restored: {exc}"
    return stow_outcome(status, warning, answer, present=False)


def empty(root: Path, older_than: float | None) -> list[Entry]:
    """Delete the trash entries removed more than ``older_than`` seconds ago (all: None)."""
    purged = Archive(root, fsync=False).trash.empty(older_than)
    for entry in purged:
        logger.info("trash: purged .trash/%s (%d instances)", entry.name, len(entry.instances))
    return purged


def listing_rows(found: list[Entry], now: Callable[[], float] = time.time) -> list[list[str]]:
    """The table ``localdicom trash ls`` prints: an entry per row, oldest first."""
    rows = [["REMOVED (UTC)", "AGE", "REASON", "INSTANCES", "SIZE", "STUDY UID", "ENTRY", "BY"]]
    for entry in found:
        reason = str(entry.manifest.get("reason", "?"))
        code = entry.manifest.get("code")
        if isinstance(code, dict):
            reason += f" {code.get('value')}^{code.get('designator')}"
        studies = sorted({each.study for each in entry.instances})
        removed = datetime.fromtimestamp(entry.removed_at, UTC)
        rows.append(
            [
                removed.strftime("%Y-%m-%d %H:%M:%S"),
                _age(now() - entry.removed_at),
                reason,
                str(len(entry.instances)),
                human_size(sum(each.size for each in entry.instances)),
                studies[0] + (f" (+{len(studies) - 1})" if len(studies) > 1 else ""),
                entry.name,
                str(entry.manifest.get("by", "")),
            ]
        )
    return rows


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(seconds, 0) / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


# the commands ------------------------------------------------------------------------------

ARCHIVE = click.argument("archive", type=click.Path(exists=True, file_okay=False, path_type=Path))


@click.group("trash")
def trash() -> None:
    """What DELETE, the reject route and --overwrite removed, kept in ARCHIVE/.trash/.

    \b
    Examples:
      localdicom trash ls ./archive
      localdicom trash restore ./archive --study 1.2.840.113619.2.55.3
      localdicom trash empty ./archive --older-than 30d
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


@trash.command("ls", epilog=EXIT_CODES)
@ARCHIVE
@options("trash ls")
def ls(archive: Path) -> int:
    """List the trash of ARCHIVE: one row per removal, oldest first."""
    found = entries(archive)
    if not found:
        click.echo(f"The trash of {archive} is empty.")
        return 0
    for line in format_table(listing_rows(found), numeric=(3, 4)):
        click.echo(line)
    return 0


@trash.command("restore", epilog=EXIT_CODES)
@ARCHIVE
@options("trash restore")
def restore_(
    archive: Path,
    restore_all: bool,
    study: str | None,
    series_uid: str | None,
    instance: str | None,
    entry: str | None,
) -> int:
    """Put trashed instances back into ARCHIVE, byte for byte.

    When a server runs on ARCHIVE they are stored through it (STOW-RS), so it serves them at
    once. An instance whose SOP Instance UID is stored again (a newer copy sent after an
    --overwrite, say) is a conflict: listed and left in the trash; delete the stored one and
    restore the older one's --entry to bring it back. When the trash holds several copies of
    one instance, the one removed last is restored and the others are conflicts.

    \b
    Examples:
      localdicom trash restore ./archive --all
      localdicom trash restore ./archive --series 1.2.840.113619.2.55.3.4
    """
    chosen = [
        name
        for name, given in (
            ("--all", restore_all),
            ("--study", study),
            ("--series", series_uid),
            ("--instance", instance),
            ("--entry", entry),
        )
        if given
    ]
    if len(chosen) != 1:
        raise click.UsageError("give one of --all, --study, --series, --instance or --entry")
    try:
        report = restore(archive, Selection(study, series_uid, instance, entry))
    except ArchiveBusy as exc:
        raise click.ClickException(str(exc)) from None
    for line in report.lines():
        click.echo(line)
    return report.exit_code


@trash.command("empty", epilog=EXIT_CODES)
@ARCHIVE
@options("trash empty")
def empty_(archive: Path, older_than: float | None) -> int:
    """Delete trash entries of ARCHIVE for good: all of them, or those older than AGE.

    \b
    Examples:
      localdicom trash empty ./archive --older-than 30d
      localdicom trash empty ./archive
    """
    purged = empty(archive, older_than)
    size = sum(each.size for entry in purged for each in entry.instances)
    count = sum(len(entry.instances) for entry in purged)
    click.echo(f"{len(purged)} trash entries deleted: {count} instances, {human_size(size)}.")
    return 0
