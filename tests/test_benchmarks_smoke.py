"""The benchmarks run, in their smallest size: they are measured by hand, never here.

The comparison with Orthanc needs the Debian packages orthanc, orthanc-dicomweb and
orthanc-gdcm, which .ci/run installs; elsewhere the test skips and says so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPOSITORY

pytestmark = [pytest.mark.external, pytest.mark.slow]


@pytest.mark.skipif(
    shutil.which("Orthanc") is None and not os.environ.get("CI"),
    reason="Orthanc is not installed (apt-get install orthanc orthanc-dicomweb orthanc-gdcm)",
)
def test_compare_smoke_runs_and_localdicom_answers_everything_right():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--smoke"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| ")]
    measured = [row for row in rows if re.fullmatch(r"\d+/\d+", row[-2].strip())]
    assert len(measured) >= 20, result.stdout
    for row in measured:
        assert row[-2].strip().endswith("/0"), f"localdicom answered wrongly: {'|'.join(row)}"
