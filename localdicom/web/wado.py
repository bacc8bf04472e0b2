"""WADO-RS: instances, metadata and bulk data (PS3.18 10.4).

Bytes are served as stored whenever the client accepts that (``transfer-syntax=*`` or the
stored syntax); anything else is transcoded in the worker pool. Metadata is assembled from
the sidecars; bulk values are positioned reads of the ranges recorded there.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from localdicom.catalog import Catalog, InstanceRecord
from localdicom.dicom.describing import bulk_by_parsing
from localdicom.dicom.frames import PIXEL_DATA_PATHS, bulk_unit, to_little_endian
from localdicom.dicom.header import ByteRange
from localdicom.dicom.pixels import transcode
from localdicom.dicom.syntaxes import OCTET_STREAM, instance_targets
from localdicom.dicom.uids import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
)
from localdicom.web import bulkdata, native, zipped
from localdicom.web.context import (
    catalog,
    find_instance,
    named_instances,
    pixel_work,
)
from localdicom.web.errors import not_found
from localdicom.web.frames import answer_frames
from localdicom.web.multipart import FilePart, once, send_files, stream_multipart
from localdicom.web.negotiation import (
    AS_STORED,
    DICOM,
    DICOM_JSON,
    DICOM_XML,
    ZIP,
    Offer,
    choose,
)
from localdicom.web.urls import bulk_data_uri, service_root

READ_CHUNK = 1 << 20
#: JSON by default; XML one instance per part (PS3.18 Table 10.4.4-1), or a single part for
#: the metadata of one instance (PS3.18 10.4.4).
METADATA_OFFERS = [
    Offer(DICOM_JSON, multipart=False),
    Offer("application/json", multipart=False),
    Offer(DICOM_XML),
]
INSTANCE_METADATA_OFFERS = [*METADATA_OFFERS, Offer(DICOM_XML, multipart=False)]


# instances -------------------------------------------------------------------------------


async def retrieve(request: web.Request) -> web.StreamResponse:
    """A study, series or instance (PS3.18 10.4.1.1.1)."""
    return await _retrieve(request, named_instances(request))


def _instance_offers(records: list[InstanceRecord]) -> list[Offer]:
    """Explicit VR Little Endian first (the default, PS3.18 8.7.3.5.2), each instance as
    stored, then every syntax all of them can be rewritten in; last, their bulk data as
    octet-stream (PS3.18 10.4.4), see :mod:`.bulkdata`; and a zip of the same (never the
    default), see :mod:`.zipped`."""
    common = None
    for syntax in {record.transfer_syntax for record in records}:
        targets = instance_targets(syntax)
        common = targets if common is None else [t for t in common if t in targets]
    syntaxes = [EXPLICIT_VR_LITTLE_ENDIAN] if EXPLICIT_VR_LITTLE_ENDIAN in common else []
    syntaxes += [AS_STORED, *common]
    offers = [Offer(DICOM, syntax) for syntax in dict.fromkeys(syntaxes)]
    if len(records) == 1:
        offers += [offer.single_part() for offer in offers]
    return offers + bulkdata.bulk_offers(records) + zipped.zip_offers(common)


async def _retrieve(request: web.Request, records: list[InstanceRecord]) -> web.StreamResponse:
    offer = choose(request, _instance_offers(records))
    if offer.media_type == OCTET_STREAM:
        return await bulkdata.answer(request, records, offer)
    if offer.media_type == ZIP:
        return await zipped.answer(request, records, offer)
    the_catalog = catalog(request)
    if not offer.multipart:
        return await _single_instance(request, records[0], offer)
    if all(_syntax_for(record, offer) == record.transfer_syntax for record in records):
        files = [
            FilePart(
                f"{DICOM}; transfer-syntax={record.transfer_syntax}",
                the_catalog.path_of(record),
                record.size,
            )
            for record in records
        ]
        return await send_files(request, DICOM, files)
    parts = (_instance_part(request, the_catalog, record, offer) for record in records)
    return await stream_multipart(request, DICOM, parts)


def _instance_part(
    request: web.Request, catalog: Catalog, record: InstanceRecord, offer: Offer
) -> tuple[str, AsyncIterator[bytes]]:
    syntax = _syntax_for(record, offer)
    content_type = f"{DICOM}; transfer-syntax={syntax}"
    path = catalog.path_of(record)
    if syntax == record.transfer_syntax:
        return content_type, _file_chunks(path)
    return content_type, _transcoded(request, path, syntax)


def _syntax_for(record: InstanceRecord, offer: Offer) -> str:
    return record.transfer_syntax if offer.transfer_syntax == AS_STORED else offer.transfer_syntax


async def _single_instance(
    request: web.Request, record: InstanceRecord, offer: Offer
) -> web.StreamResponse:
    syntax = _syntax_for(record, offer)
    content_type = f"{DICOM}; transfer-syntax={syntax}"
    path = catalog(request).path_of(record)
    if syntax == record.transfer_syntax:
        response = web.FileResponse(path, chunk_size=READ_CHUNK)
        response.headers["Content-Type"] = content_type
        return response
    data = await pixel_work(request, transcode, path, syntax)
    return web.Response(body=data, headers={"Content-Type": content_type})


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fp:
        while chunk := await asyncio.to_thread(fp.read, READ_CHUNK):
            yield chunk


async def _transcoded(request: web.Request, path: Path, syntax: str) -> AsyncIterator[bytes]:
    yield await pixel_work(request, transcode, path, syntax)


# metadata --------------------------------------------------------------------------------


async def metadata(request: web.Request) -> web.StreamResponse:
    """Of a study, series or instance; an instance's may also be a single XML document."""
    single = request.match_info.get("instance") is not None
    offers = INSTANCE_METADATA_OFFERS if single else METADATA_OFFERS
    return await _metadata(request, named_instances(request), offers)


async def _metadata(
    request: web.Request, records: list[InstanceRecord], offers: list[Offer] = METADATA_OFFERS
) -> web.StreamResponse:
    """DICOM JSON of every instance (PS3.18 10.4.1.2), or XML (see :mod:`.native`). Viewers
    ask for a series' metadata again and again (OHIF on every study open), so it carries an
    ETag (a repeat request with If-None-Match is a 304, RFC 9110 13.1.2) and is gzipped when
    the client accepts it."""
    offer = choose(request, offers)
    if offer.media_type == DICOM_XML:
        return await native.metadata(request, records, offer)
    root = service_root(request)
    the_catalog = catalog(request)
    etag = the_catalog.metadata_etag(records, root)
    headers = {"ETag": etag, "Vary": "Accept, Accept-Encoding"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
    body = await the_catalog.metadata(records, root, gzipped=gzipped)
    headers["Content-Type"] = offer.media_type
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


# bulk data -------------------------------------------------------------------------------


async def bulk_data(request: web.Request) -> web.StreamResponse:
    """The value of one element that metadata gave as a BulkDataURI (PS3.18 8.4.1.5):
    multipart/related octet-stream by default, plain octet-stream when asked, with Range
    requests honoured on the plain form (RFC 9110 14).

    application/octet-stream is uncompressed bulk data (PS3.18 8.7.3.3.1), in little endian
    unless the client asks for the bytes as stored (``transfer-syntax=*`` or the stored
    syntax): a big endian instance's values are swapped by VR. Compressed pixel data is
    answered as its frames are, one part per frame (PS3.18 8.7.3.3.2): decoded for
    octet-stream, or in a compressed media type with its transfer syntax.
    """
    record = find_instance(request)
    the_catalog = catalog(request)
    header = await the_catalog.header_of(record)
    path = request.match_info["path"]
    if path not in header.bulk:
        raise not_found(f"instance {record.sop} has no bulk data at {path!r}")
    stored = record.transfer_syntax
    if path in PIXEL_DATA_PATHS and stored not in NATIVE_TRANSFER_SYNTAXES:
        every_frame = list(range(1, header.frame_count() + 1))
        location = bulk_data_uri(service_root(request), record, path)
        return await answer_frames(request, record, header, every_frame, location)
    offer = choose(request, _bulk_offers(stored))
    file, span = the_catalog.path_of(record), header.bulk[path]
    if span is None:
        data = await asyncio.to_thread(bulk_by_parsing, file, path)
        span = (0, len(data))
        read = _memory_reader(data)
    else:
        read = _file_reader(the_catalog, record)
    content_type = OCTET_STREAM
    if stored == EXPLICIT_VR_BIG_ENDIAN:
        swapped = offer.transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN
        content_type += f"; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN if swapped else stored}"
        if swapped:
            unit = bulk_unit(header.metadata, path)
            data = to_little_endian(await asyncio.to_thread(read, *span), unit)
            span, read = (0, len(data)), _memory_reader(data)
    if offer.multipart:
        data = await asyncio.to_thread(read, *span)
        # the part says which bulk data it is: the BulkDataURI (PS3.18 10.4.3.3.5)
        location = bulk_data_uri(service_root(request), record, path)
        head = {"Content-Type": content_type, "Content-Location": location}
        return await stream_multipart(request, OCTET_STREAM, [(head, once(data))])
    return await _ranged(request, read, span, content_type)


def _bulk_offers(stored: str) -> list[Offer]:
    """Anything octet-stream for little endian instances (the bytes are the same in every
    little endian syntax); for big endian ones little endian (the default), or as stored."""
    if stored != EXPLICIT_VR_BIG_ENDIAN:
        offers = [Offer(OCTET_STREAM)]
    else:
        syntaxes = (EXPLICIT_VR_LITTLE_ENDIAN, AS_STORED, EXPLICIT_VR_BIG_ENDIAN)
        offers = [Offer(OCTET_STREAM, syntax) for syntax in syntaxes]
    return offers + [offer.single_part() for offer in offers]


async def _ranged(
    request: web.Request, read: Callable[[int, int], bytes], span: ByteRange, content_type: str
) -> web.Response:
    offset, length = span
    headers = {"Content-Type": content_type, "Accept-Ranges": "bytes"}
    wanted = byte_range(request.headers.get("Range", ""), length)
    if wanted is None:
        return web.Response(body=await asyncio.to_thread(read, offset, length), headers=headers)
    start, stop = wanted
    if start >= stop:
        headers["Content-Range"] = f"bytes */{length}"
        raise web.HTTPRequestRangeNotSatisfiable(headers=headers)
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{length}"
    body = await asyncio.to_thread(read, offset + start, stop - start)
    return web.Response(status=206, body=body, headers=headers)


def byte_range(header: str, length: int) -> tuple[int, int] | None:
    """The one byte range of a Range header (RFC 9110 14.1.2) as [start, stop) clipped to
    ``length``; an empty range when unsatisfiable; None to send everything (no header, or a
    form this server does not split a value into: several ranges, other units)."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if match is None or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:  # a suffix: the last N bytes; the last 0 bytes cannot be sent
        return (max(0, length - int(last)), length) if int(last) else (0, 0)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored, as RFC 9110 14.2 says
    stop = min(length, int(last) + 1) if last else length
    return (start, stop) if start < length else (0, 0)


def _file_reader(catalog: Catalog, record: InstanceRecord) -> Callable[[int, int], bytes]:
    return lambda offset, length: catalog.read_ranges(record, [(offset, length)])


def _memory_reader(data: bytes) -> Callable[[int, int], bytes]:
    return lambda offset, length: data[offset : offset + length]
