"""What several test modules share; fixtures are in tests/conftest.py.

``tests.helpers`` holds the sample files' identifiers, the settings and in-process client the
tests build an app with, a Catalog's ``prepare`` without worker processes, and what the
benchmarks also use (a free port, a process tree, synthetic CT slices): this module is the
only place the tests take those from ``benchmarks``.
The submodules group the rest by what it talks to:

* ``tests.helpers.live``: ``localdicom serve`` in a subprocess and blocking HTTP to it;
* ``tests.helpers.http``: in-process STOW and reading answers (media type parameters,
  multipart/related bodies, BulkDataURIs);
* ``tests.helpers.corpus``: pydicom's test corpus and the frames pydicom reads from it;
* ``tests.helpers.stocked``: an in-process archive holding the samples, requests sent byte for
  byte, and checks of error answers;
* ``tests.helpers.served``: the samples and a few pydicom files stored on a live server, and a
  check that it serves them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from benchmarks.dataset import ct_slice, uid, write_series
from benchmarks.servers import Server, free_port, orthanc, process_tree
from localdicom.app import Settings, make_app
from localdicom.archive import Spooled, Upload, prepare_spooled

__all__ = [
    "REPOSITORY",
    "SAMPLES",
    "SERIES_CIRCLE",
    "SERIES_SQUARE_TRIANGLE",
    "SOP_BLUE_CIRCLE",
    "SOP_GREEN_SQUARE",
    "SOP_RED_TRIANGLE",
    "STUDY_UID",
    "Server",
    "app_client",
    "app_settings",
    "ct_slice",
    "free_port",
    "orthanc",
    "prepare_here",
    "process_tree",
    "uid",
    "write_series",
]

REPOSITORY = Path(__file__).resolve().parent.parent.parent
SAMPLES = REPOSITORY / "sample_dcms"

STUDY_UID = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
SERIES_SQUARE_TRIANGLE = "1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
SERIES_CIRCLE = "1.2.826.0.1.3680043.8.498.77033797676425927098669402985243398207"
SOP_GREEN_SQUARE = "1.2.826.0.1.3680043.8.498.12714725698140337137334606354172323212"
SOP_RED_TRIANGLE = "1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395"
SOP_BLUE_CIRCLE = "1.2.826.0.1.3680043.8.498.13273713909719068980354078852867170114"


def app_settings(archive: Path, **options: Any) -> Settings:
    """Settings for a test app on ``archive``: no fsync (nothing here cuts the power), unless
    a test about durability asks for ``fsync=True``."""
    options.setdefault("fsync", False)
    return Settings(archive=archive, **options)


async def prepare_here(path: Path, held: Sequence[bytes] | None = None) -> Upload:
    """A Catalog's ``prepare`` in a thread of the test, without fsync: the worker processes'
    work without them."""
    return await asyncio.to_thread(prepare_spooled, Spooled(path, held), False)


@asynccontextmanager
async def app_client(archive: Path, **options: Any) -> AsyncIterator[TestClient]:
    """An in-process app on ``archive`` and a client for it, on the running event loop.

    For module-scoped fixtures: pytest-aiohttp's ``aiohttp_client`` is function-scoped.
    """
    client = TestClient(TestServer(make_app(app_settings(archive, **options))))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
