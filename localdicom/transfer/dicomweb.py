"""A DICOMweb client for pull and push (aiohttp): QIDO-RS searches page by page, WADO-RS
retrieval of one instance as the remote stores it, STOW-RS of a batch of files, each call
retried on what is worth retrying.

Retried, with exponential backoff: a connection refused, reset or cut in the middle of a
body, a timeout, 5xx and 429; a ``Retry-After`` (seconds or an HTTP date, RFC 9110 10.2.3)
is honoured, up to :data:`MAX_WAIT`. Anything else (4xx) is the answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson

from localdicom.transfer.received import Received
from localdicom.transfer.remote import Credentials
from localdicom.web.multipart import MalformedMultipart, MultipartReader

T = TypeVar("T")

#: Attempts per call (the first included) before an error is given up on.
ATTEMPTS = 6
#: The longest wait between two attempts, Retry-After included (seconds).
MAX_WAIT = 60.0
#: QIDO-RS page size: within what Azure (200) and Google accept as ``limit``.
PAGE = 200
CHUNK = 1 << 20
#: A retrieved instance up to this size is kept in memory until it is stored; a larger one
#: is written to the staging folder as it arrives (pull keeps a few instances in flight).
IN_MEMORY = 8 << 20
#: WADO-RS of an instance in the bytes the remote stores (PS3.18 8.7.3.5.2: transfer-syntax=*).
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class RemoteError(Exception):
    """A call that failed for good; the message says what the remote answered."""


class Retry(Exception):
    """An answer worth another attempt (5xx, 429), with the wait the remote asked for."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


RETRIED = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, Retry)


@dataclass
class Answer:
    status: int
    warning: str
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body.strip() else None


class DicomwebClient:
    """One remote's DICOMweb root, ``jobs`` connections to it at most."""

    def __init__(
        self,
        base: str,
        credentials: Credentials,
        tls: Any,
        jobs: int,
        *,
        backoff: float = 0.5,
        timeout: float = 600,
    ) -> None:
        self.base = base.rstrip("/")
        self.credentials = credentials
        self.backoff = backoff
        self.retries = 0
        self.session = aiohttp.ClientSession(
            headers=credentials.headers,
            connector=aiohttp.TCPConnector(limit=jobs, ssl=tls),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        handle: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        *,
        params: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        body: Callable[[], Any] | None = None,
    ) -> T:
        """One call, retried; ``handle`` reads the response (inside the retry: a body cut
        short is retried too); ``body`` makes the request body afresh for each attempt."""
        url = self.base + path
        for attempt in range(ATTEMPTS):
            try:
                async with self.session.request(
                    method, url, params=params, headers=headers, data=body() if body else None
                ) as response:
                    if response.status >= 500 or response.status == 429:
                        text = (await response.read())[:200].decode("utf-8", "replace")
                        wait = retry_after(response.headers.get("Retry-After"))
                        raise Retry(f"{response.status} {text}".strip(), wait)
                    return await handle(response)
            except RETRIED as exc:
                if attempt == ATTEMPTS - 1:
                    raise RemoteError(self.say(f"{method} {url}: {_reason(exc)}")) from None
                self.retries += 1
                wait = getattr(exc, "wait", None)
                await asyncio.sleep(
                    min(wait if wait is not None else self._delay(attempt), MAX_WAIT)
                )
            except aiohttp.ClientError as exc:
                raise RemoteError(self.say(f"{method} {url}: {_reason(exc)}")) from None
        raise AssertionError("unreachable")

    def _delay(self, attempt: int) -> float:
        return self.backoff * 2**attempt

    def say(self, text: str) -> str:
        return self.credentials.hide(text)

    # QIDO-RS ---------------------------------------------------------------------------

    async def search(self, path: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Every match of a QIDO-RS search, page by page (PS3.18 8.3.4.4 limit and offset),
        until a page comes back empty or brings nothing new (a remote ignoring offset)."""
        found: dict[bytes, dict[str, Any]] = {}
        offset = 0
        while True:
            query = [*params, ("limit", str(PAGE)), ("offset", str(offset))]
            answer = await self.call("GET", path, _answer, params=query, headers=JSON)
            if answer.status == 204:
                break
            if answer.status != 200:
                raise RemoteError(
                    self.say(f"QIDO-RS {path} answered {answer.status}: {_text(answer)}")
                )
            try:
                page = answer.json() or []
            except ValueError:
                raise RemoteError(f"QIDO-RS {path} answered something else than JSON") from None
            if not isinstance(page, list):
                raise RemoteError(f"QIDO-RS {path} answered JSON that is not a list of matches")
            fresh = {orjson.dumps(match, option=orjson.OPT_SORT_KEYS): match for match in page}
            if not set(fresh) - set(found):
                break
            found |= fresh
            offset += len(page)
        return list(found.values())

    # WADO-RS ---------------------------------------------------------------------------

    async def retrieve(self, path: str, stage: Callable[[], Path]) -> Received:
        """The instance at ``path`` as stored (:func:`_receive`)."""

        async def save(response: aiohttp.ClientResponse) -> Received:
            if response.status != 200:
                answer = await _answer(response)
                raise RemoteError(self.say(f"WADO-RS answered {answer.status}: {_text(answer)}"))
            return await _first_part(response, stage)

        # identity: aiohttp asks for gzip by default, which Orthanc then spends ~0.2 s per
        # instance on, for pixel data that hardly compresses
        headers = {"Accept": AS_STORED, "Accept-Encoding": "identity"}
        return await self.call("GET", path, save, headers=headers)

    async def retrieve_series(
        self,
        path: str,
        stage: Callable[[], Path],
        take: Callable[[Received], Awaitable[None]],
    ) -> str | None:
        """Every instance of the series at ``path`` as stored, in one answer: each part
        handed to ``take`` once whole (:func:`_receive`). None when the answer was read to
        its end, else why it stopped: what was taken stays taken, and the caller fetches
        the rest instance by instance (no part is taken twice)."""

        async def read(response: aiohttp.ClientResponse) -> str | None:
            if response.status != 200:
                answer = await _answer(response)
                return self.say(f"WADO-RS answered {answer.status}: {_text(answer)}")
            boundary = _boundary(response.headers.get("Content-Type"))
            try:
                async for part in MultipartReader(response.content, boundary):
                    await take(await _receive(part.body, stage))
            except (MalformedMultipart, *RETRIED, aiohttp.ClientError) as exc:
                return self.say(_reason(exc))
            return None

        headers = {"Accept": AS_STORED, "Accept-Encoding": "identity"}
        try:
            return await self.call("GET", path, read, headers=headers)
        except RemoteError as exc:
            return str(exc)

    # STOW-RS ---------------------------------------------------------------------------

    async def store(self, files: list[tuple[Path | bytes, int]]) -> Answer:
        """STOW-RS of ``files`` (a file, or an instance's bytes, with its size) in one
        multipart/related request (PS3.18 10.5)."""
        boundary = uuid.uuid4().hex
        heads = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() for _ in files]
        tail = f"\r\n--{boundary}--\r\n".encode()
        length = sum(len(h) for h in heads) + sum(size for _, size in files)
        length += 2 * (len(files) - 1) + len(tail)
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Content-Length": str(length),
            **JSON,
        }
        body = lambda: _parts(files, heads, tail)  # noqa: E731 (a fresh body per attempt)
        return await self.call("POST", "/studies", _answer, headers=headers, body=body)


JSON = {"Accept": "application/dicom+json"}


async def _parts(
    files: list[tuple[Path | bytes, int]], heads: list[bytes], tail: bytes
) -> AsyncIterator[bytes]:
    for index, ((path, _), head) in enumerate(zip(files, heads, strict=True)):
        yield (b"\r\n" if index else b"") + head
        if isinstance(path, bytes):
            yield path
            continue
        with path.open("rb") as fp:
            while chunk := await asyncio.to_thread(fp.read, CHUNK):
                yield chunk
    yield tail


async def _answer(response: aiohttp.ClientResponse) -> Answer:
    return Answer(response.status, response.headers.get("Warning", ""), await response.read())


async def _first_part(response: aiohttp.ClientResponse, stage: Callable[[], Path]) -> Received:
    """The first part of a multipart/related answer (:func:`_receive`), with the server's
    own streaming reader (aiohttp's is many times slower on large parts)."""
    reader = MultipartReader(response.content, _boundary(response.headers.get("Content-Type")))
    try:
        async for part in reader:
            return await _receive(part.body, stage)  # the closing boundary is not waited for
    except MalformedMultipart as exc:  # a body cut short is worth another attempt
        raise Retry(f"the answer is not whole multipart/related: {exc}") from None
    raise RemoteError("WADO-RS answered a multipart body without an instance")


async def _receive(body: AsyncIterator[bytes], stage: Callable[[], Path]) -> Received:
    """A part's body: kept in memory up to :data:`IN_MEMORY` bytes (then hashed, parsed
    and written once by whoever stores it, in another thread), else streamed to a file
    from ``stage`` as it arrives."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        chunks.append(chunk)
        size += len(chunk)
        if size > IN_MEMORY:
            return await _save(chunks, body, stage())
    return Received(b"".join(chunks), size=size)


async def _save(first: list[bytes], rest: AsyncIterator[bytes], target: Path) -> Received:
    """``first`` then ``rest`` into ``target`` (removed again if it fails), hashed."""
    digest, size = hashlib.sha256(), 0
    try:
        with target.open("wb") as out:
            for chunk in first:
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            async for chunk in rest:
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return Received(staged=target, size=size, digest=digest.hexdigest())


def _boundary(content_type: str | None) -> str | None:
    """The boundary parameter of a multipart Content-Type (RFC 2046 5.1.1), if any."""
    found = re.search(r'boundary\s*=\s*("([^"]+)"|[^;\s]+)', content_type or "", re.IGNORECASE)
    if found is None:
        return None
    return found.group(2) or found.group(1)


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait: delay-seconds or an HTTP-date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _text(answer: Answer) -> str:
    return (answer.warning or answer.body[:200].decode("utf-8", "replace")).strip()
