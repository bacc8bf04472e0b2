"""DELETE of a study, series or instance (not in PS3.18; Azure's and Orthanc's extension)."""

from __future__ import annotations

from aiohttp import web

from localdicom.web.context import catalog, uid
from localdicom.web.errors import not_found


async def delete_study(request: web.Request) -> web.Response:
    study = uid(request, "study")
    if not await catalog(request).delete_study(study):
        raise not_found(f"study {study} is not in the archive")
    return web.Response(status=204)


async def delete_series(request: web.Request) -> web.Response:
    study, series = uid(request, "study"), uid(request, "series")
    if not await catalog(request).delete_series(study, series):
        raise not_found(f"series {series} of study {study} is not in the archive")
    return web.Response(status=204)


async def delete_instance(request: web.Request) -> web.Response:
    study, series, sop = uid(request, "study"), uid(request, "series"), uid(request, "instance")
    if not await catalog(request).delete_instance(study, series, sop):
        raise not_found(f"instance {sop} of series {series}, study {study} is not in the archive")
    return web.Response(status=204)
