"""What ``localdicom serve`` runs: the DICOMweb app (and the DICOM listener) on one event
loop until SIGINT or SIGTERM, announced in the archive meanwhile, and the checks before it.

Apart from :mod:`localdicom.cli` so that the other commands start without importing aiohttp
and the whole app: ``localdicom ls`` took 0.88-1.25 s with them, 0.65-0.79 s without.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import os
import shlex
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from localdicom import __version__
from localdicom.app import CATALOG, DIMSE, make_app
from localdicom.archive import Layout, announce_server, withdraw_server
from localdicom.dimse.server import CannotListen
from localdicom.importer import ArchiveBusy, CannotImport, Found, ImportOptions, run_import, survey
from localdicom.settings import Settings
from localdicom.stable import StableCommand, watching
from localdicom.web.security import browser_link, is_loopback_address
from localdicom.workers import exit_with

#: On Ctrl-C or SIGTERM, how long the requests in progress get to finish before they are
#: cancelled (an upload cut short stores nothing): aiohttp's default, 60 s, let a client
#: stalled mid-upload keep the server, and its DICOM listener, running that long.
STOP_GRACE_SECONDS = 5.0


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


def check_dicom_exposure(settings: Settings, insecure: bool) -> None:
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


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to put an unprotected archive on the network by accident."""
    if token or insecure or is_loopback_address(host):
        return
    raise click.UsageError(
        f"--host {host} exposes the archive to the network: give an access token with "
        "--token (or LOCALDICOM_TOKEN), or pass --insecure to serve it without one"
    )


async def serve_until_stopped(
    settings: Settings, survey: Path | None, stable: tuple[str, float] | None = None
) -> None:
    """Run until SIGINT or SIGTERM, announcing the server in the archive meanwhile so that
    ``localdicom import`` stores through it rather than behind its back, and running the
    ``stable`` (--on-stable-study, --stable-seconds) command meanwhile. Once serving, say
    what the ``survey`` folder holds outside the layout: walking a large archive takes
    seconds, which neither the first answer nor the index rebuild should wait for."""
    runner = web.AppRunner(
        make_app(settings), access_log_class=RequestLog, shutdown_timeout=STOP_GRACE_SECONDS
    )
    try:
        port = await _start(runner, settings)
    except BaseException:
        await runner.cleanup()  # workers and a DICOM listener already started stop again
        raise
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
            target=found_outside_layout, args=(survey, False, None), daemon=True
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


async def _start(runner: web.AppRunner, settings: Settings) -> int:
    """Open the archive, start the DICOM listener (if any) and listen for HTTP; the HTTP port
    (the one chosen when --port 0). A port in use or an archive that cannot be written is a
    one-line error, not a traceback."""
    try:
        await runner.setup()
    except CannotListen as exc:
        raise _cannot_listen("DICOM", exc.host, exc.port, "--dicom-port", exc.error) from None
    except OSError as exc:
        raise click.ClickException(f"the server cannot start: {exc}") from None
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        raise _cannot_listen("HTTP", settings.host, settings.port, "--port", exc) from None
    return site._server.sockets[0].getsockname()[1]


def _cannot_listen(
    service: str, host: str, port: int, option: str, exc: OSError
) -> click.ClickException:
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    if exc.errno == errno.EADDRINUSE:
        reason += f"; is another server using it? Choose another port with {option}"
    return click.ClickException(f"cannot listen for {service} on {host}:{port}: {reason}")


def _dimse_line(app: web.Application, settings: Settings) -> str:
    dimse = app.get(DIMSE)
    if dimse is None:
        return ""
    host = settings.dicom_host or settings.host
    return f" and DICOM as AE title {settings.ae_title} at {host}:{dimse.port}"


def found_outside_layout(archive: Path, do_import: bool, workers: int | None) -> None:
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
