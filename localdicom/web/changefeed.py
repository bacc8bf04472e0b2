"""The change feed over HTTP, as Microsoft's DICOM service has it (not in PS3.18): every
instance stored, replaced or deleted, in order, at ``{root}/changefeed`` and the last one at
``{root}/changefeed/latest``, under each DICOMweb root (``/v2/changefeed`` as on Azure).

Paging follows Microsoft's API version 2, the current one, under every root but ``/v1``:
``offset`` skips that many changes of the time window ``startTime`` (inclusive) to
``endTime`` (exclusive), ``limit`` (default 100, 1 to 200) caps the page. Under ``/v1`` it
follows version 1: ``offset`` is the sequence number to read after, ``limit`` (default 10,
1 to 100) the count, and there is no time window. Without a window the two agree, since
sequence numbers are dense from 1. Each entry carries the SOP Class UID besides Microsoft's
fields, and the instance's DICOM JSON when ``includemetadata`` is true (the default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from localdicom.catalog import FeedEntry, WindowGone
from localdicom.web.context import catalog
from localdicom.web.errors import bad_request
from localdicom.web.urls import service_root

JSON = "application/json"


@dataclass(frozen=True)
class Version:
    """What one API version allows: its default and largest ``limit``, and time windows."""

    default_limit: int
    max_limit: int
    windows: bool


V1 = Version(default_limit=10, max_limit=100, windows=False)
V2 = Version(default_limit=100, max_limit=200, windows=True)


async def feed(request: web.Request) -> web.Response:
    """GET {root}/changefeed: a page of changes, oldest first."""
    query = _lower_keys(request)
    version = V1 if request.match_info.get("prefix") == "v1" else V2
    offset = _integer(query, "offset", 0, 0, None)
    limit = _integer(query, "limit", version.default_limit, 1, version.max_limit)
    root = service_root(request) if _boolean(query, "includemetadata") else None
    start, end = _moment(query, "starttime"), _moment(query, "endtime")
    if not version.windows and (start or end):
        raise bad_request("startTime and endTime are version 2 of the API: use /v2/changefeed")
    if start and end and end <= start:
        raise bad_request("endTime must be later than startTime")
    try:
        page = await catalog(request).changes(start, end, offset, limit, root)
    except WindowGone as exc:
        raise web.HTTPGone(text=f"{exc}\n", content_type="text/plain") from None
    body = orjson.dumps([_entry(entry, metadata, root) for entry, metadata in page])
    return web.Response(body=body, content_type=JSON)


async def latest(request: web.Request) -> web.Response:
    """GET {root}/changefeed/latest: the last change; 204 while there is none (Microsoft's
    service answers an empty body too)."""
    root = service_root(request) if _boolean(_lower_keys(request), "includemetadata") else None
    found = await catalog(request).latest_change(root)
    if found is None:
        return web.Response(status=204)
    return web.Response(body=orjson.dumps(_entry(*found, root)), content_type=JSON)


def _entry(entry: FeedEntry, metadata: dict[str, Any] | None, root: str | None) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "Sequence": entry.sequence,
        "StudyInstanceUid": entry.study,
        "SeriesInstanceUid": entry.series,
        "SopInstanceUid": entry.sop,
        "SopClassUid": entry.sop_class,
        "Action": entry.action,
        "Timestamp": entry.timestamp,
        "State": entry.state,
    }
    if root is not None:
        shown["Metadata"] = metadata  # null when the instance is no longer stored
    return shown


def _lower_keys(request: web.Request) -> dict[str, str]:
    """Query parameters by lower-case name: Microsoft's are matched without regard to case
    (``includeMetadata``, ``includemetadata``)."""
    return {key.lower(): value for key, value in request.query.items()}


def _integer(query: dict[str, str], name: str, default: int, low: int, high: int | None) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"{name}={text!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise bad_request(f"{name}={value} is out of range: {bounds}")
    return value


def _boolean(query: dict[str, str], name: str) -> bool:
    text = query.get(name, "true").lower()
    if text not in ("true", "false"):
        raise bad_request(f"{name}={query[name]!r} is neither true nor false")
    return text == "true"


def _moment(query: dict[str, str], name: str) -> datetime | None:
    """An ISO 8601 date and time (UTC when it names no offset)."""
    text = query.get(name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "+"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise bad_request(
            f"{name}={text!r} is not an ISO 8601 date and time (e.g. 2024-05-10T16:00:00Z)"
        ) from None
