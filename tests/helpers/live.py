"""``localdicom serve`` in a subprocess, and blocking HTTP helpers to talk to it.

A module-scoped live server lets many tests share one server and its worker pool; the HTTP
helpers are plain ``urllib`` so they also work from threads.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pydicom

from tests.helpers import free_port
from tests.helpers.http import split_multipart

TIMEOUT = 120


@dataclass
class LiveServer:
    """``localdicom serve`` in a subprocess, as a user starts it."""

    archive: Path
    port: int
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()
    #: Run the server through this command (e.g. one that drops privileges).
    command_prefix: tuple[str, ...] = ()
    #: The localdicom command: this Python's, or another (the one-file executable).
    program: tuple[str, ...] = (sys.executable, "-m", "localdicom")
    #: The server's environment; None: this process's.
    env: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [*self.command_prefix, *self.program, "serve"]
        command.append(str(self.archive))
        command += ["--port", str(self.port), "--no-fsync", *self.extra_args]
        self.log = self.archive.parent / f"server-{self.port}.log"
        self.process = subprocess.Popen(
            command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=self.env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                urllib.request.urlopen(f"{self.url}/studies?limit=1", timeout=1)
                return
            except urllib.error.HTTPError:  # it answers (a 401 under --token)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


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
    return stow_bytes(base_url, path.read_bytes())


def stow_bytes(base_url: str, data: bytes) -> Reply:
    """STOW-RS one Part 10 instance's bytes as a single application/dicom body."""
    return request(
        f"{base_url}/studies",
        method="POST",
        data=data,
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
    )


def serve_module(tmp_path_factory, name: str) -> Iterator[LiveServer]:
    """One server for a test module, with ``--overwrite``: several files of pydicom's corpus
    share UIDs, and each test stores the one it reads."""
    archive = tmp_path_factory.mktemp(name) / "archive"
    live = LiveServer(archive, free_port(), extra_args=("--overwrite",))
    live.start()
    yield live
    live.stop()


def store_file(server: LiveServer, path: Path) -> pydicom.Dataset:
    """STOW ``path`` (replacing any instance with its SOP Instance UID) and read it."""
    reply = stow_file(server.url, path)
    assert reply.status == 200, (reply.status, reply.headers.get("Warning"), reply.text)
    return pydicom.dcmread(path)
