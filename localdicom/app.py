"""make_app(settings) -> the aiohttp application, and its one route table.

Every DICOMweb route is served identically at the root, under ``/v1`` and ``/v2`` (Azure's
versioned URLs) and under ``/dicom-web`` (Orthanc's), so clients configured for either work
unchanged. The prefix is part of the route pattern, and URLs the server writes keep it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from localdicom.archive import Archive, prepare_upload
from localdicom.catalog import Catalog, OpenReport
from localdicom.dimse.node import Node
from localdicom.dimse.server import DimseServer
from localdicom.samples import store_samples
from localdicom.settings import Settings
from localdicom.web import (
    bulkdata,
    changefeed,
    delete,
    frames,
    home,
    qido,
    rendered,
    security,
    stow,
    viewer,
    wado,
    wado_uri,
)
from localdicom.web.context import CATALOG, WORKERS
from localdicom.web.errors import error_middleware
from localdicom.web.security import is_loopback_address
from localdicom.workers import Workers

logger = logging.getLogger("localdicom")

MAX_REQUEST_LINE = 256 * 1024
TRASH_PURGE_SECONDS = 3600
PREFIXES = ("", "/{prefix:v1|v2|dicom-web}")
UID = r"[^/]+"
STUDY = f"/studies/{{study:{UID}}}"
SERIES = f"{STUDY}/series/{{series:{UID}}}"
INSTANCE = f"{SERIES}/instances/{{instance:{UID}}}"

ROUTES = [
    ("POST", "/studies", stow.store),
    ("POST", STUDY, stow.store),
    ("GET", "/studies", qido.search_studies),
    ("GET", "/series", qido.search_series),
    ("GET", "/instances", qido.search_instances),
    ("GET", f"{STUDY}/series", qido.search_series),
    ("GET", f"{STUDY}/instances", qido.search_instances),
    ("GET", f"{SERIES}/instances", qido.search_instances),
    ("GET", STUDY, wado.retrieve),
    ("GET", SERIES, wado.retrieve),
    ("GET", INSTANCE, wado.retrieve),
    ("GET", f"{STUDY}/metadata", wado.metadata),
    ("GET", f"{SERIES}/metadata", wado.metadata),
    ("GET", f"{INSTANCE}/metadata", wado.metadata),
    ("GET", f"{INSTANCE}/frames/{{frames}}", frames.frames),
    ("GET", f"{STUDY}/rendered", rendered.study_or_series_rendered),
    ("GET", f"{SERIES}/rendered", rendered.study_or_series_rendered),
    ("GET", f"{INSTANCE}/rendered", rendered.instance_rendered),
    ("GET", f"{INSTANCE}/frames/{{frames}}/rendered", rendered.frames_rendered),
    ("GET", f"{STUDY}/thumbnail", rendered.study_thumbnail),
    ("GET", f"{SERIES}/thumbnail", rendered.series_thumbnail),
    ("GET", f"{INSTANCE}/thumbnail", rendered.instance_thumbnail),
    ("GET", f"{INSTANCE}/frames/{{frames}}/thumbnail", rendered.frame_thumbnail),
    ("GET", f"{INSTANCE}/bulk/{{path:.+}}", wado.bulk_data),
    ("GET", f"{STUDY}/bulkdata", bulkdata.bulkdata),
    ("GET", f"{SERIES}/bulkdata", bulkdata.bulkdata),
    ("GET", f"{INSTANCE}/bulkdata", bulkdata.bulkdata),
    ("DELETE", STUDY, delete.delete_study),
    ("DELETE", SERIES, delete.delete_series),
    ("DELETE", INSTANCE, delete.delete_instance),
    ("POST", f"{STUDY}/reject/{{code}}", delete.reject),
    ("POST", f"{SERIES}/reject/{{code}}", delete.reject),
    ("POST", f"{INSTANCE}/reject/{{code}}", delete.reject),
    ("GET", "/wado", wado_uri.wado),
    ("GET", "/changefeed", changefeed.feed),
    ("GET", "/changefeed/latest", changefeed.latest),
]


DIMSE = web.AppKey("dimse", DimseServer)
SETTINGS = web.AppKey("settings", Settings)


def make_app(settings: Settings) -> web.Application:
    # Long QIDO UID lists must reach the handler, which says what is wrong with them.
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=0,
        handler_args={"max_line_size": MAX_REQUEST_LINE},
    )
    app[SETTINGS] = settings
    security.install(app, settings.host, settings.cors_origins, settings.token)
    app[stow.LIMITS] = stow.Limits(
        settings.max_request_bytes, settings.max_part_bytes, settings.upload_timeout
    )
    for prefix in PREFIXES:
        for method, path, handler in ROUTES:
            app.router.add_route(method, prefix + path, handler)
    home.add_routes(app, viewer.MOUNT if settings.viewer else "")
    if settings.viewer:
        viewer.add_routes(app, settings.viewer)
    app.cleanup_ctx.append(_start_workers)
    app.cleanup_ctx.append(_open_catalog)
    if settings.dicom_port is not None:
        app.cleanup_ctx.append(_start_dimse)
    return app


async def _open_catalog(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    workers = app[WORKERS]
    catalog = Catalog(
        Archive(settings.archive, fsync=settings.fsync),
        overwrite=settings.overwrite,
        index_attributes=settings.index_attributes,
        keep_removed=settings.trash,
        prepare=lambda path, held: workers.run_or_thread(
            prepare_upload, path, settings.fsync, shared=held
        ),
    )
    report = await catalog.open()
    studies, series, instances = catalog.counts()
    logger.info(
        "archive %s: %d studies, %d series, %d instances indexed in %.2f s, %d from the "
        "snapshot (%d sidecars regenerated, %d files skipped)",
        settings.archive,
        studies,
        series,
        instances,
        report.seconds,
        report.scan.from_snapshot,
        len(report.scan.regenerated),
        len(report.scan.skipped),
    )
    summary = _startup_summary(report)
    if summary:
        logger.warning("%s", summary)
    if settings.samples:
        outcomes = await store_samples(catalog)
        added = sum(not outcome.already_present for outcome in outcomes)
        logger.info("samples: %d stored, %d already present", added, len(outcomes) - added)
    app[CATALOG] = catalog
    await _purge_trash_once(catalog, settings.trash_days)
    purging = asyncio.create_task(_purge_trash(catalog, settings.trash_days))
    yield
    purging.cancel()
    await asyncio.to_thread(catalog.save_snapshot)


async def _purge_trash(catalog: Catalog, days: int) -> None:
    """Purge trash entries older than ``days`` every hour (and once at start)."""
    while True:
        await asyncio.sleep(TRASH_PURGE_SECONDS)
        await _purge_trash_once(catalog, days)


async def _purge_trash_once(catalog: Catalog, days: int) -> None:
    try:
        await catalog.empty_trash(days * 86400)
    except OSError as exc:
        logger.warning("trash: purging old entries failed: %s", exc)


async def _start_dimse(app: web.Application) -> AsyncIterator[None]:
    """The DICOM listener, once the index is ready; it stops before the catalog closes."""
    settings = app[SETTINGS]
    node = Node(
        catalog=app[CATALOG],
        workers=app[WORKERS],
        ae_title=settings.ae_title,
        peers={peer.ae_title: peer for peer in settings.dicom_peers},
    )
    host = settings.dicom_host or settings.host
    app[DIMSE] = DimseServer(node, restrict_callers=not is_loopback_address(host))
    await app[DIMSE].start(host, settings.dicom_port)
    yield
    await app[DIMSE].close()


async def _start_workers(app: web.Application) -> AsyncIterator[None]:
    app[WORKERS] = Workers(app[SETTINGS].workers)
    yield
    app[WORKERS].close()


def _startup_summary(report: OpenReport) -> str:
    """One message with what the startup check repaired and what it could not serve."""
    scan = report.scan
    if not (scan.regenerated or scan.removed_leftovers or scan.skipped):
        return ""
    lines = [
        f"startup check: {len(scan.regenerated)} sidecars regenerated, "
        f"{scan.removed_leftovers} leftovers of interrupted writes removed, "
        f"{len(scan.skipped)} files or folders not served (left as they are):"
    ]
    lines += [f"  skipped {path}: {reason}" for path, reason in scan.skipped]
    return "\n".join(lines)
