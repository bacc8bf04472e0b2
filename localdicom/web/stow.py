"""STOW-RS: ``POST /studies`` and ``POST /studies/{study}`` (PS3.18 10.5).

Bodies: multipart/related with application/dicom parts (with or without ``type``, with or
without a boundary parameter, parts with or without Content-Disposition), or one
``application/dicom`` instance as the whole body (Azure's single-instance variant).

Bodies are streamed to disk under :class:`Limits`: a body or part over its size limit is a
413, a client that stops sending mid-body is a 408, a client that disconnects is a 400; in
each case nothing of the request is stored and its partial uploads are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiohttp import web

from localdicom.catalog import Catalog, FailureReason, Spooled, Stored, StoreFailed, Upload
from localdicom.dicom.header import instance_path
from localdicom.web import native
from localdicom.web.context import catalog, uid
from localdicom.web.errors import bad_request, unsupported_media_type
from localdicom.web.multipart import (
    Body,
    BodyTooLarge,
    MalformedMultipart,
    MultipartReader,
    Part,
    UploadStalled,
)
from localdicom.web.negotiation import (
    DICOM,
    DICOM_JSON,
    DICOM_XML,
    MULTIPART_RELATED,
    MediaRange,
    Offer,
    choose,
    parse_media_ranges,
)
from localdicom.web.urls import service_root

logger = logging.getLogger(__name__)

#: Part media types taken as a DICOM instance: curl --form without ";type=" sends the second.
DICOM_PART_TYPES = ("", DICOM, "application/octet-stream")
#: The Store Instances Response in JSON (the default) or XML (PS3.18 10.5.3).
RESPONSE_OFFERS = [
    Offer(DICOM_JSON, multipart=False),
    Offer("application/json", multipart=False),
    Offer(DICOM_XML, multipart=False),
]

Outcome = Stored | StoreFailed
T = TypeVar("T")
#: Parts of one request checked at a time while the rest stream in: enough to keep the worker
#: processes busy, few enough that one large request does not queue ahead of everyone else.
CHECKS_AHEAD = 4


@dataclass(frozen=True)
class Limits:
    """What a STOW-RS request may send (None: no limit); the app takes them from its Settings,
    where their defaults are."""

    #: Bytes of a whole request body.
    max_request_bytes: int | None
    #: Bytes of one instance: a multipart part, or a single application/dicom body.
    max_part_bytes: int | None
    #: Seconds a client may send nothing in the middle of a body.
    upload_timeout: float | None


LIMITS = web.AppKey("stow_limits", Limits)


async def store(request: web.Request) -> web.StreamResponse:
    study = uid(request, "study")
    response_offer, unmet = _response_offer(request)
    limits = request.app[LIMITS]
    _check_declared_length(request, limits)
    body = Body(
        request.content, max_bytes=limits.max_request_bytes, idle_timeout=limits.upload_timeout
    )
    media = parse_media_ranges(request.headers.get("Content-Type", ""))
    media_type = media[0].type if media else ""
    try:
        if media_type == DICOM:
            chunks = body.chunks(limits.max_part_bytes)
            outcomes = [await _outcome(catalog(request).store(chunks, study))]
        elif media_type == MULTIPART_RELATED:
            part_type = media[0].params.get("type", DICOM).lower()
            if part_type != DICOM:
                raise unsupported_media_type(
                    f"STOW-RS parts of type {part_type!r} are not supported; send application/dicom"
                )
            boundary = _boundary(media[0], request.headers.get("Content-Type", ""))
            reader = MultipartReader(body, boundary, max_part_bytes=limits.max_part_bytes)
            outcomes = await _store_parts(catalog(request), reader, study)
        else:
            raise unsupported_media_type(
                f"Content-Type {media_type or '(none)'!r} cannot be stored; use "
                'multipart/related; type="application/dicom" or application/dicom'
            )
    except BodyTooLarge as exc:
        raise _too_large(f"{exc}; nothing of the request was stored") from None
    except UploadStalled as exc:
        logger.warning("%s %s: %s", request.method, request.path, exc)
        return await _closing(request, 408, f"{exc}; nothing of the request was stored")
    except ConnectionResetError:
        logger.warning("%s %s: the client disconnected mid-body", request.method, request.path)
        return await _closing(
            request, 400, "the body ended before it was complete; nothing was stored"
        )
    return _response(request, outcomes, response_offer.media_type, unmet)


def _response_offer(request: web.Request) -> tuple[Offer, str | None]:
    """The representation of the answer, and why it is not the one asked for, if it is not.

    An Accept the server cannot honour does not refuse the upload: a client that asked for
    another representation of the answer still wants its instances stored (a 406 once they
    are stored would hide that they are; before, that nothing was). They are stored, and the
    answer is JSON, with the reason in a Warning header (PS3.18 8.10.4)."""
    try:
        return choose(request, RESPONSE_OFFERS), None
    except web.HTTPNotAcceptable as exc:
        reason = (exc.text or "").strip()
        return RESPONSE_OFFERS[0], f"{reason}; the answer is in {DICOM_JSON}"


def _check_declared_length(request: web.Request, limits: Limits) -> None:
    """Refuse at once a body whose Content-Length is over a limit, before reading it."""
    length = request.content_length
    if length is None:
        return
    if limits.max_request_bytes is not None and length > limits.max_request_bytes:
        raise _too_large(
            f"the request body ({length} bytes) is larger than {limits.max_request_bytes} "
            "bytes; nothing was stored"
        )
    single = request.headers.get("Content-Type", "").split(";")[0].strip().lower() == DICOM
    if single and limits.max_part_bytes is not None and length > limits.max_part_bytes:
        raise _too_large(
            f"the instance ({length} bytes) is larger than {limits.max_part_bytes} bytes; "
            "nothing was stored"
        )


def _boundary(media: MediaRange, content_type: str) -> str | None:
    """The boundary parameter; given twice it is ambiguous, and the request a 400."""
    names = [name.lower() for name in _PARAMETER_NAME.findall(content_type)]
    if names.count("boundary") > 1:
        raise bad_request(
            "malformed multipart/related body, nothing stored: the Content-Type gives the "
            "boundary parameter more than once"
        )
    return media.params.get("boundary")


#: The name of each parameter of a header value, skipping quoted strings.
_PARAMETER_NAME = re.compile(r';\s*([^=;\s"]+)\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^;"]*)')


def _too_large(message: str) -> web.HTTPException:
    return web.HTTPRequestEntityTooLarge(
        max_size=0, actual_size=0, text=message + "\n", content_type="text/plain"
    )


async def _closing(request: web.Request, status: int, message: str) -> web.StreamResponse:
    """An error answer, then the connection closed at once: the body was not read to its end,
    and a stalled client must not hold the connection while aiohttp drains it."""
    response = web.Response(status=status, text=message + "\n", content_type="text/plain")
    response.force_close()
    with contextlib.suppress(ConnectionError):  # a client that left reads no answer
        await response.prepare(request)
        await response.write_eof()
    if request.protocol is not None:
        request.protocol.force_close()
    return response


async def _store_parts(
    catalog: Catalog, reader: MultipartReader, study: str | None
) -> list[Outcome]:
    """Receive every part first and commit only once the whole body proved well formed, so a
    broken body (400) stores nothing and replaces nothing.

    A part is checked (parsed, hashed, flushed) while the next ones stream in, up to
    :data:`CHECKS_AHEAD` at a time, from when the next one begins; the only part of a body
    is stored at once when the body ends (:meth:`Catalog.store_whole`)."""
    checks: list[asyncio.Task[Upload | StoreFailed]] = []
    last: Spooled | StoreFailed | None = None  # received, not yet checked
    try:
        async for part in reader:
            if last is not None:
                checks.append(asyncio.ensure_future(_onward(catalog.check, last, study)))
            last = None  # its check is begun: a failure below must not discard it again
            last = await _receive_part(catalog, part)
            running = [check for check in checks if not check.done()]
            if len(running) >= CHECKS_AHEAD:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        if last is None:
            raise bad_request("the multipart/related body has no parts, nothing to store")
        if not checks:
            return [await _onward(catalog.store_whole, last, study)]
        checks.append(asyncio.ensure_future(_onward(catalog.check, last, study)))
        last = None
        received = await asyncio.gather(*checks)
    except BaseException as exc:  # a broken body, a limit, a stall, a disconnect
        if isinstance(last, Spooled):
            catalog.discard(last)
        for item in await asyncio.gather(*checks, return_exceptions=True):
            if isinstance(item, Upload):
                catalog.discard(item)
        if isinstance(exc, MalformedMultipart):
            raise bad_request(f"malformed multipart/related body, nothing stored: {exc}") from None
        raise
    # committed together: one folder flush for the whole request (Catalog.commit)
    return list(await asyncio.gather(*(_commit(catalog, item) for item in received)))


async def _receive_part(catalog: Catalog, part: Part) -> Spooled | StoreFailed:
    """Stream a part to the upload area; what is left is its check."""
    media_type = _part_media_type(part.content_type)
    if media_type not in DICOM_PART_TYPES:
        return StoreFailed(
            FailureReason.CANNOT_UNDERSTAND,
            f"a part of type {media_type!r} was skipped; parts must be application/dicom",
        )
    try:
        return await catalog.spool(part.body)
    except StoreFailed as failure:
        return failure


async def _onward(
    step: Callable[[Spooled, str | None], Awaitable[T]],
    received: Spooled | StoreFailed,
    study: str | None,
) -> T | StoreFailed:
    """A received part's next step (its check, or its whole store); a part refused as it
    arrived stays refused."""
    if isinstance(received, StoreFailed):
        return received
    return await _outcome(step(received, study))


async def _outcome(step: Awaitable[T]) -> T | StoreFailed:
    """The result of one instance's step, or the reason it failed (the others go on)."""
    try:
        return await step
    except StoreFailed as failure:
        return failure


@functools.lru_cache(maxsize=64)
def _part_media_type(content_type: str) -> str:
    """Remembered: every part of every upload names the same one or two media types."""
    media = parse_media_ranges(content_type)
    return media[0].type if media else ""


async def _commit(catalog: Catalog, item: Upload | StoreFailed) -> Outcome:
    return item if isinstance(item, StoreFailed) else await _outcome(catalog.commit(item))


def _response(
    request: web.Request, outcomes: list[Outcome], media_type: str, unmet: str | None
) -> web.Response:
    """The Store Instances Response Module (PS3.18 10.5.3) and its status code; ``unmet``
    says why the answer is not in the representation the client asked for."""
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
    if status == 409 and all(f.reason == FailureReason.OUT_OF_RESOURCES for f in failed):
        status = 507  # Insufficient Storage: the server's failure, not the client's
    warnings = [_warning(str(f)) for f in failed] + ([_warning(unmet)] if unmet else [])
    headers = {"Warning": ", ".join(warnings)} if warnings else {}
    if media_type == DICOM_XML:
        return native.store_response(body, status, headers)
    headers["Content-Type"] = media_type  # no charset parameter: JSON is UTF-8 (RFC 8259)
    return web.Response(body=orjson.dumps(body), status=status, headers=headers)


def _referenced_item(root: str, outcome: Stored) -> dict[str, Any]:
    header = outcome.header
    url = f"{root}/{instance_path(header.study_uid, header.series_uid, header.sop_uid)}"
    return {
        "00081150": {"vr": "UI", "Value": [header.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [header.sop_uid]},
        "00081190": {"vr": "UR", "Value": [url]},
    }


def _failed_item(failure: StoreFailed) -> dict[str, Any]:
    """A Failed SOP Sequence item: the instance's UIDs whenever the refused file gives them,
    even when it could not be parsed whole (PS3.18 Table I.1-1), and the reason."""
    item: dict[str, Any] = {}
    if failure.sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [failure.sop_class_uid]}
    if failure.sop_uid:
        item["00081155"] = {"vr": "UI", "Value": [failure.sop_uid]}
    item["00081197"] = {"vr": "US", "Value": [int(failure.reason)]}
    return item


def _warning(reason: str) -> str:
    """A Warning header value (PS3.18 8.10.4) that tells a person why an instance failed, or
    why the answer is not what was asked."""
    text = reason.replace('"', "'").encode("latin-1", "replace").decode("latin-1")
    return f'299 localdicom "{text}"'
