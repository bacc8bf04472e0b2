"""DELETE of a study, series or instance (not in PS3.18; Azure's and Orthanc's extension),
and dcm4chee's reject route (``POST .../reject/{code}^{designator}``), which OHIF calls to
delete a report or a segmentation when its data source ``supportsReject``. Both move the
instances to the archive's trash (unless the server runs with ``--no-trash``), recording
the request, and for a rejection its code."""

from __future__ import annotations

from aiohttp import web

from localdicom.catalog import RemovalFailed, Why
from localdicom.dicom.rejection import UnknownRejection, rejection_code
from localdicom.web.context import catalog, named_instances, uid
from localdicom.web.errors import bad_request, not_found


async def delete_study(request: web.Request) -> web.Response:
    if not await _remove(request, _why(request, "delete")):
        raise not_found(f"study {uid(request, 'study')} is not in the archive")
    return web.Response(status=204)


async def delete_series(request: web.Request) -> web.Response:
    if not await _remove(request, _why(request, "delete")):
        study, series = uid(request, "study"), uid(request, "series")
        raise not_found(f"series {series} of study {study} is not in the archive")
    return web.Response(status=204)


async def delete_instance(request: web.Request) -> web.Response:
    if not await _remove(request, _why(request, "delete")):
        study, series, sop = (uid(request, name) for name in ("study", "series", "instance"))
        raise not_found(f"instance {sop} of series {series}, study {study} is not in the archive")
    return web.Response(status=204)


async def reject(request: web.Request) -> web.Response:
    """Reject the study, series or instance of the URL for a reason of PS3.16 CID 7011:
    200 with how many instances went to the trash; 400 for another code, 404 for an
    object that is not stored."""
    try:
        code = rejection_code(request.match_info["code"])
    except UnknownRejection as exc:
        raise bad_request(str(exc)) from None
    count = len(named_instances(request))  # 404 when absent
    if not await _remove(request, _why(request, "reject", code)):  # deleted meanwhile
        raise not_found(f"{request.path.split('/reject/')[0]} is not in the archive")
    return web.json_response({"rejected": count, "code": f"{code['value']}^{code['designator']}"})


async def _remove(request: web.Request, why: Why) -> bool:
    """Remove what the URL names; False if it is not stored. 507 (Insufficient Storage, the
    server's failure, as for STOW-RS) when it could not be moved to the trash."""
    study, series = uid(request, "study"), request.match_info.get("series")
    instance = request.match_info.get("instance")
    door = catalog(request)
    try:
        if instance is not None:
            sop = uid(request, "instance")
            return await door.delete_instance(study, uid(request, "series"), sop, why)
        if series is not None:
            return await door.delete_series(study, uid(request, "series"), why)
        return await door.delete_study(study, why)
    except RemovalFailed as exc:
        raise web.HTTPInsufficientStorage(text=f"{exc}\n", content_type="text/plain") from None


def _why(request: web.Request, reason: str, code: dict[str, str] | None = None) -> Why:
    return Why(reason, f"{request.method} {request.path} from {request.remote}", code)
