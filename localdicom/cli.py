"""The ``localdicom`` command."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import click
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from localdicom import __version__
from localdicom.app import CATALOG, DIMSE, make_app
from localdicom.archive import Layout, announce_server, sidecar, withdraw_server
from localdicom.console import EXIT_CODES, Bar
from localdicom.export import export
from localdicom.importer import (
    ArchiveBusy,
    CannotImport,
    Deidentify,
    Found,
    ImportOptions,
    Transfer,
    run_import,
    survey,
)
from localdicom.listing import format_table, human_size, list_studies, listing_rows
from localdicom.reindex import reindex
from localdicom.settings import Settings, options
from localdicom.stable import StableCommand, watching
from localdicom.transfer.commands import pull, push
from localdicom.trashbin import trash
from localdicom.web.security import browser_link, is_loopback_address
from localdicom.web.viewer import check_dist
from localdicom.workers import exit_with


class RequestLog(AbstractAccessLogger):
    """One line per request: method, path, status, bytes sent, milliseconds. A ``token``
    in the query (the link that logs a browser in) is written as ``***``: logs are read and
    shared more widely than the token should be."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.path_qs
        if "token" in request.query:
            path = request.rel_url.update_query(token="***").path_qs
        self.logger.info(
            "%s %s %d %d %.1fms",
            request.method,
            path,
            response.status,
            response.body_length,
            time * 1000,
        )


class OneLineErrors(click.Group):
    """Command-line mistakes are reported in one line (what is wrong and where the help is),
    not click's three-line usage block, and never as a traceback."""

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
    settings = Settings(archive=archive.resolve(), **chosen)
    _check_exposure(settings.host, settings.token, insecure)
    _check_dicom_exposure(settings, insecure)
    if settings.viewer is not None:
        try:
            check_dist(settings.viewer)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--viewer") from None
        settings = dataclasses.replace(settings, viewer=settings.viewer.resolve())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if import_found:
        _found_outside_layout(archive, True, settings.workers)
    stable = _stable_command(on_stable_study, stable_seconds)
    asyncio.run(_serve(settings, survey=None if import_found else archive, stable=stable))


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


def _check_dicom_exposure(settings: Settings, insecure: bool) -> None:
    """DICOM has no access token: a DICOM port beyond loopback takes calls only from the
    --dicom-peer AE titles, and without any it is refused unless --insecure."""
    host = settings.dicom_host or settings.host
    if settings.dicom_port is None or settings.dicom_peers or insecure:
        return
    if not is_loopback_address(host):
        raise click.UsageError(
            f"--dicom-port on {host} exposes the archive to any DICOM node on the network: "
            "name the nodes allowed to connect with --dicom-peer AE=HOST:PORT, or pass "
            "--insecure to accept every caller"
        )


def _check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to put an unprotected archive on the network by accident."""
    if token or insecure or is_loopback_address(host):
        return
    raise click.UsageError(
        f"--host {host} exposes the archive to the network: give an access token with "
        "--token (or LOCALDICOM_TOKEN), or pass --insecure to serve it without one"
    )


async def _serve(
    settings: Settings, survey: Path | None, stable: tuple[str, float] | None = None
) -> None:
    """Run until SIGINT or SIGTERM, announcing the server in the archive meanwhile so that
    ``localdicom import`` stores through it rather than behind its back, and running the
    ``stable`` (--on-stable-study, --stable-seconds) command meanwhile. Once serving, say
    what the ``survey`` folder holds outside the layout: walking a large archive takes
    seconds, which neither the first answer nor the index rebuild should wait for."""
    runner = web.AppRunner(make_app(settings), access_log_class=RequestLog)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # the real one when --port 0
    url = f"http://{settings.host}:{port}"
    logging.getLogger("localdicom").info(
        "localdicom %s serving DICOMweb at %s/ (also /v1, /v2, /dicom-web)%s",
        __version__,
        url,
        _dimse_line(runner.app, settings),
    )
    if settings.token:
        logging.getLogger("localdicom").info("in a browser: %s", browser_link(url, settings.token))
    layout = Layout(settings.archive)
    announce_server(layout, url, settings.token)
    if survey is not None:
        threading.Thread(
            target=_found_outside_layout, args=(survey, False, None), daemon=True
        ).start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopping.set)
    command = stable and StableCommand(*stable, settings.archive, url, settings.token)
    try:
        async with watching(runner.app[CATALOG], command):
            await stopping.wait()
    finally:
        withdraw_server(layout, url)
        await runner.cleanup()


def _dimse_line(app: web.Application, settings: Settings) -> str:
    dimse = app.get(DIMSE)
    if dimse is None:
        return ""
    host = settings.dicom_host or settings.host
    return f" and DICOM as AE title {settings.ae_title} at {host}:{dimse.port}"


# files outside the layout ------------------------------------------------------------


def _found_outside_layout(archive: Path, do_import: bool, workers: int | None) -> None:
    """Say what ARCHIVE holds outside its layout (the server would not see it), or import it."""
    if not archive.is_dir():
        return
    log = logging.getLogger("localdicom")
    found = survey(archive) if do_import else _survey_apart(archive)
    if not (found.dicom or found.zips):
        return
    what = f"{found.dicom} DICOM files and {found.zips} zip files"
    if not do_import:
        log.warning(
            "%s holds %s outside its layout (e.g. %s): they are not served. Import them into "
            "the layout (the originals stay where they are) with\n    localdicom import %s "
            "--archive %s\nor start with --import-found.",
            archive,
            what,
            found.example,
            shlex.quote(str(archive)),
            shlex.quote(str(archive)),
        )
        return
    log.info("importing %s found in %s outside its layout", what, archive)
    try:
        report = run_import([archive], archive, ImportOptions(workers=workers))
    except (CannotImport, ArchiveBusy) as exc:
        log.warning("not imported: %s", exc)
        return
    for line in report.lines():
        log.info("%s", line)


def _survey_apart(archive: Path) -> Found:
    """:func:`survey` in a process of its own, beside a running server: walking a large
    archive holds the GIL for seconds (2 s at 100k instances), which the first queries
    would wait on. Spawned, not forked from the worker processes' forkserver, which must be
    started with their modules loaded."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, spawn, initializer=exit_with, initargs=(os.getpid(),)) as pool:
        return pool.submit(survey, archive).result()


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
    deid = Deidentify.chosen(deidentify, deid_key, deid_options, reject_burned_in)
    options = ImportOptions(
        Transfer(transfer), overwrite, workers, fsync, deid, keep_replaced=trash
    )
    try:
        with Bar("Importing") as bar:
            report = run_import(sources, archive, options, bar)
    except (CannotImport, ArchiveBusy) as exc:
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


main.add_command(export)
main.add_command(trash)
main.add_command(pull)
main.add_command(push)
