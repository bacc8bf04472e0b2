"""Blocking HTTP helpers for tests that talk to a server in a subprocess (``LiveServer``).

A module-scoped live server lets many tests share one server and its worker pool; these
helpers are plain ``urllib`` so they also work from threads.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from tests.test_pydicom_data_roundtrip import parameters

TIMEOUT = 120


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def parts(self) -> list[tuple[str, bytes]]:
        """(Content-Type, body) of each part of a multipart/related body (RFC 2046 5.1.1)."""
        return split_multipart(self.content_type, self.body)


def request(
    url: str,
    *,
    method: str = "GET",
    accept: str | None = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One HTTP exchange; 4xx and 5xx answers are returned, not raised."""
    all_headers = dict(headers or {})
    if accept is not None:
        all_headers["Accept"] = accept
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.headers, error.read())


def stow_file(base_url: str, path: Path) -> Reply:
    """STOW-RS one Part 10 file as a single application/dicom body."""
    return request(
        f"{base_url}/studies",
        method="POST",
        data=path.read_bytes(),
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
    )


def split_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    assert content_type.split(";")[0].strip() == "multipart/related", content_type
    delimiter = b"\r\n--" + parameters(content_type)["boundary"].encode("latin-1")
    _preamble, *sections = (b"\r\n" + body).split(delimiter)
    assert sections and sections[-1].startswith(b"--"), "no close delimiter"
    parts = []
    for section in sections[:-1]:
        head, separator, part_body = section.partition(b"\r\n\r\n")
        assert separator, "a part without a header/body separator"
        fields = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip():
                fields[name.strip().lower()] = value.strip()
        parts.append((fields.get("content-type", ""), part_body))
    return parts
