"""Shared fixtures: an in-process app, a live server in a subprocess, an archive folder.

What the tests share besides fixtures (sample UIDs, LiveServer, HTTP helpers) is in
tests/helpers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localdicom.app import make_app
from tests.helpers import app_settings, free_port
from tests.helpers.live import LiveServer


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
async def client(aiohttp_client, archive_dir: Path):
    """An aiohttp test client for a server on an empty archive."""
    return await aiohttp_client(make_app(app_settings(archive_dir)))


@pytest.fixture
def live_server(archive_dir: Path) -> Iterator[LiveServer]:
    """A running server on an empty archive; stopped after the test."""
    server = LiveServer(archive_dir, free_port())
    server.start()
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed browser test reports what its page saw and waited for, and the end of its
    live server's log: a wait that timed out says nothing of why."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    arguments = getattr(item, "funcargs", {})
    problems = getattr(arguments.get("page"), "problems", None)
    if problems is not None:
        report.sections.append(("the page", problems.report()))
    server = arguments.get("server", arguments.get("live_server"))
    log = getattr(server, "log", None)
    if isinstance(log, Path) and log.exists():
        tail = log.read_text(errors="replace").splitlines()[-60:]
        report.sections.append(("the end of the server's log", "\n".join(tail)))
