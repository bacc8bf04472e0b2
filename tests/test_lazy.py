"""The packages that give out their names lazily (localdicom/lazy.py, PEP 562)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.helpers import REPOSITORY

LAZY = ["localdicom.archive", "localdicom.catalog", "localdicom.deid", "localdicom.importer"]


@pytest.mark.parametrize("package", LAZY)
def test_every_name_a_package_gives_out_is_there(package):
    """A name mapped to the wrong module would fail only where it is first used."""
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_an_unknown_name_is_an_attribute_error_and_a_submodule_still_imports():
    archive = importlib.import_module("localdicom.archive")
    assert not hasattr(archive, "NoSuchName")
    from localdicom.archive import sidecar  # a submodule, not a name given out

    assert sidecar.__name__ == "localdicom.archive.sidecar"


def test_a_package_imports_none_of_its_modules_until_a_name_is_asked_for():
    code = (
        "import sys, localdicom.archive as archive\n"
        "before = 'localdicom.archive.upload' in sys.modules\n"
        "archive.Upload\n"
        "print(before, 'localdicom.archive.upload' in sys.modules, 'pydicom' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "True", "True"]  # the upload's parser: pydicom
