"""The ``localdicom`` command."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from localdicom import __version__
from localdicom.app import Settings, make_app
from localdicom.archive import Archive


class RequestLog(AbstractAccessLogger):
    """One line per request: method, path, status, bytes sent, milliseconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %d %.1fms",
            request.method,
            request.path_qs,
            response.status,
            response.body_length,
            time * 1000,
        )


@click.group()
@click.version_option(__version__, prog_name="localdicom")
def main() -> None:
    """A folder on your laptop as a standard DICOMweb server."""


@main.command()
@click.argument("archive", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-h",
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. 127.0.0.1 keeps the archive private to this machine; "
    "0.0.0.0 exposes it to the network.",
)
@click.option("-p", "--port", default=8042, show_default=True, help="Port; 0 picks a free one.")
@click.option(
    "--samples",
    is_flag=True,
    help="Store the tutorial's three sample instances if they are not there yet.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Let STOW-RS replace a stored instance by a different one with the same SOP "
    "Instance UID (by default that is refused with 409).",
)
@click.option(
    "--fsync/--no-fsync",
    default=True,
    show_default=True,
    help="Flush every stored instance to disk before acknowledging it. --no-fsync is faster "
    "but a power cut may lose recently acknowledged instances.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes that decode, encode and render images  [default: one per CPU]",
)
def serve(
    archive: Path,
    host: str,
    port: int,
    samples: bool,
    overwrite: bool,
    fsync: bool,
    workers: int | None,
) -> None:
    """Serve ARCHIVE (created if absent) over DICOMweb.

    Example: localdicom serve ./archive --samples, then
    curl http://127.0.0.1:8042/v1/studies
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings(
        archive=archive.resolve(),
        host=host,
        port=port,
        samples=samples,
        overwrite=overwrite,
        fsync=fsync,
        workers=workers,
    )
    asyncio.run(_serve(settings))


async def _serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, announcing the server in the archive meanwhile so that
    ``localdicom import`` stores through it rather than behind its back."""
    runner = web.AppRunner(make_app(settings), access_log_class=RequestLog)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # the real one when --port 0
    url = f"http://{settings.host}:{port}"
    logging.getLogger("localdicom").info(
        "localdicom %s serving DICOMweb at %s/ (also /v1, /v2, /dicom-web)", __version__, url
    )
    archive = Archive(settings.archive)
    archive.announce_server(url)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopping.set)
    try:
        await stopping.wait()
    finally:
        archive.withdraw_server(url)
        await runner.cleanup()
