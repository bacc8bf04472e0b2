"""WADO-RS: instances, metadata, frames and bulk data (PS3.18 10.4).

Bytes are served as stored whenever the client accepts that (``transfer-syntax=*`` or the
stored syntax); frames and bulk values are positioned reads of the ranges in the sidecar.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from localdicom.catalog import Catalog
from localdicom.dicom.frames import (
    FrameListError,
    frames_by_parsing,
    parse_frame_list,
    read_big_endian_frame,
    swap_unit,
)
from localdicom.dicom.header import Header, bulk_by_parsing
from localdicom.dicom.transcode import can_transcode, transcode
from localdicom.dicom.uids import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
)
from localdicom.index import InstanceRecord
from localdicom.web.context import catalog, find_instance, find_series, find_study
from localdicom.web.errors import bad_request, not_found
from localdicom.web.multipart import MultipartWriter
from localdicom.web.negotiation import (
    AS_STORED,
    DICOM,
    DICOM_JSON,
    OCTET_STREAM,
    Offer,
    choose,
)
from localdicom.web.urls import service_root

READ_CHUNK = 1 << 20
METADATA_OFFERS = [Offer(DICOM_JSON, multipart=False), Offer("application/json", multipart=False)]


# instances -------------------------------------------------------------------------------


async def retrieve_study(request: web.Request) -> web.StreamResponse:
    study = find_study(request)
    return await _retrieve(request, catalog(request).index.instances_of(study.uid))


async def retrieve_series(request: web.Request) -> web.StreamResponse:
    series = find_series(request)
    return await _retrieve(request, catalog(request).index.instances_of(series.study, series.uid))


async def retrieve_instance(request: web.Request) -> web.StreamResponse:
    return await _retrieve(request, [find_instance(request)])


def _instance_offers(records: list[InstanceRecord]) -> list[Offer]:
    """Explicit VR Little Endian first (the default), then as stored (PS3.18 8.7.3.5)."""
    stored = {record.transfer_syntax for record in records}
    syntaxes = [AS_STORED]
    if all(can_transcode(syntax, EXPLICIT_VR_LITTLE_ENDIAN) for syntax in stored):
        syntaxes.insert(0, EXPLICIT_VR_LITTLE_ENDIAN)
    if len(stored) == 1 and (only := next(iter(stored))) not in syntaxes:
        syntaxes.append(only)
    offers = [Offer(DICOM, syntax) for syntax in syntaxes]
    if len(records) == 1:
        offers += [Offer(DICOM, syntax, multipart=False) for syntax in syntaxes]
    return offers


async def _retrieve(request: web.Request, records: list[InstanceRecord]) -> web.StreamResponse:
    offer = choose(request, _instance_offers(records), EXPLICIT_VR_LITTLE_ENDIAN)
    the_catalog = catalog(request)
    if not offer.multipart:
        return await _single_instance(request, the_catalog, records[0], offer)
    parts = (_instance_part(the_catalog, record, offer) for record in records)
    return await _multipart_response(request, DICOM, parts)


def _instance_part(
    catalog: Catalog, record: InstanceRecord, offer: Offer
) -> tuple[str, AsyncIterator[bytes]]:
    syntax = _syntax_for(record, offer)
    return f"{DICOM}; transfer-syntax={syntax}", _instance_bytes(catalog, record, syntax)


def _syntax_for(record: InstanceRecord, offer: Offer) -> str:
    return record.transfer_syntax if offer.transfer_syntax == AS_STORED else offer.transfer_syntax


async def _single_instance(
    request: web.Request, catalog: Catalog, record: InstanceRecord, offer: Offer
) -> web.StreamResponse:
    syntax = _syntax_for(record, offer)
    content_type = f"{DICOM}; transfer-syntax={syntax}"
    if syntax == record.transfer_syntax:
        response = web.FileResponse(catalog.path_of(record), chunk_size=READ_CHUNK)
        response.headers["Content-Type"] = content_type
        return response
    data = await asyncio.to_thread(transcode, catalog.path_of(record), syntax)
    return web.Response(body=data, headers={"Content-Type": content_type})


async def _instance_bytes(
    catalog: Catalog, record: InstanceRecord, syntax: str
) -> AsyncIterator[bytes]:
    path = catalog.path_of(record)
    if syntax != record.transfer_syntax:
        yield await asyncio.to_thread(transcode, path, syntax)
        return
    with path.open("rb") as fp:
        while chunk := await asyncio.to_thread(fp.read, READ_CHUNK):
            yield chunk


# metadata --------------------------------------------------------------------------------


async def study_metadata(request: web.Request) -> web.StreamResponse:
    study = find_study(request)
    return await _metadata(request, catalog(request).index.instances_of(study.uid))


async def series_metadata(request: web.Request) -> web.StreamResponse:
    series = find_series(request)
    return await _metadata(request, catalog(request).index.instances_of(series.study, series.uid))


async def instance_metadata(request: web.Request) -> web.StreamResponse:
    return await _metadata(request, [find_instance(request)])


async def _metadata(request: web.Request, records: list[InstanceRecord]) -> web.StreamResponse:
    """DICOM JSON of every instance (PS3.18 10.4.1.2), assembled from the sidecars.

    The ETag names the stored content and the URL root, so a viewer's repeat request for an
    unchanged series is a 304 without reading a sidecar.
    """
    offer = choose(request, METADATA_OFFERS, None)
    root = service_root(request)
    tag = hashlib.sha256("".join([root] + [r.digest for r in records]).encode()).hexdigest()
    etag = f'"{tag[:32]}"'
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers={"ETag": etag})
    body = await asyncio.to_thread(_metadata_document, catalog(request), records, root)
    response = web.Response(
        body=body, headers={"Content-Type": f"{offer.media_type}", "ETag": etag}
    )
    response.enable_compression()
    return response


def _metadata_document(catalog: Catalog, records: list[InstanceRecord], root: str) -> bytes:
    documents = [
        catalog.archive.read_sidecar(catalog.path_of(record)).header.metadata for record in records
    ]
    text = json.dumps(documents, ensure_ascii=False, separators=(",", ":"))
    return text.replace('"BulkDataURI":"', f'"BulkDataURI":"{root}/').encode("utf-8")


# frames ----------------------------------------------------------------------------------


async def frames(request: web.Request) -> web.StreamResponse:
    """Frames as ``application/octet-stream`` parts, each labelled with its transfer syntax.

    Cornerstone (OHIF) reads the syntax from each part's Content-Type; without it compressed
    bytes are taken for raw pixels (CLIENTS.md 2b, step 4).
    """
    record = find_instance(request)
    try:
        numbers = parse_frame_list(request.match_info["frames"])
    except FrameListError as exc:
        raise bad_request(str(exc)) from None
    the_catalog = catalog(request)
    header = await the_catalog.header_of(record)
    stored = record.transfer_syntax
    native = stored in NATIVE_TRANSFER_SYNTAXES
    label = EXPLICIT_VR_LITTLE_ENDIAN if native else stored
    syntaxes = [label, AS_STORED] if native else [AS_STORED, stored]
    offers = [Offer(OCTET_STREAM, syntax) for syntax in syntaxes]
    if len(numbers) == 1:
        offers += [Offer(OCTET_STREAM, syntax, multipart=False) for syntax in syntaxes]
    offer = choose(request, offers, EXPLICIT_VR_LITTLE_ENDIAN)
    data = await asyncio.to_thread(_read_frames, the_catalog, record, header, numbers)
    content_type = f"{OCTET_STREAM}; transfer-syntax={label}"
    if not offer.multipart:
        return web.Response(body=data[0], headers={"Content-Type": content_type})
    return await _multipart_response(
        request, OCTET_STREAM, ((content_type, _once(frame)) for frame in data)
    )


def _read_frames(
    catalog: Catalog, record: InstanceRecord, header: Header, numbers: list[int]
) -> list[bytes]:
    if "7FE00010" not in header.metadata:
        raise not_found(f"instance {record.sop} has no pixel data, so no frames")
    count = _frame_count(header)
    missing = [n for n in numbers if n > count]
    if missing:
        raise not_found(
            f"frame {missing[0]} does not exist: instance {record.sop} has {count} frame(s)"
        )
    path = catalog.path_of(record)
    if header.frames is None:
        return frames_by_parsing(path, numbers)

    def read(offset: int, length: int) -> bytes:
        return catalog.archive.read_ranges(path, [(offset, length)])

    if record.transfer_syntax == EXPLICIT_VR_BIG_ENDIAN:
        bits = int(header.metadata.get("00280100", {}).get("Value", [16])[0])
        unit = swap_unit(bits, header.metadata["7FE00010"]["vr"])
        start = header.frames[0][0][0]
        return [read_big_endian_frame(read, start, header.frames[n - 1][0], unit) for n in numbers]
    return [catalog.archive.read_ranges(path, header.frames[n - 1]) for n in numbers]


def _frame_count(header: Header) -> int:
    if header.frames is not None:
        return len(header.frames)
    value = header.metadata.get("00280008", {}).get("Value", [1])[0]
    return int(value)


async def _multipart_response(
    request: web.Request,
    part_type: str,
    parts: Iterable[tuple[str, AsyncIterator[bytes]]],
) -> web.StreamResponse:
    """Stream ``(Content-Type, chunks)`` parts as one multipart/related response."""
    writer = MultipartWriter(part_type)
    response = web.StreamResponse(headers={"Content-Type": writer.content_type})
    await response.prepare(request)
    for content_type, chunks in parts:
        await writer.write_part(response, content_type, chunks)
    await writer.finish(response)
    await response.write_eof()
    return response


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


# bulk data -------------------------------------------------------------------------------


async def bulk_data(request: web.Request) -> web.StreamResponse:
    """The value of one element that metadata gave as a BulkDataURI (PS3.18 8.4.1.5)."""
    record = find_instance(request)
    the_catalog = catalog(request)
    header = await the_catalog.header_of(record)
    path = request.match_info["path"]
    if path not in header.bulk:
        raise not_found(f"instance {record.sop} has no bulk data at {path!r}")
    offers = [Offer(OCTET_STREAM), Offer(OCTET_STREAM, multipart=False)]
    offer = choose(request, offers, None)
    file = the_catalog.path_of(record)
    span = header.bulk[path]
    if span is None:
        data = await asyncio.to_thread(bulk_by_parsing, file, path)
    else:
        data = await asyncio.to_thread(the_catalog.archive.read_ranges, file, [span])
    if not offer.multipart:
        return web.Response(body=data, headers={"Content-Type": OCTET_STREAM})
    return await _multipart_response(request, OCTET_STREAM, [(OCTET_STREAM, _once(data))])
