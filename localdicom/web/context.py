"""What every handler needs from the application and the URL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from aiohttp import web

from localdicom.catalog import Catalog, InstanceRecord, SeriesRecord, StudyRecord
from localdicom.dicom.render import RenderError
from localdicom.dicom.uids import check_uid
from localdicom.web.errors import bad_request, not_acceptable, not_found
from localdicom.workers import Workers

logger = logging.getLogger(__name__)
T = TypeVar("T")

CATALOG = web.AppKey("catalog", Catalog)
WORKERS = web.AppKey("workers", Workers)

_NAMES = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}


def catalog(request: web.Request) -> Catalog:
    return request.app[CATALOG]


def workers(request: web.Request) -> Workers:
    return request.app[WORKERS]


async def pixel_work(request: web.Request, function: Callable[..., T], *args: Any) -> T:
    """Run decode/encode/render work; its failures as client errors, not 500s.

    A parameter the renderer rejects is a 400. Pixel data the codecs cannot turn into what
    was asked (a corrupt stream, an unsupported variant, attributes that contradict the data)
    is a 406 that says what still works: whatever a stored file holds, never a 5xx. A worker
    that died (a codec crashed) or could not start stays a server error.
    """
    try:
        return await workers(request).run(function, *args)
    except RenderError as exc:
        raise bad_request(str(exc)) from None
    except BrokenProcessPool:
        raise
    except Exception as exc:
        logger.warning("pixel work %s failed: %s", getattr(function, "__name__", function), exc)
        raise not_acceptable(
            f"the pixel data cannot be converted as asked ({exc}); "
            "transfer-syntax=* gives it as stored"
        ) from None


def uid(request: web.Request, name: str) -> str | None:
    """A UID from the URL, validated (400 if malformed), or None if the route has none."""
    value = request.match_info.get(name)
    return None if value is None else check_uid(value, _NAMES[name])


def find_study(request: web.Request) -> StudyRecord:
    study = uid(request, "study")
    record = catalog(request).study(study)
    if record is None:
        raise not_found(f"study {study} is not in the archive")
    return record


def find_series(request: web.Request) -> SeriesRecord:
    study, series = uid(request, "study"), uid(request, "series")
    record = catalog(request).series(study, series)
    if record is None:
        raise not_found(f"series {series} of study {study} is not in the archive")
    return record


def find_instance(request: web.Request) -> InstanceRecord:
    study, series, sop = uid(request, "study"), uid(request, "series"), uid(request, "instance")
    record = catalog(request).instance(study, series, sop)
    if record is None:
        raise not_found(f"instance {sop} of series {series}, study {study} is not in the archive")
    return record


def named_instances(request: web.Request) -> list[InstanceRecord]:
    """The instances of the study, series or instance the URL names (404 if it is not
    stored): what a study-, series- and instance-level route of one resource acts on."""
    if request.match_info.get("instance") is not None:
        return [find_instance(request)]
    if request.match_info.get("series") is not None:
        series = find_series(request)
        return catalog(request).instances_of(series.study, series.uid)
    return catalog(request).instances_of(find_study(request).uid)
