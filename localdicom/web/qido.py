"""QIDO-RS: search studies, series and instances (PS3.18 10.6), answered from memory."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from pydicom.datadict import dictionary_VR

from localdicom.catalog import Catalog
from localdicom.dicom.header import instance_path
from localdicom.dicom.qido import (
    COMPUTED,
    INSTANCE,
    INSTANCE_AVAILABILITY,
    LEVEL_ATTRIBUTES,
    LEVELS,
    RETRIEVE_URL,
    SERIES,
    STUDY,
    parse_query,
    result_fields,
)
from localdicom.index import InstanceRecord, Record, SeriesRecord, StudyRecord
from localdicom.web.context import catalog, uid
from localdicom.web.negotiation import DICOM_JSON, Offer, choose
from localdicom.web.urls import service_root

#: Attributes the index holds for every record: absent there means absent in the instance.
IN_MEMORY = frozenset(tag for level in LEVELS for tag in LEVEL_ATTRIBUTES[level] + COMPUTED[level])
OFFERS = [Offer(DICOM_JSON, multipart=False), Offer("application/json", multipart=False)]


def search(level: str):
    """A handler searching at ``level`` within the study and series the URL names."""

    async def handler(request: web.Request) -> web.Response:
        offer = choose(request, OFFERS)
        study, series = uid(request, "study"), uid(request, "series")
        query = parse_query(request.query.items(), level)
        the_catalog = catalog(request)
        matches = the_catalog.index.search(query, study, series)
        end = None if query.limit is None else query.offset + query.limit
        page = matches[query.offset : end]
        fixed = (study is not None) + (series is not None)
        open_levels = tuple(LEVELS[fixed : LEVELS.index(level)])
        fields = result_fields(query, open_levels)
        root = service_root(request)
        results = await asyncio.gather(
            *(_result(the_catalog, record, fields, root) for record in page)
        )
        headers = {"Content-Type": offer.media_type}
        if end is not None and end < len(matches):
            headers["Warning"] = (
                '299 localdicom "There are additional results that can be requested"'
            )
        body = json.dumps(results, ensure_ascii=False, separators=(",", ":"))
        return web.Response(body=body.encode("utf-8"), headers=headers)

    return handler


async def _result(catalog: Catalog, record: Record, fields: list[str], root: str) -> dict[str, Any]:
    """One match: what memory holds, the rest of ``fields`` from the sidecar; absent
    attributes are returned empty (PS3.18 F.2.5: an element without a Value)."""
    known = catalog.index.attributes(record)
    known[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{root}/{_path(record)}"]}
    known[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
    if any(tag not in known and tag not in IN_MEMORY for tag in fields):
        header = await catalog.header_of(_representative(record))
        known = {**header.metadata, **known}
    return {tag: known.get(tag) or {"vr": _vr(tag)} for tag in sorted(fields)}


def _vr(tag: str) -> str:
    try:
        return dictionary_VR(int(tag, 16)).split(" or ")[0]
    except KeyError:
        return "UN"


def _path(record: Record) -> str:
    if isinstance(record, StudyRecord):
        return f"studies/{record.uid}"
    if isinstance(record, SeriesRecord):
        return f"studies/{record.study}/series/{record.uid}"
    return instance_path(record.study, record.series, record.sop)


def _representative(record: Record) -> InstanceRecord:
    """The instance whose sidecar supplies attributes not kept in memory."""
    if isinstance(record, StudyRecord):
        record = next(iter(record.series.values()))
    if isinstance(record, SeriesRecord):
        return next(iter(record.instances.values()))
    return record


search_studies = search(STUDY)
search_series = search(SERIES)
search_instances = search(INSTANCE)
