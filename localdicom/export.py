"""``localdicom export ARCHIVE DEST``: selected instances out of the archive, to a folder or
a zip, laid out by UID or, with ``--dicomdir``, for a CD viewer; as stored, or converted
to ``--transfer-syntax`` in worker processes.

It reads the archive from the sidecars alone (:func:`localdicom.selection.local_instances`)
and writes nothing into it, so it is safe while a server runs. DEST appears whole or not at
all: everything is written under a temporary name beside it, renamed to DEST at the end,
and removed if the export is interrupted or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import click

from localdicom.archive import StoredInstance, sidecar
from localdicom.console import EXIT_CODES, Bar
from localdicom.dicom.pixels import transcode
from localdicom.dicom.syntaxes import INSTANCE_TARGETS, can_encode, instance_targets
from localdicom.packaging import AS_STORED, FolderSink, Member, PackageReport, ZipSink, package
from localdicom.selection import local_instances, selection_from, selection_options
from localdicom.settings import options
from localdicom.workers import Workers


@dataclass
class ExportReport:
    dest: Path
    package: PackageReport = field(default_factory=PackageReport)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.package.failed else 0

    def lines(self) -> list[str]:
        if self.interrupted:
            return [f"Interrupted: nothing was written to {self.dest}; run the command again."]
        done = self.package
        seconds = max(done.seconds, 1e-9)
        lines = [
            f"Exported to {self.dest} in {done.seconds:.2f} s: {done.written} instances, "
            f"{done.size / 1e6:.1f} MB, {done.written / seconds:.0f} files/s, "
            f"{done.size / 1e6 / seconds:.1f} MB/s"
        ]
        if done.converted:
            lines.append(f"  converted {done.converted}")
        lines += [f"error: {sop}: {reason}" for sop, reason in done.failed]
        lines += done.notes
        return lines


@click.command("export", epilog=EXIT_CODES)
@click.argument("archive", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@selection_options
@options("export")
def export(
    archive: Path,
    dest: Path,
    studies: tuple[str, ...],
    series: tuple[str, ...],
    queries: tuple[tuple[str, str], ...],
    everything: bool,
    as_zip: bool,
    dicomdir: bool,
    transfer_syntax: str | None,
    workers: int | None,
) -> int:
    """Copy the selected instances of ARCHIVE to DEST: a new folder, or with --zip a zip
    file. Reads the sidecars only; safe while a server runs.

    \b
    Examples:
      localdicom export ./archive ./for-alice --study 1.2.840.113619.2.55.3
      localdicom export ./archive cd.zip --zip --dicomdir --query PatientID=12345
      localdicom export ./archive ./ct --query Modality=CT --transfer-syntax 1.2.840.10008.1.2.1
    """
    selection = selection_from(studies, series, queries, everything)
    if dest.exists():
        raise click.UsageError(f"{dest} exists; give a new name for the export")
    if not dest.parent.is_dir():
        raise click.UsageError(f"{dest.parent} is not a folder")
    _check_syntax(transfer_syntax)
    members = [_member(dcm, stored) for dcm, stored in local_instances(archive, selection)]
    if not members:
        raise click.ClickException(f"nothing in {archive} matches the selection")
    report = ExportReport(dest)
    with Bar("Exporting") as bar:
        bar.add_total(len(members))
        try:
            report.package = _run(members, dest, as_zip, dicomdir, transfer_syntax, workers, bar)
        except KeyboardInterrupt:
            report.interrupted = True
        except OSError as exc:  # the destination cannot be written: a full disk, say
            raise click.ClickException(
                f"cannot write {dest} ({exc.strerror or exc}); nothing was written"
            ) from None
    for line in report.lines():
        click.echo(line)
    return report.exit_code


def _check_syntax(syntax: str | None) -> None:
    if syntax is not None and not (syntax in INSTANCE_TARGETS and can_encode(syntax)):
        known = ", ".join(s for s in INSTANCE_TARGETS if can_encode(s))
        raise click.BadParameter(
            f"{syntax} is not a transfer syntax instances can be written in here ({known})",
            param_hint="--transfer-syntax",
        )


def _member(dcm: Path, stored: StoredInstance) -> Member:
    """What the export keeps of an instance until it is written: not its metadata, read
    again from the sidecar for the DICOMDIR (a large selection would hold every one)."""
    header = stored.header
    return Member(
        path=dcm,
        size=stored.size,
        study=header.study_uid,
        series=header.series_uid,
        sop=header.sop_uid,
        syntax=header.transfer_syntax,
        metadata=lambda: sidecar.read(dcm).header.metadata,
    )


def _run(
    members: list[Member],
    dest: Path,
    as_zip: bool,
    dicomdir: bool,
    syntax: str | None,
    workers: int | None,
    bar: Bar,
) -> PackageReport:
    """Write under a temporary name, then rename it to ``dest``; remove it on any failure
    (SIGTERM too, which interrupts like Ctrl-C)."""
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        report = asyncio.run(_write(members, partial, as_zip, dicomdir, syntax, workers, bar))
        os.rename(partial, dest)
        return report
    finally:
        signal.signal(signal.SIGTERM, previous)
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


async def _write(
    members: list[Member],
    partial: Path,
    as_zip: bool,
    dicomdir: bool,
    syntax: str | None,
    workers: int | None,
    bar: Bar,
) -> PackageReport:
    pool = Workers(workers)

    async def convert(member: Member, target: str) -> bytes:
        if target not in instance_targets(member.syntax):
            raise ValueError(f"pixel data stored in {member.syntax} cannot be decoded here")
        return await pool.run(transcode, member.path, target)

    # --deidentify (issue 20, item 3): rewrite each member here once localdicom's
    # de-identification module is merged (a ``convert`` that de-identifies, then transcodes).
    try:
        if as_zip:
            with partial.open("xb") as fp:
                report = await package(
                    members,
                    ZipSink(file=fp),
                    convert,
                    syntax=syntax or AS_STORED,
                    dicomdir=dicomdir,
                    keep_going=True,
                    progress=bar,
                )
                os.fsync(fp.fileno())
            return report
        partial.mkdir()
        return await package(
            members,
            FolderSink(partial),
            convert,
            syntax=syntax or AS_STORED,
            dicomdir=dicomdir,
            keep_going=True,
            progress=bar,
        )
    finally:
        pool.close()
