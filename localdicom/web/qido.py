"""QIDO-RS: search studies, series and instances (PS3.18 10.6), on any attribute: answered
from memory, and from the sidecars for what memory does not hold (the Catalog's work)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from pydicom.datadict import dictionary_VR

from localdicom.catalog import Catalog, Match, Record, SeriesRecord, StudyRecord
from localdicom.dicom.header import instance_path
from localdicom.dicom.qido import (
    INSTANCE,
    INSTANCE_AVAILABILITY,
    LEVELS,
    RETRIEVE_URL,
    SERIES,
    STUDY,
    Query,
    Universal,
    order_key,
    parse_query,
    result_fields,
    value_order_key,
)
from localdicom.web import native
from localdicom.web.context import catalog, find_series, find_study
from localdicom.web.negotiation import DICOM_JSON, DICOM_XML, QUERY_PARAMETERS, Offer, choose
from localdicom.web.urls import service_root

#: Attributes this module gives every result.
OWN = frozenset([RETRIEVE_URL, INSTANCE_AVAILABILITY])
#: JSON by default, or XML, one match per part (PS3.18 10.6.3.2).
OFFERS = [
    Offer(DICOM_JSON, multipart=False),
    Offer("application/json", multipart=False),
    Offer(DICOM_XML),
]
ONLINE = {"vr": "CS", "Value": ["ONLINE"]}
#: How many results match in all (not in PS3.18, which has no count): given whenever it is
#: known without reading more than the page needs, i.e. unless a key memory does not hold
#: stopped the search at the page's end.
TOTAL_COUNT = "X-Total-Count"
EMPTY_KEY = order_key(None)
#: StudyDate, StudyTime: the order of the index's studies (ties by Study Instance UID).
INDEX_ORDER = ("00080020", "00080030")


def search(level: str):
    """A handler searching at ``level`` within the study and series the URL names."""

    async def handler(request: web.Request) -> web.Response:
        offer = choose(request, OFFERS)
        study, series = _scope(request)
        keys = ((k, v) for k, v in request.query.items() if k not in QUERY_PARAMETERS)
        query = parse_query(keys, level)
        the_catalog = catalog(request)
        end = None if query.limit is None else query.offset + query.limit
        # one more than the page: whether there are more is all the Warning says; a sorted
        # page needs every match
        wanted = None if end is None or query.order else end + 1
        matches = await the_catalog.query(query, study, series, wanted)
        if query.order:
            matches = await _sorted(the_catalog, matches, query)
        page = matches[query.offset : end]
        fixed = (study is not None) + (series is not None)
        fields = tuple(sorted(result_fields(query, tuple(LEVELS[fixed : LEVELS.index(level)]))))
        root = service_root(request)
        results = [_known(the_catalog, match, fields, root) for match in page]
        if any(tag not in OWN and not the_catalog.holds(tag) for tag in fields):
            results = await the_catalog.complete(page, results)
        empty = _empty_elements(fields)
        results = [{tag: r.get(tag) or empty[tag] for tag in fields} for r in results]
        headers = {}
        if wanted is None or len(matches) < wanted or _decided_in_memory(the_catalog, query):
            headers[TOTAL_COUNT] = str(len(matches))
        if end is not None and end < len(matches):
            headers["Warning"] = (
                '299 localdicom "There are additional results that can be requested"'
            )
        if offer.media_type == DICOM_XML:
            return await native.search_results(request, results, headers)
        headers["Content-Type"] = offer.media_type
        return web.Response(body=orjson.dumps(results), headers=headers)

    return handler


def _decided_in_memory(catalog: Catalog, query: Query) -> bool:
    """Whether every key is matched from memory, so that every match was found."""
    return all(
        isinstance(condition, Universal) or catalog.holds(tag)
        for tag, condition in query.conditions.items()
    )


async def _sorted(catalog: Catalog, matches: Sequence[Match], query: Query) -> Sequence[Match]:
    """``orderby`` (dcm4chee-arc's QIDO-RS extension): by each key in turn, the first the
    most significant, results without a value last; ties keep the index's stable order.
    A key memory does not hold is read from a sidecar of each match."""
    order = query.order
    if _index_order(query):
        return _as_indexed(catalog, matches, descending=order[0][1])
    keys = {tag: await _keys(catalog, matches, tag) for tag, _ in order}
    rows = list(range(len(matches)))
    for tag, descending in reversed(order):
        key = keys[tag]
        present = [row for row in rows if key[row] != EMPTY_KEY]
        present.sort(key=key.__getitem__, reverse=descending)
        rows = present + [row for row in rows if key[row] == EMPTY_KEY]
    return [matches[row] for row in rows]


async def _keys(catalog: Catalog, matches: Sequence[Match], tag: str) -> list[tuple]:
    """Each match's sort key for ``tag``: from memory's values, or its sidecar's."""
    if catalog.holds(tag):
        return [value_order_key(value) for value in catalog.values(matches, tag)]
    known = [catalog.attributes(match, (tag,)) for match in matches]
    return [order_key(each.get(tag)) for each in await catalog.complete(matches, known)]


def _index_order(query: Query) -> bool:
    """Whether ``orderby`` asks for the order studies already come in (by date, then time:
    the index's stable order), in one direction: the studies page's default order."""
    tags = tuple(tag for tag, _ in query.order)
    return (
        query.level == STUDY
        and tags == INDEX_ORDER[: len(tags)]
        and len({descending for _, descending in query.order}) == 1
    )


def _as_indexed(catalog: Catalog, matches: Sequence[Match], *, descending: bool) -> Sequence[Match]:
    """Matches in the index's order, or reversed, with those without a StudyDate (which the
    index puts first) last: what sorting gives, without sorting 100,000 studies."""
    if descending:
        return matches[::-1]
    undated = 0
    while undated < len(matches) and order_key(_date(catalog, matches[undated])) == EMPTY_KEY:
        undated += 1
    return matches[undated:] + matches[:undated]


def _date(catalog: Catalog, match: Match) -> dict[str, Any] | None:
    return catalog.attributes(match, (INDEX_ORDER[0],)).get(INDEX_ORDER[0])


def _scope(request: web.Request) -> tuple[str | None, str | None]:
    """The study and series the URL searches within. One that is not stored is a 404 (RFC
    9110 15.5.5: the target resource does not exist), as for every other resource a URL
    names, rather than an empty result that reads as "nothing matched there"."""
    if request.match_info.get("series") is not None:
        series = find_series(request)
        return series.study, series.uid
    if request.match_info.get("study") is not None:
        return find_study(request).uid, None
    return None, None


def _known(catalog: Catalog, match: Match, fields: tuple[str, ...], root: str) -> dict[str, Any]:
    """What memory holds of ``fields`` for one match."""
    known = catalog.attributes(match, fields)
    known[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{root}/{_path(match.record)}"]}
    known[INSTANCE_AVAILABILITY] = ONLINE
    return known


@functools.lru_cache(maxsize=256)
def _empty_elements(fields: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Each field as an element without a Value; remembered, as a client repeats its
    queries (looking up a VR costs more than answering from memory)."""
    return {tag: {"vr": _vr(tag)} for tag in fields}


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


search_studies = search(STUDY)
search_series = search(SERIES)
search_instances = search(INSTANCE)
