"""A study or series as one zip of its Part 10 files (PS3.18 8.6.1.3, ``application/zip``),
streamed as it is written: ``Accept: application/zip`` or ``?accept=application/zip``.

The files are as stored unless the media type names a ``transfer-syntax``; then they are
converted in the worker processes, a few ahead of the one being sent. ``?dicomdir=true``
lays them out for a CD viewer, with a DICOMDIR (see :mod:`localdicom.packaging`).

The answer starts with the first entry, so what fails before it (an instance the first
conversion refuses) is the handler's own error status; what fails later closes the
connection, as a multipart answer does, and the client sees a zip without its central
directory rather than a wrong one. A client that goes away stops the writing: nothing was
written anywhere but to it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from aiohttp import web

from localdicom.catalog import Catalog, InstanceRecord
from localdicom.dicom.pixels import transcode
from localdicom.packaging import Member, ZipSink, package
from localdicom.web.context import catalog as catalog_of
from localdicom.web.context import pixel_work
from localdicom.web.errors import bad_request, not_found
from localdicom.web.negotiation import AS_STORED, ZIP, Offer, query_values

logger = logging.getLogger(__name__)


def zip_offers(common: list[str]) -> list[Offer]:
    """The instances as stored (``application/zip`` alone), or in any transfer syntax all
    of them can be rewritten in, when named: never the answer to ``*/*``."""
    syntaxes = [syntax for syntax in common if syntax != AS_STORED]
    return [
        Offer(ZIP, AS_STORED, multipart=False),
        *(Offer(ZIP, syntax, multipart=False, explicit_only=True) for syntax in syntaxes),
    ]


async def answer(
    request: web.Request, records: list[InstanceRecord], offer: Offer
) -> web.StreamResponse:
    dicomdir = _flag(request, "dicomdir")
    the_catalog = catalog_of(request)
    members = [_member(the_catalog, record) for record in records]
    response = web.StreamResponse(
        headers={"Content-Type": ZIP, "Content-Disposition": _disposition(request, records)}
    )

    async def send(data: bytes) -> None:
        if not response.prepared:
            await response.prepare(request)
        await response.write(data)

    async def convert(member: Member, syntax: str) -> bytes:
        return await pixel_work(request, transcode, member.path, syntax)

    try:
        await package(
            members,
            ZipSink(send=send),
            convert,
            syntax=offer.transfer_syntax or AS_STORED,
            dicomdir=dicomdir,
        )
    except Exception as exc:
        return _stopped(request, response, exc)
    await response.write_eof()
    return response


def _stopped(
    request: web.Request, response: web.StreamResponse, exc: Exception
) -> web.StreamResponse:
    """A zip that could not be finished: before its first byte, the error's own status;
    after it, the connection closed (a client gone needs nothing more)."""
    if isinstance(exc, ConnectionError):
        logger.info("%s: the client went away mid-zip", request.path)
        return response
    if not response.prepared:
        if isinstance(exc, FileNotFoundError):  # deleted since the index named it
            raise not_found("an instance was deleted while the zip was starting; ask again")
        raise exc
    logger.warning("%s: the zip stopped, connection closed: %s", request.path, exc)
    if request.transport is not None:
        request.transport.close()
    return response


def _disposition(request: web.Request, records: list[InstanceRecord]) -> str:
    """``attachment`` named after the patient, the study's or series' description and the
    UID of the URL, so that a browser saves each download under a name a person tells
    apart: an ASCII ``filename`` and the UTF-8 ``filename*`` (RFC 6266 4.3, RFC 8187)."""
    uid = next(
        request.match_info[level]
        for level in ("instance", "series", "study")
        if request.match_info.get(level)
    )
    description = "0008103E" if request.match_info.get("series") else "00081030"
    known = catalog_of(request).attributes(records[0], ("00100010", description)) if records else {}
    words = [_first_text(known.get(tag)) for tag in ("00100010", description)]
    name = " ".join(word for word in (*words, uid) if word)
    ascii_name = re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_")
    utf8_name = quote(re.sub(r"[\x00-\x1f\x7f/\\]+", "_", name), safe="")
    return f"attachment; filename=\"{ascii_name}.zip\"; filename*=UTF-8''{utf8_name}.zip"


def _first_text(element: dict | None) -> str:
    """The first value of a DICOM JSON element as text (a person name's alphabetic form)."""
    first = ((element or {}).get("Value") or [""])[0]
    if isinstance(first, dict):
        first = first.get("Alphabetic", "")
    return str(first or "").replace("^", " ").strip()


def _member(catalog: Catalog, record: InstanceRecord) -> Member:
    return Member(
        path=catalog.path_of(record),
        size=record.size,
        study=record.study,
        series=record.series,
        sop=record.sop,
        syntax=record.transfer_syntax,
        metadata=lambda: catalog.read_header(record).metadata,
    )


def _flag(request: web.Request, name: str) -> bool:
    values = {value.lower() for value in query_values(request, name)}
    if values <= {"false"}:
        return False
    if values == {"true"}:
        return True
    raise bad_request(f"{name}={','.join(sorted(values))}: give {name}=true or {name}=false")
