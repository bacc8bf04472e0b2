"""The bulk data of whole instances: the Study, Series and Instance Bulkdata resources
(``.../bulkdata``, PS3.18 Table 10.3-2), and the study, series and instance resources asked as
``multipart/related; type="application/octet-stream"``, which PS3.18 10.4.4 makes the same
thing ("retained for historical reasons").

The payload holds every bulk data element of every instance, one part each, in instance order
and tag order: exactly the elements metadata gives as BulkDataURIs, each part's
Content-Location that BulkDataURI (PS3.18 10.4.3.3.5), so a client matches the parts to the
metadata it has. ``application/octet-stream`` is uncompressed little endian bulk data (PS3.18
8.7.3.3.1): encapsulated Pixel Data is decoded, in the worker processes, to the uncompressed
value (its frames one after the other); the values of an instance stored in big endian are
swapped by VR, as its BulkDataURIs give them; every other value is its bytes as stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping

from aiohttp import web

from localdicom.catalog import Catalog, InstanceRecord
from localdicom.dicom.describing import bulk_by_parsing
from localdicom.dicom.frames import bulk_unit, to_little_endian
from localdicom.dicom.header import Header
from localdicom.dicom.pixels import encode_frames
from localdicom.dicom.syntaxes import OCTET_STREAM, can_decode
from localdicom.dicom.uids import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
)
from localdicom.web.context import catalog, named_instances, pixel_work
from localdicom.web.errors import not_acceptable
from localdicom.web.multipart import stream_multipart
from localdicom.web.negotiation import AS_STORED, Offer, choose
from localdicom.web.urls import bulk_data_uri, service_root

#: The Pixel Data a compressed transfer syntax encapsulates (PS3.5 A.4): the top-level one.
ENCAPSULATED = "7FE00010"
PART_TYPE = f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"


async def bulkdata(request: web.Request) -> web.StreamResponse:
    """Of a study, series or instance."""
    return await _bulkdata(request, named_instances(request))


async def _bulkdata(request: web.Request, records: list[InstanceRecord]) -> web.StreamResponse:
    offers = bulk_offers(records)
    if not offers:
        raise not_acceptable(_why_not(records))
    return await answer(request, records, choose(request, offers))


def bulk_offers(records: list[InstanceRecord]) -> list[Offer]:
    """Uncompressed little endian (octet-stream's default transfer syntax, PS3.18 Table
    8.7.3-5), also named as stored when every instance holds exactly that; nothing when the
    pixel data of an instance cannot be decoded here."""
    syntaxes = {record.transfer_syntax for record in records}
    if not all(map(can_decode, syntaxes)):
        return []
    offers = [Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)]
    if syntaxes <= NATIVE_TRANSFER_SYNTAXES - {EXPLICIT_VR_BIG_ENDIAN}:
        offers.append(Offer(OCTET_STREAM, AS_STORED))
    return offers


def _why_not(records: list[InstanceRecord]) -> str:
    undecodable = sorted({r.transfer_syntax for r in records if not can_decode(r.transfer_syntax)})
    return (
        f"the bulk data cannot be sent as {OCTET_STREAM} (uncompressed): pixel data in "
        f"{', '.join(undecodable)} cannot be decoded here; each element's BulkDataURI in the "
        "metadata gives it as stored, and the instances are available as application/dicom"
    )


async def answer(
    request: web.Request, records: list[InstanceRecord], offer: Offer
) -> web.StreamResponse:
    """Every bulk data element of ``records`` as one multipart/related response (``offer``
    is one of :func:`bulk_offers`: the bytes are the same for each)."""
    the_catalog = catalog(request)
    headers = await asyncio.to_thread(lambda: [the_catalog.read_header(r) for r in records])
    parts = _parts(request, the_catalog, service_root(request), zip(records, headers, strict=True))
    return await stream_multipart(request, OCTET_STREAM, parts)


def _parts(
    request: web.Request,
    catalog: Catalog,
    root: str,
    instances: Iterable[tuple[InstanceRecord, Header]],
) -> Iterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
    for record, header in instances:
        for path, span in header.bulk.items():
            location = bulk_data_uri(root, record, path)
            headers = {"Content-Type": PART_TYPE, "Content-Location": location}
            if path == ENCAPSULATED and record.transfer_syntax not in NATIVE_TRANSFER_SYNTAXES:
                yield headers, _decoded(request, catalog, record, header.frame_count())
            elif span is None:  # deflated: offsets in the file mean nothing
                yield headers, _parsed(catalog, record, path)
            else:
                big_endian = record.transfer_syntax == EXPLICIT_VR_BIG_ENDIAN
                unit = bulk_unit(header.metadata, path) if big_endian else 1
                yield headers, _read(catalog, record, span, unit)


async def _read(
    catalog: Catalog, record: InstanceRecord, span: tuple[int, int], unit: int
) -> AsyncIterator[bytes]:
    """The value's bytes in little endian: swapped ``unit`` bytes at a time (PS3.5 7.3)."""
    data = await asyncio.to_thread(catalog.read_ranges, record, [span])
    yield to_little_endian(data, unit)


async def _parsed(catalog: Catalog, record: InstanceRecord, path: str) -> AsyncIterator[bytes]:
    yield await asyncio.to_thread(bulk_by_parsing, catalog.path_of(record), path)


async def _decoded(
    request: web.Request, catalog: Catalog, record: InstanceRecord, frame_count: int
) -> AsyncIterator[bytes]:
    """The uncompressed value of encapsulated Pixel Data: every frame, decoded."""
    numbers = list(range(1, frame_count + 1))
    path = catalog.path_of(record)
    for frame in await pixel_work(request, encode_frames, path, numbers, EXPLICIT_VR_LITTLE_ENDIAN):
        yield frame
