"""WADO-URI (PS3.18 chapter 9): one instance by query parameters.

``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..`` is what older viewers
and cornerstone's ``wadouri:`` image loader ask for. It is a thin front over what WADO-RS
already does: ``application/dicom`` is the stored file (or a transcoding of it), an image type
is the rendered frame, with the same rendering parameters (``windowCenter``/``windowWidth``,
``rows``/``columns``, ``imageQuality``) as ``/rendered``.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from localdicom.catalog import InstanceRecord
from localdicom.dicom.pixels import render
from localdicom.dicom.render import RENDERED_MEDIA_TYPES, RenderError, parse_render_params
from localdicom.dicom.syntaxes import instance_targets
from localdicom.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN, check_uid
from localdicom.web.context import catalog, pixel_work
from localdicom.web.errors import bad_request, not_acceptable, not_found
from localdicom.web.frames import check_frames
from localdicom.web.negotiation import AS_STORED, DICOM, Offer
from localdicom.web.wado import _single_instance

SUPPORTED = (DICOM, *RENDERED_MEDIA_TYPES)
#: Names viewers use for a supported type.
ALIASES = {"image/jpg": "image/jpeg"}
#: Parameters PS3.18 9.1.2 defines that this server cannot honour: refusing them is safer
#: than answering as if they were applied (an "anonymized" image that is not).
UNSUPPORTED = ("anonymize", "presentationUID", "presentationSeriesUID", "region")


async def wado(request: web.Request) -> web.StreamResponse:
    """The instance as DICOM, or a frame of it as an image."""
    query = request.query
    if query.get("requestType") != "WADO":
        raise bad_request("WADO-URI needs requestType=WADO (PS3.18 9.1.2.1.1)")
    for name in UNSUPPORTED:
        if name in query:
            raise bad_request(f"the WADO-URI parameter {name} is not supported by this server")
    record = _instance(request)
    media_type = _content_type(query.get("contentType"), record)
    if media_type == DICOM:
        return await _single_instance(request, record, _dicom_offer(query, record))
    return await _image(request, record, media_type)


def _instance(request: web.Request) -> InstanceRecord:
    """The instance objectUID names. PS3.18 9.1.2.1 requires studyUID and seriesUID too,
    but viewers and older tools often send objectUID alone (or with one of them): a SOP
    Instance UID is unique, so it is found through the index, as Orthanc does; a study or
    series UID that is given must be the instance's."""
    query = request.query
    if not query.get("objectUID"):
        raise bad_request("WADO-URI needs the parameter objectUID (PS3.18 9.1.2.1)")
    sop = check_uid(query["objectUID"], "SOPInstanceUID")
    record = catalog(request).instance_by_uid(sop)
    if record is None:
        raise not_found(f"instance {sop} is not stored")
    for name, keyword, level, stored in (
        ("studyUID", "StudyInstanceUID", "study", record.study),
        ("seriesUID", "SeriesInstanceUID", "series", record.series),
    ):
        given = query.get(name)
        if given and check_uid(given, keyword) != stored:
            raise not_found(f"instance {sop} is stored, but not in the {level} {given}")
    return record


def _content_type(value: str | None, record: InstanceRecord) -> str:
    """The first supported type of the contentType list; absent, image/jpeg for images and
    application/dicom otherwise (PS3.18 9.1.2.1.5 asks text/html for non-images, which this
    server does not produce). ``image/jpg``, which viewers send, is taken as image/jpeg,
    as Orthanc takes it."""
    if not value:
        return "image/jpeg" if record.frame_count else DICOM
    for candidate in value.split(","):
        media_type = candidate.split(";", 1)[0].strip().lower()
        media_type = ALIASES.get(media_type, media_type)
        if media_type in SUPPORTED:
            return media_type
    raise not_acceptable(
        f"contentType {value!r} is not available; use one of {', '.join(SUPPORTED)}"
    )


def _dicom_offer(query: Mapping[str, str], record: InstanceRecord) -> Offer:
    """Explicit VR Little Endian unless transferSyntax names another (``*``: as stored)."""
    syntax = query.get("transferSyntax") or EXPLICIT_VR_LITTLE_ENDIAN
    if syntax == "*" or syntax == record.transfer_syntax:
        return Offer(DICOM, AS_STORED, multipart=False)
    if syntax not in instance_targets(record.transfer_syntax):
        raise not_acceptable(
            f"the instance is stored as {record.transfer_syntax} and cannot be given as "
            f"{syntax}; transferSyntax=* gives it as stored"
        )
    return Offer(DICOM, syntax, multipart=False)


async def _image(request: web.Request, record: InstanceRecord, media_type: str) -> web.Response:
    number = _frame_number(request.query.get("frameNumber"))
    check_frames(record, [number])
    try:
        params = parse_render_params(request.query, media_type)
    except RenderError as exc:
        raise bad_request(str(exc)) from None
    path = catalog(request).path_of(record)
    (image,) = await pixel_work(request, render, path, [number], params)
    return web.Response(body=image, headers={"Content-Type": media_type})


def _frame_number(value: str | None) -> int:
    if value is None:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise bad_request(f"frameNumber must be a whole number from 1, not {value!r}")
    return int(value)
