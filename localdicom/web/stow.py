"""STOW-RS: ``POST /studies`` and ``POST /studies/{study}`` (PS3.18 10.5).

Bodies: multipart/related with application/dicom parts (with or without ``type``, with or
without a boundary parameter, parts with or without Content-Disposition), or one
``application/dicom`` instance as the whole body (Azure's single-instance variant).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from localdicom.catalog import Catalog, FailureReason, Received, Stored, StoreFailed
from localdicom.dicom.header import instance_path
from localdicom.web.context import catalog, uid
from localdicom.web.errors import bad_request, unsupported_media_type
from localdicom.web.multipart import CHUNK, MalformedMultipart, MultipartReader, Part
from localdicom.web.negotiation import (
    DICOM,
    DICOM_JSON,
    MULTIPART_RELATED,
    Offer,
    choose,
    parse_media_ranges,
)
from localdicom.web.urls import service_root

#: Part media types taken as a DICOM instance: curl --form without ";type=" sends the second.
DICOM_PART_TYPES = ("", DICOM, "application/octet-stream")
RESPONSE_OFFERS = [Offer(DICOM_JSON, multipart=False), Offer("application/json", multipart=False)]

Outcome = Stored | StoreFailed


async def store(request: web.Request) -> web.Response:
    study = uid(request, "study")
    response_offer = choose(request, RESPONSE_OFFERS)
    media = parse_media_ranges(request.headers.get("Content-Type", ""))
    media_type = media[0].type if media else ""
    if media_type == DICOM:
        outcomes = [await _store_one(catalog(request), request.content.iter_chunked(CHUNK), study)]
    elif media_type == MULTIPART_RELATED:
        part_type = media[0].params.get("type", DICOM).lower()
        if part_type != DICOM:
            raise unsupported_media_type(
                f"STOW-RS parts of type {part_type!r} are not supported; send application/dicom"
            )
        reader = MultipartReader(request.content, media[0].params.get("boundary"))
        outcomes = await _store_parts(catalog(request), reader, study)
    else:
        raise unsupported_media_type(
            f"Content-Type {media_type or '(none)'!r} cannot be stored; use "
            'multipart/related; type="application/dicom" or application/dicom'
        )
    return _response(request, outcomes, response_offer.media_type)


async def _store_one(catalog: Catalog, chunks: AsyncIterator[bytes], study: str | None) -> Outcome:
    try:
        return await catalog.store(chunks, study)
    except StoreFailed as failure:
        return failure


async def _store_parts(
    catalog: Catalog, reader: MultipartReader, study: str | None
) -> list[Outcome]:
    """Receive every part first and commit only once the whole body proved well formed, so a
    broken body (400) stores nothing and replaces nothing."""
    received: list[Received | StoreFailed] = []
    try:
        async for part in reader:
            received.append(await _receive_part(catalog, part, study))
    except MalformedMultipart as exc:
        for item in received:
            if isinstance(item, Received):
                catalog.discard(item)
        raise bad_request(f"malformed multipart/related body, nothing stored: {exc}") from None
    if not received:
        raise bad_request("the multipart/related body has no parts, nothing to store")
    return [await _commit(catalog, item) for item in received]


async def _receive_part(catalog: Catalog, part: Part, study: str | None) -> Received | StoreFailed:
    media = parse_media_ranges(part.content_type)
    media_type = media[0].type if media else ""
    if media_type not in DICOM_PART_TYPES:
        return StoreFailed(
            FailureReason.CANNOT_UNDERSTAND,
            f"a part of type {media_type!r} was skipped; parts must be application/dicom",
        )
    try:
        return await catalog.receive(part.body, study)
    except StoreFailed as failure:
        return failure


async def _commit(catalog: Catalog, item: Received | StoreFailed) -> Outcome:
    if isinstance(item, StoreFailed):
        return item
    try:
        return await catalog.commit(item)
    except StoreFailed as failure:
        return failure


def _response(request: web.Request, outcomes: list[Outcome], media_type: str) -> web.Response:
    """The Store Instances Response Module (PS3.18 10.5.3) and its status code."""
    root = service_root(request)
    stored = [o for o in outcomes if isinstance(o, Stored)]
    failed = [o for o in outcomes if isinstance(o, StoreFailed)]
    body: dict[str, Any] = {}
    studies = {o.header.study_uid for o in stored}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{studies.pop()}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_failed_item(f) for f in failed]}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_referenced_item(root, o) for o in stored]}
    status = 200 if not failed else 409 if not stored else 202
    headers = {"Warning": ", ".join(_warning(f) for f in failed)} if failed else {}
    headers["Content-Type"] = media_type  # no charset parameter: JSON is UTF-8 (RFC 8259)
    return web.Response(body=json.dumps(body).encode(), status=status, headers=headers)


def _referenced_item(root: str, outcome: Stored) -> dict[str, Any]:
    header = outcome.header
    url = f"{root}/{instance_path(header.study_uid, header.series_uid, header.sop_uid)}"
    return {
        "00081150": {"vr": "UI", "Value": [header.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [header.sop_uid]},
        "00081190": {"vr": "UR", "Value": [url]},
    }


def _failed_item(failure: StoreFailed) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if failure.header is not None:
        item["00081150"] = {"vr": "UI", "Value": [failure.header.sop_class_uid]}
        item["00081155"] = {"vr": "UI", "Value": [failure.header.sop_uid]}
    item["00081197"] = {"vr": "US", "Value": [int(failure.reason)]}
    return item


def _warning(failure: StoreFailed) -> str:
    """A Warning header value (PS3.18 8.10.4) that tells a person why an instance failed."""
    text = str(failure).replace('"', "'").encode("latin-1", "replace").decode("latin-1")
    return f'299 localdicom "{text}"'
