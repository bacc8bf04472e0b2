"""Whole files as one multipart answer (a WADO-RS series): every byte arrives, in order,
whether the client reads as fast as the server sends or lets the socket fill up; a file that
no longer has the length the headers promised closes the connection instead."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from localdicom.web import multipart
from localdicom.web.multipart import FilePart, send_files
from tests.helpers.http import split_multipart

FILE_BYTES = 3 * 1024 * 1024  # four of them: more than the two sockets hold while nobody reads


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / f"{n}.bin" for n in range(4)]
    for path in paths:
        path.write_bytes(os.urandom(FILE_BYTES))
    return paths


@pytest.fixture
async def server(files: list[Path]) -> TestServer:
    parts = [FilePart("application/octet-stream", path, path.stat().st_size) for path in files]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_files(request, "application/octet-stream", parts)

    app = web.Application()
    app.router.add_get("/", handler)
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def loop_sendfile(monkeypatch) -> list[int]:
    """The offsets at which the event loop's own sendfile took over a file."""
    loop = asyncio.get_running_loop()
    original = loop.sendfile
    offsets: list[int] = []

    async def sendfile(transport, file, offset=0, count=None, **options):
        offsets.append(offset)
        return await original(transport, file, offset, count, **options)

    monkeypatch.setattr(loop, "sendfile", sendfile)
    return offsets


def get_slowly(port: int) -> tuple[str, bytes]:
    """GET / with a small receive window, reading only after a pause: the server's socket
    fills up first. Returns the Content-Type and the body."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)
        received = bytearray()
        while chunk := sock.recv(1 << 16):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    headers = dict(
        line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line
    )
    assert int(headers["Content-Length"]) == len(body)
    return headers["Content-Type"], body


async def test_a_client_that_lets_the_socket_fill_gets_every_byte(
    server, files, loop_sendfile
) -> None:
    content_type, body = await asyncio.to_thread(get_slowly, server.port)
    assert [data for _, data in split_multipart(content_type, body)] == [
        path.read_bytes() for path in files
    ]
    assert any(0 < offset < FILE_BYTES for offset in loop_sendfile), (
        "the event loop took over in the middle of a file"
    )


async def test_a_client_reading_at_once_gets_every_byte(server, files) -> None:
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as answer:
        body = await answer.read()
    assert [data for _, data in split_multipart(answer.headers["Content-Type"], body)] == [
        path.read_bytes() for path in files
    ]


async def test_a_file_cut_short_after_it_was_opened_closes_the_connection(
    server, files, monkeypatch, caplog
) -> None:
    opened = multipart._open_unchanged

    def open_then_cut(parts):
        handles = opened(parts)
        os.truncate(files[2], FILE_BYTES // 2)
        return handles

    monkeypatch.setattr(multipart, "_open_unchanged", open_then_cut)
    async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as answer:
        with pytest.raises(aiohttp.ClientPayloadError):
            await answer.read()
    assert f"{files[2]} changed while being sent" in caplog.text
