"""The load test of ``benchmarks/load.py`` in a shortened form: 10 s at concurrency 16 on a
live server (``--no-fsync``), a mix of STOW, QIDO, WADO, metadata and frames; zero errors.

``python -m benchmarks.load`` runs the full 60 s and prints the same table.
"""

from __future__ import annotations

import pytest

from benchmarks.load import OPERATIONS, format_report, run_load
from tests.helpers.live import LiveServer

pytestmark = pytest.mark.slow

DURATION = 10
CONCURRENCY = 16


async def test_short_load_run_has_no_errors(live_server: LiveServer):
    figures = await run_load(live_server.url, duration=DURATION, concurrency=CONCURRENCY)
    report = format_report(figures)
    print("\n" + report)
    assert figures.error_count == 0, report
    for operation in OPERATIONS:
        assert len(figures.latencies[operation]) >= 10, report
    assert live_server.process is not None and live_server.process.poll() is None
    log = live_server.log.read_text()
    assert "Traceback" not in log and " 500 " not in log
