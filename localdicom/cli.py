"""The ``localdicom`` command."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from localdicom import __version__, importer
from localdicom.archive import ArchiveBusy, sidecar
from localdicom.console import EXIT_CODES, Bar
from localdicom.listing import format_table, human_size, list_studies, listing_rows
from localdicom.settings import Settings, options


class OneLineErrors(click.Group):
    """Command-line mistakes are reported in one line (what is wrong and where the help is),
    not click's three-line usage block, and never as a traceback. The commands defined in
    other modules are imported when named (:func:`_elsewhere`): with them, every command
    started 0.1-0.4 s later (aiohttp, pynetdicom, the converters)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *ELSEWHERE])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in ELSEWHERE:
            return _elsewhere(cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


#: The commands defined in the modules of what they do.
ELSEWHERE = ("export", "pull", "push", "trash")


def _elsewhere(name: str) -> click.Command:
    if name == "export":
        from localdicom.export import export as command
    elif name == "trash":
        from localdicom.trashbin import trash as command
    elif name == "pull":
        from localdicom.transfer.commands import pull as command
    else:
        from localdicom.transfer.commands import push as command
    return command


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """The version, then the libraries and what they decode (localdicom/dicom/codecs.py)."""
    if not value or ctx.resilient_parsing:
        return
    from localdicom.dicom.codecs import report

    frozen = " (one-file executable)" if getattr(sys, "frozen", False) else ""
    click.echo("\n".join([f"localdicom {__version__}{frozen}", *report()]))
    ctx.exit()


@click.group(cls=OneLineErrors, epilog=EXIT_CODES)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and the codecs available, and exit.",
)
def main() -> None:
    """A folder on your laptop as a standard DICOMweb server.

    \b
    Examples:
      localdicom import /media/cdrom export.zip ~/from-alice --archive ./archive
      localdicom ls ./archive
      localdicom serve ./archive
    """


@main.command()
@click.argument("archive", type=click.Path(file_okay=False, path_type=Path))
@options("serve")
def serve(
    archive: Path,
    import_found: bool,
    insecure: bool,
    on_stable_study: str | None,
    stable_seconds: float,
    **chosen: Any,
) -> None:
    """Serve ARCHIVE (created if absent) over DICOMweb, and over DICOM with --dicom-port.

    \b
    Examples:
      localdicom serve ./archive --samples
      curl http://127.0.0.1:8042/v1/studies
      localdicom serve ~/folder-with-dicom-files --import-found
      localdicom serve ./archive --dicom-port 11112 --dicom-peer ORTHANC=127.0.0.1:4242
      localdicom serve ./archive --on-stable-study './segment.sh' --stable-seconds 30
    """
    from localdicom import serving  # aiohttp and the app, for this command only
    from localdicom.web.viewer import check_dist

    settings = Settings(archive=archive.resolve(), **chosen)
    serving.check_exposure(settings.host, settings.token, insecure)
    serving.check_dicom_exposure(settings, insecure)
    if settings.viewer is not None:
        try:
            check_dist(settings.viewer)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--viewer") from None
        settings = dataclasses.replace(settings, viewer=settings.viewer.resolve())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if import_found:
        serving.found_outside_layout(archive, True, settings.workers)
    stable = _stable_command(on_stable_study, stable_seconds)
    survey = None if import_found else archive
    asyncio.run(serving.serve_until_stopped(settings, survey=survey, stable=stable))


def _stable_command(command: str | None, seconds: float) -> tuple[str, float] | None:
    """--on-stable-study and --stable-seconds, once CMD is known to split into words."""
    if command is None:
        return None
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--on-stable-study") from None
    if not words:
        raise click.BadParameter("the command is empty", param_hint="--on-stable-study")
    return command, seconds


# import --------------------------------------------------------------------------------------


@main.command("import", epilog=EXIT_CODES)
@click.argument(
    "sources",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    metavar="SOURCE...",
)
@options("import")
def import_(
    sources: Sequence[Path],
    archive: Path,
    transfer: str,
    overwrite: bool,
    workers: int | None,
    fsync: bool,
    deidentify: bool,
    deid_key: Path | None,
    deid_options: tuple[str, ...],
    reject_burned_in: bool,
    verbose: bool,
    trash: bool,
) -> int:
    """Import DICOM files from each SOURCE into ARCHIVE.

    A SOURCE is a file, a folder (searched recursively), a zip file, or a DICOMDIR (the
    files it lists are imported). DICOM files are recognised by their content, whatever
    their name; anything else is skipped and counted. Each instance is stored as STOW-RS
    would store it, with the same duplicate policy: identical bytes already stored are
    'already present', a different instance with a stored SOP Instance UID is a conflict.

    When a server runs on ARCHIVE ('localdicom serve' announces itself in
    ARCHIVE/.localdicom-server), instances are sent to it by STOW-RS, so it serves them at once.

    Interrupting is safe: run the same command again and it stores what is missing, and
    nothing twice.

    \b
    Examples:
      localdicom import /media/cdrom --archive ./archive
      localdicom import pacs-export.zip IM0001 IM0002 --archive ./archive -v
      localdicom import ~/scans --archive ./archive --link
      localdicom import ~/scans --archive ./shared --deidentify --deid-key ~/private/key.json
    """
    deid = importer.Deidentify.chosen(deidentify, deid_key, deid_options, reject_burned_in)
    options = importer.ImportOptions(
        importer.Transfer(transfer), overwrite, workers, fsync, deid, keep_replaced=trash
    )
    try:
        with Bar("Importing") as bar:
            report = importer.run_import(sources, archive, options, bar)
    except (importer.CannotImport, ArchiveBusy) as exc:
        raise click.ClickException(str(exc)) from None
    for line in report.lines(verbose=verbose):
        click.echo(line)
    return report.exit_code


# reindex -------------------------------------------------------------------------------------


@main.command("reindex", epilog=EXIT_CODES)
@click.argument("archive", type=click.Path(exists=True, file_okay=False, path_type=Path))
@options("reindex")
def reindex_(archive: Path, only_stale: bool, workers: int | None) -> int:
    """Rebuild the sidecar (.json) of every instance in ARCHIVE from its .dcm.

    Sidecars carry a format number (now %(format)s): a server started after an upgrade that
    changes it rebuilds older sidecars itself, one by one, at start; reindex does it in
    parallel beforehand. A .dcm that is not where its UIDs place it is reported, not moved.
    Safe while a server runs.

    \b
    Examples:
      localdicom reindex ./archive
      localdicom reindex ./archive --only-stale --workers 4
    """
    from localdicom.reindex import reindex  # pydicom, for this command only

    try:
        with Bar("Reindexing") as bar:
            report = reindex(archive, only_stale=only_stale, workers=workers, progress=bar)
    except ArchiveBusy as exc:
        raise click.ClickException(str(exc)) from None
    for line in report.lines():
        click.echo(line)
    return report.exit_code


reindex_.help = (reindex_.help or "").replace("%(format)s", str(sidecar.FORMAT))


# ls ------------------------------------------------------------------------------------------


@main.command("ls", epilog=EXIT_CODES)
@click.argument("archive", type=click.Path(exists=True, file_okay=False, path_type=Path))
@options("ls")
def ls(archive: Path, series: bool) -> int:
    """List the studies in ARCHIVE: patient, date, description, modalities, series and
    instance counts, size on disk (instances and sidecars). Read from the sidecars only.

    \b
    Examples:
      localdicom ls ./archive
      localdicom ls ./archive --series
    """
    listing = list_studies(archive)
    if not listing.studies:
        click.echo(f"No studies in {archive}.")
    else:
        numeric = (5, 6, 7)
        for line in format_table(listing_rows(listing, with_series=series), numeric):
            click.echo(line)
    if listing.unlisted:
        click.echo(
            f"{listing.unlisted} instances have no readable sidecar and are not listed; "
            f"run: localdicom reindex {archive}"
        )
    if listing.trashed:
        click.echo(
            f"{listing.trashed} instances in the trash ({human_size(listing.trashed_size)}): "
            f"localdicom trash ls {archive}"
        )
    return 0
