"""multipart/related bodies, read as a stream and written as a stream (RFC 2046, PS3.18 8.6).

The reader never holds a whole part in memory: each part's body is an async iterator of
chunks that the caller writes to disk as they arrive. It accepts what real clients send: a
quoted or unquoted boundary, no boundary parameter at all (the boundary is then taken from the
body's first line, as Azure's service does), and any part headers (Content-Disposition from
``curl --form``, Content-Length, MIME-Version).

:class:`Body` reads a request body under the server's limits: a total size, and a time a
client may let pass without sending anything; the reader adds a limit on each part's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from aiohttp import web
from multidict import CIMultiDict

from localdicom.catalog import will_need

logger = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_HEADER_BYTES = 64 * 1024
CRLF = b"\r\n"

#: A part's Content-Type, or all of its header fields (Content-Type, Content-Location, ...).
PartHead = str | Mapping[str, str]


class MalformedMultipart(ValueError):
    """The body does not follow the multipart syntax."""


class BodyTooLarge(Exception):
    """The body, or one part of it, is larger than the server accepts."""


class UploadStalled(Exception):
    """The client sent nothing for longer than the server waits."""


class Readable(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class Body:
    """A request body read in chunks, within a total size and an idle timeout.

    ``max_bytes`` None: any size. ``idle_timeout`` None: wait for data for ever (aiohttp's
    StreamReader has no timeout of its own).
    """

    def __init__(
        self,
        stream: Readable,
        *,
        max_bytes: int | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self._stream = stream
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.received = 0

    async def read(self, n: int = CHUNK) -> bytes:
        chunk = self._buffered(n)
        if not chunk:
            chunk = await self._waited(n)
        self.received += len(chunk)
        if self.max_bytes is not None and self.received > self.max_bytes:
            raise BodyTooLarge(f"the request body is larger than {self.max_bytes} bytes")
        return chunk

    def _buffered(self, n: int) -> bytes:
        """What the stream holds already (aiohttp's ``read_nowait``), b"" if nothing: a read
        that cannot wait needs no timer, whose arming and cancelling cost more than the
        read (two reads in three of 512 KB uploads sent one at a time found data waiting)."""
        read_nowait = getattr(self._stream, "read_nowait", None)
        return b"" if read_nowait is None else read_nowait(n)

    async def _waited(self, n: int) -> bytes:
        try:
            async with asyncio.timeout(self.idle_timeout):
                return await self._stream.read(n)
        except TimeoutError:
            raise UploadStalled(
                f"the client sent nothing for {self.idle_timeout:g} s in the middle of the body"
            ) from None

    async def chunks(self, max_bytes: int | None = None) -> AsyncIterator[bytes]:
        """The whole body as chunks, refused once it is larger than ``max_bytes``."""
        size = 0
        while chunk := await self.read(CHUNK):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise BodyTooLarge(f"the instance is larger than {max_bytes} bytes")
            yield chunk


@dataclass
class Part:
    headers: CIMultiDict[str]
    body: AsyncIterator[bytes]

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


class MultipartReader:
    """Iterate over the parts of a body; read each part's ``body`` before the next part.

    A part whose body grows beyond ``max_part_bytes`` raises :class:`BodyTooLarge` as soon
    as it does, before the rest of it is read.
    """

    def __init__(
        self, stream: Readable, boundary: str | None, *, max_part_bytes: int | None = None
    ) -> None:
        self._stream = stream
        self._boundary_text = boundary
        self._max_part_bytes = max_part_bytes
        self._boundary: bytes | None = None
        self._buffer = bytearray()

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
        """Skip the preamble up to the first delimiter line: the boundary followed by the
        close mark ``--`` or by nothing but transport padding up to CRLF (RFC 2046 5.1.1).
        The boundary followed by other text is part of the preamble."""
        delimiter = self._delimiter
        while True:
            position = self._buffer.find(delimiter)
            if position < 0:
                del self._buffer[: max(0, len(self._buffer) - len(delimiter))]
                if not await self._fill():
                    raise MalformedMultipart("the body has no multipart boundary delimiter")
                continue
            after = position + len(delimiter)
            verdict = _delimiter_line(bytes(self._buffer[after : after + MAX_HEADER_BYTES]))
            if verdict is None and await self._fill():
                continue  # too little read yet to tell
            if verdict is not False:
                del self._buffer[:after]
                return
            del self._buffer[: position + 1]

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
        limit = MAX_HEADER_BYTES + len(CRLF + CRLF)
        while (end := self._buffer.find(CRLF + CRLF, 0, limit)) < 0:
            if len(self._buffer) >= limit:
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
            elif line.strip() and not line[0].isspace():  # folded lines are continuations
                raise MalformedMultipart(_not_a_header(line, self._boundary))
        return headers

    def _take(self, count: int) -> bytes:
        """The first ``count`` bytes of the buffer, removed from it: copied once (a slice of
        a bytearray would be a second copy, and parts are hundreds of megabytes at times)."""
        with memoryview(self._buffer) as view:
            taken = bytes(view[:count])
        del self._buffer[:count]
        return taken

    async def _read_body(self) -> AsyncIterator[bytes]:
        delimiter = self._delimiter
        size = 0
        while True:
            position = self._buffer.find(delimiter)
            if position >= 0:
                chunk = self._take(position)
                del self._buffer[: len(delimiter)]
            else:
                chunk = self._take(max(0, len(self._buffer) - len(delimiter) + 1))
            size += len(chunk)
            if self._max_part_bytes is not None and size > self._max_part_bytes:
                raise BodyTooLarge(f"a part is larger than {self._max_part_bytes} bytes")
            if chunk:
                yield chunk
            if position >= 0:
                return
            if not await self._fill():
                raise MalformedMultipart("the body ends before the closing boundary")


_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def _delimiter_line(rest: bytes) -> bool | None:
    """Whether what follows a boundary makes it a delimiter line; None: cannot tell yet."""
    if rest.startswith(b"--"):
        return True
    padding_end = len(rest) - len(rest.lstrip(b" \t"))
    after_padding = rest[padding_end:]
    if after_padding.startswith(CRLF):
        return True
    if after_padding in (b"", b"\r") or rest == b"-":
        return None if len(rest) < MAX_HEADER_BYTES else False
    return False


def _not_a_header(line: str, boundary: bytes | None) -> str:
    if boundary is not None and line.rstrip() == "--" + boundary.decode("latin-1"):
        return "a boundary delimiter is repeated with no part between the two"
    shown = line if len(line) <= 60 else line[:57] + "..."
    return f"a part's headers hold a line that is not a header field: {shown!r}"


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

    def head(self, part: PartHead) -> bytes:
        fields = {"Content-Type": part} if isinstance(part, str) else part
        lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        return f"--{self.boundary}\r\n{lines}\r\n".encode("latin-1")

    @property
    def closing(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("latin-1")

    async def write_part(
        self, response: web.StreamResponse, head: PartHead, chunks: AsyncIterator[bytes]
    ) -> None:
        await response.write(self.head(head))
        async for chunk in chunks:
            await response.write(chunk)
        await response.write(CRLF)

    async def finish(self, response: web.StreamResponse) -> None:
        await response.write(self.closing)


async def stream_multipart(
    request: web.Request,
    part_type: str,
    parts: Iterable[tuple[PartHead, AsyncIterator[bytes]]],
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Answer with ``(Content-Type or header fields, chunks)`` parts as one multipart/related
    response.

    The first chunk of the first part is produced before the answer starts, so that a part
    that cannot be produced at all (the only one, usually) is answered with its own error
    status; each later part's first chunk before its head is written. A part that fails
    once the answer has started cannot change the status any more: the connection is closed
    without the close delimiter (RFC 2046 5.1.1) or the last chunk of the chunked encoding
    (RFC 9112 7.1), which tells the client the body is not whole, rather than an error
    message written into the body.
    """
    writer = MultipartWriter(part_type)
    iterator = iter(parts)
    first = await _started(next(iterator, None))  # failing here: the handler's own answer
    response = web.StreamResponse(headers={**(headers or {}), "Content-Type": writer.content_type})
    await response.prepare(request)
    part = first
    try:
        while part is not None:
            await writer.write_part(response, *part)
            part = await _started(next(iterator, None))
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception as exc:
        logger.warning("%s: a part failed, connection closed: %s", request.path, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    await writer.finish(response)
    await response.write_eof()
    return response


async def _started(
    part: tuple[PartHead, AsyncIterator[bytes]] | None,
) -> tuple[PartHead, AsyncIterator[bytes]] | None:
    """The part with its first chunk produced already: a part that fails to start fails
    before its head is written."""
    if part is None:
        return None
    head, chunks = part
    return head, _prepend(await anext(chunks, None), chunks)


async def _prepend(chunk: bytes | None, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if chunk is not None:
        yield chunk
    async for chunk in chunks:
        yield chunk


@dataclass(frozen=True)
class FilePart:
    """A part whose body is a whole file of a known size."""

    content_type: str
    path: Path
    size: int


#: Files opened at a time (in one worker-thread call: a call per file costs more than sending
#: a small file).
OPEN_BATCH = 64


async def send_files(
    request: web.Request, part_type: str, parts: list[FilePart]
) -> web.StreamResponse:
    """Answer with whole files as one multipart/related response of known length.

    The files go from the page cache to the socket with sendfile(2), never through Python,
    which is what makes a whole series as fast to send as the disk allows. Stored files are
    replaced by rename, never rewritten, so an open file keeps its size; one deleted or
    replaced since the index gave its size breaks the promised length, and the connection is
    closed rather than sending a body that is not what the headers said.
    """
    writer = MultipartWriter(part_type)
    heads = [writer.head(part.content_type) for part in parts]
    # each delimiter ends the previous part's body (RFC 2046 5.1.1: CRLF belongs to it)
    delimiters = [heads[0], *(CRLF + head for head in heads[1:]), CRLF + writer.closing]
    response = web.StreamResponse(headers={"Content-Type": writer.content_type})
    response.content_length = sum(map(len, delimiters)) + sum(part.size for part in parts)
    await response.prepare(request)
    for start in range(0, len(parts), OPEN_BATCH):
        batch = parts[start : start + OPEN_BATCH]
        files = await asyncio.to_thread(_open_unchanged, batch)
        try:
            for part, fp, delimiter in zip(batch, files, delimiters[start:], strict=False):
                transport = request.transport
                if transport is None:
                    raise ConnectionResetError("the client went away")
                if fp is not None:
                    await response.write(delimiter)
                if fp is None or not await _send_file(transport, fp, part.size):
                    logger.warning("%s changed while being sent; connection closed", part.path)
                    transport.close()
                    return response
        finally:
            for fp in files:
                if fp is not None:
                    fp.close()
    await response.write(delimiters[-1])
    await response.write_eof()
    return response


async def _send_file(transport: asyncio.Transport, fp: BinaryIO, size: int) -> bool:
    """Send ``size`` bytes of ``fp`` on the transport's socket, after what it has sent;
    False if the file ended before.

    As long as the socket takes them they go with sendfile(2) right here; asyncio's
    ``loop.sendfile`` takes over once it is full. Each call of that one stops reading, waits
    for the transport to drain and watches the socket for writing, then undoes it all: work
    for the event loop that a file the socket takes at once does without. Writing to the
    socket directly keeps the bytes in order only while the transport holds none of its own,
    and makes sense only for a plain socket (TLS would need the bytes encrypted)."""
    sent = 0
    sock = transport.get_extra_info("socket")
    direct = (
        not transport.is_closing()
        and transport.get_write_buffer_size() == 0
        and transport.get_extra_info("sslcontext") is None
    )
    with contextlib.suppress(BlockingIOError):  # the socket is full
        while direct and sent < size:
            count = os.sendfile(sock.fileno(), fp.fileno(), sent, size - sent)
            if count == 0:
                return False
            sent += count
    if sent < size:
        sent += await asyncio.get_running_loop().sendfile(transport, fp, sent, size - sent)
    return sent == size


def _open_unchanged(parts: list[FilePart]) -> list[BinaryIO | None]:
    """Each part's file open for reading, or None where it no longer has the part's size;
    read ahead meanwhile (:func:`will_need`), so that sendfile(2) on the event loop does
    not wait for the disk."""
    files: list[BinaryIO | None] = []
    for part in parts:
        try:
            fp = part.path.open("rb")
        except FileNotFoundError:
            files.append(None)
            continue
        if os.fstat(fp.fileno()).st_size != part.size:
            fp.close()
            fp = None
        else:
            will_need(fp.fileno())
        files.append(fp)
    return files


async def once(data: bytes) -> AsyncIterator[bytes]:
    """A part body that is already in memory."""
    yield data
