"""The URLs the server writes into responses (RetrieveURL, BulkDataURI).

A client retrieves with them as written (a BulkDataURI is the URL of its bulk data, PS3.18
F.2.6 and 10.4.3.3.2; RetrieveURL, PS3.18 Table 10.6.3-3), so they must lead to this server
from where the client stands. They follow the request that asked: its scheme and host, or
those a reverse proxy reports in ``Forwarded`` (RFC 7239) / ``X-Forwarded-*`` headers, and
the prefix the route was reached under (``/v1``, ``/dicom-web``, ...), so they are right
under every prefix and behind a proxy.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from localdicom.catalog import InstanceRecord
from localdicom.dicom.header import instance_path


def service_root(request: web.Request) -> str:
    """Absolute URL of the DICOMweb service root the request used, without a final slash."""
    proxy_prefix = request.headers.get("X-Forwarded-Prefix", "").rstrip("/")
    prefix = request.match_info.get("prefix")
    return f"{public_origin(request)}{proxy_prefix}{'/' + prefix if prefix else ''}"


def public_origin(request: web.Request) -> str:
    """The scheme and host the client used: the request's, or a reverse proxy's."""
    forwarded = request.forwarded[0] if request.forwarded else {}
    scheme = (
        forwarded.get("proto")
        or request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
        or request.scheme
    )
    host = (
        forwarded.get("host")
        or request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        or request.host
    )
    return f"{scheme}://{host}"


def bulk_data_uri(root: str, record: InstanceRecord, path: str) -> str:
    """The BulkDataURI that metadata gives the bulk value at ``path``, as the Content-Location
    of the part that carries it (PS3.18 10.4.3.3.5); kept ASCII, as a header's URI must be."""
    uri = f"{root}/{instance_path(record.study, record.series, record.sop)}/bulk/{path}"
    return quote(uri, safe=":/?#[]@!$&'()*+,;=%")
