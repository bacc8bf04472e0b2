"""multipart/related bodies, read as a stream and written as a stream (RFC 2046, PS3.18 8.6).

The reader never holds a whole part in memory: each part's body is an async iterator of
chunks that the caller writes to disk as they arrive. It accepts what real clients send: a
quoted or unquoted boundary, no boundary parameter at all (the boundary is then taken from the
body's first line, as Azure's service does), and any part headers (Content-Disposition from
``curl --form``, Content-Length, MIME-Version).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from aiohttp import StreamReader, web
from multidict import CIMultiDict

CHUNK = 256 * 1024
MAX_HEADER_BYTES = 64 * 1024
CRLF = b"\r\n"


class MalformedMultipart(ValueError):
    """The body does not follow the multipart syntax."""


@dataclass
class Part:
    headers: CIMultiDict[str]
    body: AsyncIterator[bytes]

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


class MultipartReader:
    """Iterate over the parts of a body; read each part's ``body`` before the next part."""

    def __init__(self, stream: StreamReader, boundary: str | None) -> None:
        self._stream = stream
        self._boundary_text = boundary
        self._boundary: bytes | None = None
        self._buffer = bytearray()
        self._finished = False

    async def _fill(self) -> bool:
        chunk = await self._stream.read(CHUNK)
        self._buffer += chunk
        return bool(chunk)

    async def _start(self) -> None:
        """Skip the preamble up to the first delimiter, learning the boundary if needed."""
        while CRLF not in self._buffer and len(self._buffer) < MAX_HEADER_BYTES:
            if not await self._fill():
                break
        if self._boundary_text:
            self._boundary = _checked_boundary(self._boundary_text.encode("utf-8"))
        else:
            first_line = bytes(self._buffer).split(CRLF, 1)[0]
            if not first_line.startswith(b"--"):
                raise MalformedMultipart(
                    "the Content-Type has no boundary and the body does not start with one"
                )
            self._boundary = _checked_boundary(first_line[2:].rstrip())
        self._buffer[:0] = CRLF  # so the first delimiter looks like all the others
        await self._skip_to_delimiter()

    @property
    def _delimiter(self) -> bytes:
        assert self._boundary is not None
        return CRLF + b"--" + self._boundary

    async def _skip_to_delimiter(self) -> None:
        while (position := self._buffer.find(self._delimiter)) < 0:
            del self._buffer[: max(0, len(self._buffer) - len(self._delimiter))]
            if not await self._fill():
                raise MalformedMultipart("the body has no multipart boundary delimiter")
        del self._buffer[: position + len(self._delimiter)]

    async def __aiter__(self) -> AsyncIterator[Part]:
        await self._start()
        while True:
            while len(self._buffer) < 2 and await self._fill():
                pass
            if self._buffer.startswith(b"--"):
                return  # close delimiter: the epilogue is ignored
            headers = await self._read_headers()
            part = Part(headers, self._read_body())
            yield part
            async for _ in part.body:  # drain what the caller did not read
                pass

    async def _read_headers(self) -> CIMultiDict[str]:
        while (end := self._buffer.find(CRLF + CRLF)) < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise MalformedMultipart("a part's headers are larger than 64 KiB")
            if not await self._fill():
                raise MalformedMultipart("the body ends inside a part's headers")
        block = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        headers: CIMultiDict[str] = CIMultiDict()
        lines = block.split("\r\n")[1:]  # the first line is the rest of the delimiter line
        for line in lines:
            name, colon, value = line.partition(":")
            if colon:
                headers.add(name.strip(), value.strip())
        return headers

    async def _read_body(self) -> AsyncIterator[bytes]:
        delimiter = self._delimiter
        while True:
            position = self._buffer.find(delimiter)
            if position >= 0:
                chunk = bytes(self._buffer[:position])
                del self._buffer[: position + len(delimiter)]
                if chunk:
                    yield chunk
                return
            keep = len(delimiter) - 1
            if len(self._buffer) > keep:
                chunk = bytes(self._buffer[: len(self._buffer) - keep])
                del self._buffer[: len(chunk)]
                yield chunk
            if not await self._fill():
                raise MalformedMultipart("the body ends before the closing boundary")


_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def _checked_boundary(boundary: bytes) -> bytes:
    """A boundary as RFC 2046 5.1.1 allows it: 1 to 70 of its characters, no final space."""
    if not _BOUNDARY.fullmatch(boundary):
        raise MalformedMultipart(f"{boundary[:80]!r} is not a valid multipart boundary")
    return boundary


def new_boundary() -> str:
    """A random boundary per response: a fixed one can occur inside DICOM bytes."""
    return os.urandom(16).hex()


class MultipartWriter:
    """Write a multipart/related response part by part (PS3.18 8.6.1.2)."""

    def __init__(self, part_type: str) -> None:
        self.boundary = new_boundary()
        self.content_type = f'multipart/related; type="{part_type}"; boundary={self.boundary}'

    async def write_part(
        self, response: web.StreamResponse, content_type: str, chunks: AsyncIterator[bytes]
    ) -> None:
        head = f"--{self.boundary}\r\nContent-Type: {content_type}\r\n\r\n"
        await response.write(head.encode("latin-1"))
        async for chunk in chunks:
            await response.write(chunk)
        await response.write(CRLF)

    async def finish(self, response: web.StreamResponse) -> None:
        await response.write(f"--{self.boundary}--\r\n".encode("latin-1"))


async def stream_multipart(
    request: web.Request,
    part_type: str,
    parts: Iterable[tuple[str, AsyncIterator[bytes]]],
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Answer with ``(Content-Type, chunks)`` parts as one multipart/related response."""
    writer = MultipartWriter(part_type)
    response = web.StreamResponse(headers={**(headers or {}), "Content-Type": writer.content_type})
    await response.prepare(request)
    for content_type, chunks in parts:
        await writer.write_part(response, content_type, chunks)
    await writer.finish(response)
    await response.write_eof()
    return response


async def once(data: bytes) -> AsyncIterator[bytes]:
    """A part body that is already in memory."""
    yield data
