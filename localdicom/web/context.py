"""What every handler needs from the application and the URL."""

from __future__ import annotations

from aiohttp import web

from localdicom.catalog import Catalog
from localdicom.dicom.uids import check_uid
from localdicom.index import InstanceRecord, SeriesRecord, StudyRecord
from localdicom.web.errors import not_found
from localdicom.workers import Workers

CATALOG = web.AppKey("catalog", Catalog)
WORKERS = web.AppKey("workers", Workers)

_NAMES = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}


def catalog(request: web.Request) -> Catalog:
    return request.app[CATALOG]


def workers(request: web.Request) -> Workers:
    return request.app[WORKERS]


def uid(request: web.Request, name: str) -> str | None:
    """A UID from the URL, validated (400 if malformed), or None if the route has none."""
    value = request.match_info.get(name)
    return None if value is None else check_uid(value, _NAMES[name])


def find_study(request: web.Request) -> StudyRecord:
    study = uid(request, "study")
    record = catalog(request).index.studies.get(study)
    if record is None:
        raise not_found(f"study {study} is not in the archive")
    return record


def find_series(request: web.Request) -> SeriesRecord:
    study, series = uid(request, "study"), uid(request, "series")
    record = catalog(request).index.series_in(study, series)
    if record is None:
        raise not_found(f"series {series} of study {study} is not in the archive")
    return record


def find_instance(request: web.Request) -> InstanceRecord:
    study, series, sop = uid(request, "study"), uid(request, "series"), uid(request, "instance")
    record = catalog(request).index.instance_in(study, series, sop)
    if record is None:
        raise not_found(f"instance {sop} of series {series}, study {study} is not in the archive")
    return record
