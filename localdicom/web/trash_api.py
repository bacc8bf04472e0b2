"""The Trash page's answers, under ``/ui/api/trash``: what the trash holds, and restoring
or emptying it (what ``localdicom trash ls|restore|empty`` do, for a running server).

* ``GET /ui/api/trash``: ``{"enabled": bool, "entries": [...]}``, oldest first;
* ``POST /ui/api/trash/restore`` ``{"entry": NAME}``: 200 with what came back, 404 for no
  such entry, 409 when an instance was left in the trash because its SOP Instance UID is
  stored again (a conflict, never overwritten), 507 when the archive cannot be written;
* ``POST /ui/api/trash/empty`` ``{"older_than_days": N}`` (absent: everything): 200 with
  how many entries went.

The POSTs change the archive, so beside the server's own guards (origin check, token or
same-origin cookie, :mod:`localdicom.web.security`) they take only a JSON body: a form on
another site can send ``text/plain`` or form data without asking, but ``application/json``
only after a CORS preflight, which the origin check refuses.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from localdicom.web.context import catalog
from localdicom.web.errors import bad_request, not_found, unsupported_media_type

TRASH = "/ui/api/trash"
#: The largest body a POST here takes (its JSON is a few dozen bytes).
MAX_BODY = 4096


async def list_trash(request: web.Request) -> web.Response:
    door = catalog(request)
    entries = await door.trash_entries()
    return _json({"enabled": door.keep_removed, "entries": entries})


async def restore(request: web.Request) -> web.Response:
    entry = (await _body(request)).get("entry")
    if not isinstance(entry, str) or not entry:
        raise bad_request('give the trash entry to restore: {"entry": "<name from the list>"}')
    report = await catalog(request).restore_entry(entry)
    if report is None:
        raise not_found(f"the trash holds no entry {entry!r} (restored or emptied meanwhile?)")
    body = {
        "restored": len(report.restored),
        "present": len(report.present),
        "conflicts": [{"sop": t.sop, "reason": why} for t, why in report.conflicts],
        "errors": [{"sop": t.sop, "reason": why} for t, why in report.errors],
    }
    status = 409 if report.conflicts else 507 if report.errors else 200
    return _json(body, status)


async def empty(request: web.Request) -> web.Response:
    days = (await _body(request)).get("older_than_days")
    valid = isinstance(days, int | float) and not isinstance(days, bool) and math.isfinite(days)
    if days is not None and not (valid and days >= 0):
        raise bad_request(f"older_than_days={days!r}: give a number of days, 0 or more")
    emptied = await catalog(request).empty_trash(None if days is None else days * 86400)
    return _json({"emptied": emptied})


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; 415 for another media type, 400 for what does not parse."""
    if request.content_type != "application/json":
        raise unsupported_media_type(
            f"Content-Type {request.content_type!r}: send a JSON object as application/json"
        )
    if request.content_length is None:
        raise web.HTTPLengthRequired(text="send the JSON body with a Content-Length\n")
    if request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(
            MAX_BODY, request.content_length, text=f"send at most {MAX_BODY} bytes of JSON\n"
        )
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


def _json(body: dict, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(TRASH, list_trash)
    app.router.add_post(TRASH + "/restore", restore)
    app.router.add_post(TRASH + "/empty", empty)
