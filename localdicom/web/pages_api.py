"""The two answers the pages need that DICOMweb has no resource for, under ``/ui/api/``:

* ``.../series/{series}/frames``: the series' frames in viewing order with each one's own
  window (:func:`localdicom.dicom.slices.ordered_frames`), so the quick viewer draws its first
  slice after one small request instead of the whole series' metadata;
* ``.../instances/{instance}/tags``: an instance's header as table rows with keywords and
  sequences expanded (:func:`localdicom.dicom.tagtable.tag_rows`).

Both read the sidecars (DICOM JSON) through the Catalog, in a thread.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from localdicom.catalog import InstanceRecord, SeriesRecord
from localdicom.dicom.slices import full_range, ordered_frames
from localdicom.dicom.tagtable import tag_rows
from localdicom.web.context import catalog, find_instance, find_series

API = "/ui/api"


async def series_frames(request: web.Request) -> web.Response:
    return _json(await frames_of(request, find_series(request)))


async def frames_of(request: web.Request, series: SeriesRecord) -> dict:
    """``{"frames": [{"instance", "frame", "window": [center, width] | null}, ...], "range":
    [center, width]}``, ``range`` the window over every value the pixels can hold."""
    records = catalog(request).instances_of(series.study, series.uid)
    metadata = await _sidecars(request, records)
    instances = [
        (record.sop, data, record.frame_count)
        for record, data in zip(records, metadata, strict=True)
    ]
    frames = [
        {"instance": f.instance, "frame": f.number, "window": f.window}
        for f in ordered_frames(instances)
    ]
    images = [data for data, (_, _, count) in zip(metadata, instances, strict=True) if count]
    start = full_range(images[0]) if images else None
    return {"study": series.study, "series": series.uid, "frames": frames, "range": start}


async def instance_tags(request: web.Request) -> web.Response:
    """``{"rows": [{"depth", "tag", "keyword", "vr", "value"}, ...]}``."""
    (metadata,) = await _sidecars(request, [find_instance(request)])
    return _json({"rows": tag_rows(metadata)})


async def _sidecars(request: web.Request, records: list[InstanceRecord]) -> list[dict]:
    """Each instance's DICOM JSON ({} for one deleted meanwhile)."""
    return await catalog(request).complete(records, [{} for _ in records])


def _json(body: dict) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


def add_routes(app: web.Application, series_page: str) -> None:
    """The API beside the series page's URL pattern."""
    app.router.add_get(API + series_page.removeprefix("/ui") + "/frames", series_frames)
    instance = API + series_page.removeprefix("/ui") + "/instances/{instance}/tags"
    app.router.add_get(instance, instance_tags)
