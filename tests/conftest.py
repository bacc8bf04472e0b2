"""Shared fixtures: an in-process app, a live server in a subprocess, the sample files."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.servers import free_port
from localdicom.app import Settings, make_app

REPOSITORY = Path(__file__).resolve().parent.parent
SAMPLES = REPOSITORY / "sample_dcms"

STUDY_UID = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
SERIES_SQUARE_TRIANGLE = "1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
SERIES_CIRCLE = "1.2.826.0.1.3680043.8.498.77033797676425927098669402985243398207"
SOP_GREEN_SQUARE = "1.2.826.0.1.3680043.8.498.12714725698140337137334606354172323212"
SOP_RED_TRIANGLE = "1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395"
SOP_BLUE_CIRCLE = "1.2.826.0.1.3680043.8.498.13273713909719068980354078852867170114"


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
async def client(aiohttp_client, archive_dir: Path):
    """An aiohttp test client for a server on an empty archive."""
    return await aiohttp_client(make_app(Settings(archive=archive_dir)))


@dataclass
class LiveServer:
    """``localdicom serve`` in a subprocess, as a user starts it."""

    archive: Path
    port: int
    process: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()
    #: Run the server through this command (e.g. one that drops privileges).
    command_prefix: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [*self.command_prefix, sys.executable, "-m", "localdicom", "serve"]
        command.append(str(self.archive))
        command += ["--port", str(self.port), "--no-fsync", *self.extra_args]
        self.log = self.archive.parent / f"server-{self.port}.log"
        self.process = subprocess.Popen(
            command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                urllib.request.urlopen(f"{self.url}/studies?limit=1", timeout=1)
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


@pytest.fixture
def live_server(archive_dir: Path) -> Iterator[LiveServer]:
    """A running server on an empty archive; stopped after the test."""
    server = LiveServer(archive_dir, free_port())
    server.start()
    yield server
    server.stop()
