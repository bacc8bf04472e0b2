"""The XML answers (``application/dicom+xml``, the PS3.19 Native DICOM Model) of metadata,
QIDO-RS and STOW-RS: the same DICOM JSON the JSON answers carry, written as XML by
:func:`localdicom.dicom.dicomxml.native_xml`.

Metadata and search results are ``multipart/related; type="application/dicom+xml"``, one
document per instance or match (PS3.18 Table 10.4.4-1, 10.6.3.2): JSON holds many datasets in
one array, XML has one dataset per document. A single instance's metadata may also be asked as
a single part (PS3.18 10.4.4: single part media types are for resources of one item). The
STOW-RS response is one document, the Store Instances Response Module (PS3.18 10.5.3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from localdicom.catalog import InstanceRecord
from localdicom.dicom.dicomxml import native_xml
from localdicom.web.context import catalog
from localdicom.web.multipart import once, stream_multipart
from localdicom.web.negotiation import DICOM_XML, Offer
from localdicom.web.urls import service_root


async def metadata(
    request: web.Request, records: list[InstanceRecord], offer: Offer
) -> web.StreamResponse:
    """Metadata of ``records`` in XML, from the DICOM JSON the catalog keeps (and caches),
    with an ETag of its own: the same content in another representation is another entity
    (RFC 9110 8.8.3)."""
    root = service_root(request)
    the_catalog = catalog(request)
    json_tag = the_catalog.metadata_etag(records, root)
    etag = json_tag[:-1] + '-xml"'
    headers = {"ETag": etag, "Vary": "Accept"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    body = await the_catalog.metadata(records, root, gzipped=False)
    documents = await asyncio.to_thread(_documents, body)
    if not offer.multipart:
        return web.Response(body=documents[0], headers={**headers, "Content-Type": DICOM_XML})
    return await _multipart(request, documents, headers)


def _documents(json_array: bytes) -> list[bytes]:
    return [native_xml(dataset) for dataset in orjson.loads(json_array)]


async def search_results(
    request: web.Request, results: list[Mapping[str, Any]], headers: dict[str, str]
) -> web.StreamResponse:
    """QIDO-RS results, one document per match (PS3.18 10.6.3.2); no match is a body of no
    parts (RFC 2046 5.1.1 needs one: the close delimiter alone, which clients read as none)."""
    documents = await asyncio.to_thread(lambda: [native_xml(result) for result in results])
    return await _multipart(request, documents, headers)


async def _multipart(
    request: web.Request, documents: list[bytes], headers: dict[str, str]
) -> web.StreamResponse:
    parts = ((DICOM_XML, once(document)) for document in documents)
    return await stream_multipart(request, DICOM_XML, parts, headers=headers)


def store_response(body: Mapping[str, Any], status: int, headers: dict[str, str]) -> web.Response:
    """The Store Instances Response Module as one Native DICOM Model document."""
    headers = {**headers, "Content-Type": DICOM_XML}
    return web.Response(body=native_xml(body), status=status, headers=headers)
