"""``localdicom export ARCHIVE DEST``: selected instances out of the archive, to a folder or
a zip, laid out by UID or, with ``--dicomdir``, for a CD viewer; as stored, or converted
to ``--transfer-syntax`` in worker processes; with ``--deidentify``, de-identified there
too (PS3.15 Annex E, :mod:`localdicom.deid`): each file read, rewritten and, if asked,
converted by a worker, and named in DEST and the DICOMDIR by its new UIDs.

It reads the archive from the sidecars alone (:func:`localdicom.selection.local_instances`)
and writes nothing into it, so it is safe while a server runs. DEST appears whole or not at
all: everything is written under a temporary name beside it, renamed to DEST at the end,
and removed if the export is interrupted or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import click
from pydicom.dataset import Dataset

from localdicom.archive import StoredInstance, sidecar
from localdicom.console import EXIT_CODES, Bar
from localdicom.deid import (
    Deidentifier,
    Deidentify,
    KeyFileError,
    Pseudonym,
    burned_in,
    deidentify_part10,
)
from localdicom.dicom.describing import describe
from localdicom.dicom.pixels import transcode
from localdicom.dicom.syntaxes import INSTANCE_TARGETS, can_encode, instance_targets
from localdicom.importer.report import review_lines
from localdicom.packaging import AS_STORED, FolderSink, Member, PackageReport, ZipSink, package
from localdicom.selection import Selection, local_instances, selection_from
from localdicom.settings import options
from localdicom.workers import Workers


@dataclass
class ExportReport:
    dest: Path
    package: PackageReport = field(default_factory=PackageReport)
    interrupted: bool = False
    deid: Deidentifying | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.package.failed else 0

    def lines(self) -> list[str]:
        if self.interrupted:
            notes = self.deid.notes if self.deid else []
            again = "run the command again"
            return [f"Interrupted: nothing was written to {self.dest}; {again}.", *notes]
        done = self.package
        seconds = max(done.seconds, 1e-9)
        lines = [
            f"Exported to {self.dest} in {done.seconds:.2f} s: {done.written} instances, "
            f"{done.size / 1e6:.1f} MB, {done.written / seconds:.0f} files/s, "
            f"{done.size / 1e6 / seconds:.1f} MB/s"
        ]
        if done.converted:
            lines.append(f"  {'de-identified' if self.deid else 'converted'} {done.converted}")
        if self.deid is None:
            lines += [f"error: {sop}: {reason}" for sop, reason in done.failed]
            return lines + done.notes
        deid = self.deid
        if deid.review or deid.refused:
            lines += [f"  need review {len(deid.review)}", f"  refused {len(deid.refused)}"]
        lines += [f"error: {deid.original.get(sop, sop)}: {why}" for sop, why in done.failed]
        lines += review_lines("export", deid.review, deid.refused, verbose=True)
        return lines + done.notes + deid.notes


@click.command("export", epilog=EXIT_CODES)
@click.argument("archive", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@options("export")
def export(
    archive: Path,
    dest: Path,
    studies: tuple[str, ...],
    series: tuple[str, ...],
    queries: tuple[tuple[str, str], ...],
    everything: bool,
    deidentify: bool,
    deid_key: Path | None,
    deid_options: tuple[str, ...],
    reject_burned_in: bool,
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
      localdicom export ./archive share.zip --zip --all --deidentify --deid-key ~/private/key.json
    """
    selection = selection_from(studies, series, queries, everything)
    choice = Deidentify.chosen(deidentify, deid_key, deid_options, reject_burned_in)
    if dest.exists():
        raise click.UsageError(f"{dest} exists; give a new name for the export")
    if not dest.parent.is_dir():
        raise click.UsageError(f"{dest.parent} is not a folder")
    _check_syntax(transfer_syntax)
    report = ExportReport(dest, deid=_deidentifying(choice, archive, dest))
    members = _members(archive, selection, report.deid)
    if not members:
        refused = len(report.deid.refused) if report.deid else 0
        why = f": the {refused} selected are refused by --reject-burned-in" if refused else ""
        raise click.ClickException(f"nothing in {archive} to export{why}")
    with Bar("Exporting") as bar:
        bar.add_total(len(members))
        try:
            report.package = _run(members, dest, as_zip, dicomdir, transfer_syntax, workers, bar,
                                  report.deid)  # fmt: skip
        except KeyboardInterrupt:
            report.interrupted = True
        except OSError as exc:  # the destination cannot be written: a full disk, say
            raise click.ClickException(
                f"cannot write {dest} ({exc.strerror or exc}); nothing was written"
            ) from None
        finally:
            if report.deid is not None:
                report.deid.record()
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


def _members(archive: Path, selection: Selection, deid: Deidentifying | None) -> list[Member]:
    members = []
    for dcm, stored in local_instances(archive, selection):
        member = _member(dcm, stored) if deid is None else deid.member(dcm, stored)
        if member is not None:
            members.append(member)
    return members


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


# --deidentify ------------------------------------------------------------------------------

#: What :func:`localdicom.deid.burned_in` looks at: Burned In Annotation, SOP Class, Modality.
_BURNED_IN_TAGS = ("00280301", "00080016", "00080060")


@dataclass
class Deidentifying:
    """--deidentify during one export: the rules, what the selection holds that needs a
    look (or is left out), and what the workers met."""

    choice: Deidentify
    deidentifier: Deidentifier
    review: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: The patients met, by pseudonym, for the key file's map.
    patients: dict[str, Pseudonym] = field(default_factory=dict)
    #: New SOP Instance UID -> the original, for the summary (read by its owner only).
    original: dict[str, str] = field(default_factory=dict)
    #: New SOP Instance UID -> DICOM JSON of the de-identified header, from its conversion
    #: until the DICOMDIR records it.
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: How the review list says where an instance went ("sent as" for push).
    went: str = "exported as"

    def member(self, dcm: Path, stored: StoredInstance) -> Member | None:
        """The instance named by its new UIDs (those the worker will write into it), or
        None when --reject-burned-in leaves it out."""
        header = stored.header
        metadata = header.metadata
        why = burned_in(
            Dataset.from_json({t: metadata[t] for t in _BURNED_IN_TAGS if t in metadata})
        )
        if why and self.choice.reject_burned_in:
            self.refused.append((str(dcm), f"--reject-burned-in: {why}"))
            return None
        uid = self.deidentifier.key.uid
        sop = uid(header.sop_uid)
        if why:
            self.review.append((str(dcm), f"{self.went} {sop}: {why}"))
        self.original[sop] = header.sop_uid
        return Member(
            path=dcm,
            size=stored.size,
            study=uid(header.study_uid),
            series=uid(header.series_uid),
            sop=sop,
            syntax=header.transfer_syntax,
            metadata=lambda: self.headers.pop(sop),
        )

    async def convert(self, pool: Workers, member: Member, target: str | None) -> bytes:
        made = await pool.run(deidentified, member.path, self.deidentifier, target)
        self.patients[made.patient.pseudonym] = made.patient
        self.headers[member.sop] = made.metadata
        return made.data

    def record(self) -> None:
        """The patients met into the key file's map, as ``import --deidentify`` does."""
        if note := self.choice.record(self.patients.values()):
            self.notes.append(note)


def _deidentifying(choice: Deidentify | None, archive: Path, dest: Path) -> Deidentifying | None:
    if choice is None:
        return None
    try:
        deidentifier = choice.open([("the archive", archive), ("DEST", dest)])
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    return Deidentifying(choice, deidentifier)


@dataclass(frozen=True)
class Deidentified:
    """A worker's answer: the new Part 10 bytes, the patient's pseudonym, and the DICOM JSON
    of the new header (as a sidecar holds it) for the DICOMDIR."""

    data: bytes
    patient: Pseudonym
    metadata: dict[str, Any]


def deidentified(path: Path, deidentifier: Deidentifier, target: str | None) -> Deidentified:
    """In a worker: the instance at ``path`` de-identified and, when ``target`` is given,
    converted to it. The conversion runs first, on the stored file as without
    --deidentify: it changes only the pixel data and the attributes that describe it, which
    de-identification keeps as they are, so the order does not change the result."""
    source = BytesIO(transcode(path, target)) if target else path.open("rb")
    out = BytesIO()
    with source:
        outcome = deidentify_part10(source, out, deidentifier)
    data = out.getvalue()
    return Deidentified(data, outcome.patient, describe(BytesIO(data)).metadata)


def _run(
    members: list[Member],
    dest: Path,
    as_zip: bool,
    dicomdir: bool,
    syntax: str | None,
    workers: int | None,
    bar: Bar,
    deid: Deidentifying | None = None,
) -> PackageReport:
    """Write under a temporary name, then rename it to ``dest``; remove it on any failure
    (SIGTERM too, which interrupts like Ctrl-C)."""
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        writing = _write(members, partial, as_zip, dicomdir, syntax, workers, bar, deid)
        report = asyncio.run(writing)
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
    deid: Deidentifying | None,
) -> PackageReport:
    pool = Workers(workers)

    async def convert(member: Member, target: str) -> bytes:
        if deid is not None and target == member.syntax:
            return await deid.convert(pool, member, None)
        if target not in instance_targets(member.syntax):
            raise ValueError(f"pixel data stored in {member.syntax} cannot be decoded here")
        if deid is not None:
            return await deid.convert(pool, member, target)
        return await pool.run(transcode, member.path, target)

    try:
        write = functools.partial(
            package,
            members,
            convert=convert,
            syntax=syntax or AS_STORED,
            dicomdir=dicomdir,
            keep_going=True,
            progress=bar,
            rewrite=deid is not None,
        )
        if as_zip:
            with partial.open("xb") as fp:
                report = await write(ZipSink(file=fp))
                os.fsync(fp.fileno())
            return report
        partial.mkdir()
        return await write(FolderSink(partial))
    finally:
        pool.close()
