"""Rendered images and thumbnails (PS3.18 8.3.5, 10.4.1.1.4, 9.5).

``/rendered`` at study, series, instance and frame level gives consumer images (JPEG, PNG,
GIF) with the window, viewport and quality a client asks for. ``/thumbnail`` gives a small
image of a representative frame, cached on disk beside the archive so that a study list with
many rows stays fast; the cache key holds the instance's digest, so a replaced instance never
shows an old thumbnail.
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from localdicom.catalog import InstanceRecord
from localdicom.dicom.pixels import render
from localdicom.dicom.render import (
    RENDERED_MEDIA_TYPES,
    RenderError,
    RenderParams,
    parse_render_params,
)
from localdicom.web.context import (
    catalog,
    find_instance,
    find_series,
    find_study,
    named_instances,
    pixel_work,
)
from localdicom.web.errors import bad_request, not_found
from localdicom.web.frames import check_frames, frame_numbers
from localdicom.web.multipart import once, stream_multipart
from localdicom.web.negotiation import Offer, choose

THUMBNAIL_SIZE = 128
OFFERS = [Offer(media_type, multipart=False) for media_type in RENDERED_MEDIA_TYPES] + [
    Offer(media_type) for media_type in RENDERED_MEDIA_TYPES
]


# rendered --------------------------------------------------------------------------------


async def study_or_series_rendered(request: web.Request) -> web.StreamResponse:
    return await _render_instances(request, named_instances(request))


async def instance_rendered(request: web.Request) -> web.StreamResponse:
    """One instance: its first frame as an image, or every frame when multipart is asked."""
    record = find_instance(request)
    check_frames(record, [1])
    offer = choose(request, OFFERS)
    numbers = list(range(1, record.frame_count + 1)) if offer.multipart else [1]
    return await _answer(request, offer, [(record, numbers)])


async def frames_rendered(request: web.Request) -> web.StreamResponse:
    record = find_instance(request)
    numbers = frame_numbers(request)
    check_frames(record, numbers)
    offers = OFFERS if len(numbers) == 1 else [o for o in OFFERS if o.multipart]
    return await _answer(request, choose(request, offers), [(record, numbers)])


async def _render_instances(
    request: web.Request, records: list[InstanceRecord]
) -> web.StreamResponse:
    """A study or series: the representative instance's first frame, or with multipart the
    first frame of every instance that has pixel data."""
    offer = choose(request, OFFERS)
    images = [record for record in records if record.frame_count]
    if not images:
        raise not_found("nothing here has pixel data to render")
    chosen = images if offer.multipart else [representative(images)]
    return await _answer(request, offer, [(record, [1]) for record in chosen])


async def _answer(
    request: web.Request, offer: Offer, work: list[tuple[InstanceRecord, list[int]]]
) -> web.StreamResponse:
    params = _params(request, offer.media_type)
    the_catalog = catalog(request)
    images = []
    for record, numbers in work:
        images += await pixel_work(request, render, the_catalog.path_of(record), numbers, params)
    if not offer.multipart:
        return web.Response(body=images[0], headers={"Content-Type": offer.media_type})
    return await stream_multipart(
        request, offer.media_type, ((offer.media_type, once(image)) for image in images)
    )


def _params(request: web.Request, media_type: str) -> RenderParams:
    try:
        return parse_render_params(request.query, media_type)
    except RenderError as exc:
        raise bad_request(str(exc)) from None


def representative(records: list[InstanceRecord]) -> InstanceRecord:
    """The middle instance in instance order: usually the most telling slice of a series."""
    return records[len(records) // 2]


# thumbnails ------------------------------------------------------------------------------


async def study_thumbnail(request: web.Request) -> web.StreamResponse:
    """The representative instance of the study's first series that has images."""
    study = find_study(request)
    for series in study.ordered():
        images = [record for record in series.ordered() if record.frame_count]
        if images:
            return await _thumbnail(request, representative(images), 1)
    raise not_found(f"study {study.uid} has no pixel data to show")


async def series_thumbnail(request: web.Request) -> web.StreamResponse:
    series = find_series(request)
    images = [record for record in series.ordered() if record.frame_count]
    if not images:
        raise not_found(f"series {series.uid} has no pixel data to show")
    return await _thumbnail(request, representative(images), 1)


async def instance_thumbnail(request: web.Request) -> web.StreamResponse:
    return await _thumbnail(request, find_instance(request), 1)


async def frame_thumbnail(request: web.Request) -> web.StreamResponse:
    numbers = frame_numbers(request)
    if len(numbers) != 1:
        raise bad_request("a thumbnail is of one frame: name a single frame number")
    return await _thumbnail(request, find_instance(request), numbers[0])


async def _thumbnail(
    request: web.Request, record: InstanceRecord, number: int
) -> web.StreamResponse:
    the_catalog = catalog(request)
    check_frames(record, [number])
    offer = choose(request, [o for o in OFFERS if not o.multipart])
    params = _params(request, offer.media_type)
    key = hashlib.sha256(repr((number, params)).encode()).hexdigest()[:16]
    cached = the_catalog.cached_thumbnail(record, key)
    if cached is not None:
        return web.FileResponse(cached, headers={"Content-Type": offer.media_type})
    path = the_catalog.path_of(record)
    (image,) = await pixel_work(request, render, path, [number], params, THUMBNAIL_SIZE)
    await the_catalog.keep_thumbnail(record, key, image)
    return web.Response(body=image, headers={"Content-Type": offer.media_type})
