"""STOW through the in-process test client, and reading HTTP answers: media type parameters,
multipart/related bodies (RFC 2046 5.1.1), BulkDataURIs."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import aiohttp


def raw_stow(content_type: str, length: int) -> bytes:
    """The head of a STOW-RS request written straight to a socket, announcing ``length``
    bytes of body: for a client that then sends less, or stalls."""
    return (
        f"POST /studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nAccept: application/dicom+json\r\n\r\n"
    ).encode()


async def stow(client, data: bytes) -> aiohttp.ClientResponse:
    """STOW-RS one Part 10 file as a single application/dicom body; the answer is read."""
    response = await client.post(
        "/studies",
        data=data,
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
    )
    await response.read()
    return response


def parameters(content_type: str) -> dict[str, str]:
    """The parameters of a media type, names lower-cased, quotes removed."""
    result = {}
    for item in content_type.split(";")[1:]:
        name, _, value = item.partition("=")
        result[name.strip().lower()] = value.strip().strip('"')
    return result


def split_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related body (RFC 2046 5.1.1)."""
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


async def multipart_parts(response: aiohttp.ClientResponse) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    return split_multipart(response.headers["Content-Type"], await response.read())


def url_path(uri: str) -> str:
    """The path of an absolute BulkDataURI: the test server's host is not the client's."""
    parts = urlsplit(uri)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def multipart(instances: list[bytes]) -> tuple[bytes, str]:
    """A STOW-RS body of ``instances`` and its Content-Type."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
        for data in instances
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return body + f"--{boundary}--\r\n".encode(), content_type
