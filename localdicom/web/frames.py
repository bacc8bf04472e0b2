"""WADO-RS frames: ``.../instances/{instance}/frames/{list}`` (PS3.18 10.4.1.1.3, 8.7.3).

A frame asked for in its stored form is a positioned read of the byte ranges in the sidecar;
any other form is decoded and encoded in the worker pool. Every part's Content-Type names
its transfer syntax (PS3.18 8.7.3.3.2): cornerstone, OHIF's image loader, decides from it
whether the bytes are compressed, and takes compressed bytes for raw pixels without it.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from localdicom.catalog import Catalog, InstanceRecord
from localdicom.dicom.frames import (
    FrameListError,
    frames_by_parsing,
    parse_frame_list,
    read_big_endian_frame,
    swap_unit,
)
from localdicom.dicom.header import Header
from localdicom.dicom.pixels import encode_frames
from localdicom.dicom.syntaxes import (
    OCTET_STREAM,
    frame_targets,
    is_lossy_reencode,
    media_type_of,
)
from localdicom.dicom.uids import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
)
from localdicom.web.context import catalog, find_instance, pixel_work
from localdicom.web.errors import bad_request, not_found
from localdicom.web.multipart import once, stream_multipart
from localdicom.web.negotiation import AS_STORED, Offer, choose


async def frames(request: web.Request) -> web.StreamResponse:
    record = find_instance(request)
    numbers = frame_numbers(request)
    check_frames(record, numbers)
    header = await catalog(request).header_of(record)
    return await answer_frames(request, record, header, numbers)


async def answer_frames(
    request: web.Request,
    record: InstanceRecord,
    header: Header,
    numbers: list[int],
    location: str | None = None,
) -> web.StreamResponse:
    """Frames ``numbers`` in the representation the Accept header picks (PS3.18 8.7.3):
    one part each, or a single part for a single frame. ``location``: the BulkDataURI the
    frames are the value of, each part's Content-Location (PS3.18 10.4.3.3.5)."""
    the_catalog = catalog(request)
    stored = record.transfer_syntax
    offer = choose(request, frame_offers(stored, header, single=len(numbers) == 1))
    target = stored if offer.transfer_syntax == AS_STORED else offer.transfer_syntax
    if stored in NATIVE_TRANSFER_SYNTAXES and target in (stored, EXPLICIT_VR_LITTLE_ENDIAN):
        target = EXPLICIT_VR_LITTLE_ENDIAN  # native frames go out in little endian
        data = await asyncio.to_thread(_native_frames, the_catalog, record, header, numbers)
    elif target == stored:
        spans = [header.frames[n - 1] for n in numbers]
        data = [await asyncio.to_thread(the_catalog.read_ranges, record, s) for s in spans]
    else:
        path = the_catalog.path_of(record)
        data = await pixel_work(request, encode_frames, path, numbers, target)
    content_type = f"{offer.media_type}; transfer-syntax={target}"
    if not offer.multipart:
        return web.Response(body=data[0], headers={"Content-Type": content_type})
    head = {"Content-Type": content_type, **({"Content-Location": location} if location else {})}
    parts = ((head, once(frame)) for frame in data)
    return await stream_multipart(request, offer.media_type, parts)


def frame_numbers(request: web.Request) -> list[int]:
    try:
        return parse_frame_list(request.match_info["frames"])
    except FrameListError as exc:
        raise bad_request(str(exc)) from None


def check_frames(record: InstanceRecord, numbers: list[int]) -> None:
    """404 for an instance without pixel data or a frame number beyond its last frame."""
    if not record.frame_count:
        raise not_found(f"instance {record.sop} has no pixel data, so no frames")
    missing = [n for n in numbers if n > record.frame_count]
    if missing:
        raise not_found(
            f"frame {missing[0]} does not exist: "
            f"instance {record.sop} has {record.frame_count} frame(s)"
        )


def frame_offers(stored: str, header: Header, *, single: bool) -> list[Offer]:
    """What a frame stored in ``stored`` can be sent as, in the server's preference:
    uncompressed (the default, PS3.18 8.7.3.5.2), as stored, then every other syntax an
    encoder exists for."""
    bits_stored = int(header.metadata.get("00280101", {}).get("Value", [16])[0])
    as_stored = [Offer(OCTET_STREAM, AS_STORED), Offer(media_type_of(stored), AS_STORED)]
    if stored not in NATIVE_TRANSFER_SYNTAXES:
        as_stored.append(Offer(OCTET_STREAM, stored))  # octet-stream naming the stored syntax
    converted = [
        Offer(media_type_of(target), target, explicit_only=is_lossy_reencode(stored, target))
        for target in frame_targets(stored, bits_stored)
    ]
    default = [o for o in converted if o.transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN]
    offers = list(dict.fromkeys(default + as_stored + converted))
    return offers + [offer.single_part() for offer in offers] if single else offers


def _native_frames(
    catalog: Catalog, record: InstanceRecord, header: Header, numbers: list[int]
) -> list[bytes]:
    """Native frames in little endian: positioned reads, byte-swapped for big endian."""
    if header.frames is None:
        return frames_by_parsing(catalog.path_of(record), numbers)

    def read(offset: int, length: int) -> bytes:
        return catalog.read_ranges(record, [(offset, length)])

    if record.transfer_syntax == EXPLICIT_VR_BIG_ENDIAN:
        bits = int(header.metadata.get("00280100", {}).get("Value", [16])[0])
        unit = swap_unit(bits, header.metadata["7FE00010"]["vr"])
        start = header.frames[0][0][0]
        return [read_big_endian_frame(read, start, header.frames[n - 1][0], unit) for n in numbers]
    return [catalog.read_ranges(record, header.frames[n - 1]) for n in numbers]
