"""Metadata documents (PS3.18 10.4.1.2) assembled from sidecars once per content and URL
root, and kept, gzipped or not, for the next viewer that asks.

The ETag names the stored content and the URL root, so a viewer's repeat request for an
unchanged series is a 304 and another viewer's request is answered from memory.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from localdicom.dicom.header import Header
from localdicom.index import InstanceRecord


def etag(records: Sequence[InstanceRecord], root: str) -> str:
    tag = hashlib.sha256(root.encode() + b"".join(r.digest for r in records)).hexdigest()
    return f'"{tag[:32]}"'


def document(headers: list[Header], root: str) -> bytes:
    """The DICOM JSON array of ``headers`` with their BulkDataURIs made absolute: the
    sidecars hold them relative to the service root (see :mod:`localdicom.archive.sidecar`),
    so one replacement over the serialized text does it."""
    return orjson.dumps([header.metadata for header in headers]).replace(
        b'"BulkDataURI":"', b'"BulkDataURI":"' + root.encode() + b"/"
    )


def of_instances(
    read_header: Callable[[InstanceRecord], Header],
    records: Sequence[InstanceRecord | None],
    root: str,
) -> list[dict[str, Any] | None]:
    """The DICOM JSON of each instance, BulkDataURIs under ``root``; None for a record that
    is None or whose sidecar cannot be read (deleted meanwhile). Blocking."""
    found: list[dict[str, Any] | None] = []
    for record in records:
        try:
            header = None if record is None else read_header(record)
        except (OSError, ValueError, KeyError, TypeError):
            header = None
        found.append(None if header is None else orjson.loads(document([header], root))[0])
    return found


def compress(body: bytes) -> bytes:
    return gzip.compress(body, 6)


class ResponseCache:
    """Response bodies by key, the least recently used dropped beyond a size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._bodies: OrderedDict[object, bytes] = OrderedDict()
        self._size = 0

    def get(self, key: object) -> bytes | None:
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
        return body

    def put(self, key: object, body: bytes) -> None:
        if len(body) > self.max_bytes or key in self._bodies:
            return
        self._bodies[key] = body
        self._size += len(body)
        while self._size > self.max_bytes:
            _, dropped = self._bodies.popitem(last=False)
            self._size -= len(dropped)
