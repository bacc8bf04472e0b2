"""The layering of README's "How it works", checked by import-linter's contracts in
pyproject.toml: web/ reaches the archive only through the Catalog, and no layer imports one
above it. The second test proves the check can fail: a copy of the package with one handler
importing the archive directly breaks the contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPOSITORY


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package under ``root``, with the repository's contracts."""
    shutil.copy(REPOSITORY / "pyproject.toml", root / "pyproject.toml")
    run = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", run, "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_its_layers(tmp_path: Path) -> None:
    shutil.copytree(REPOSITORY / "localdicom", tmp_path / "localdicom")
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_handler_importing_the_archive_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(REPOSITORY / "localdicom", tmp_path / "localdicom")
    handler = tmp_path / "localdicom" / "web" / "delete.py"
    handler.write_text(handler.read_text() + "\nfrom localdicom.archive import Archive  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    contract = "HTTP and DICOM handlers reach the archive only through the Catalog"
    assert f"{contract} BROKEN" in result.stdout
    assert "localdicom.web.delete -> localdicom.archive" in result.stdout
