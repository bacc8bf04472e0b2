"""``localdicom --version``: the version, the libraries, and which decoders handle each
compressed transfer syntax (localdicom/dicom/codecs.py); tests/test_frozen.py checks the
one-file executable says the same of its own codecs."""

from __future__ import annotations

import pydicom
from click.testing import CliRunner
from pydicom.pixels import get_decoder

from localdicom import __version__
from localdicom.cli import main
from localdicom.dicom.codecs import COMPRESSED


def test_version_names_each_compressed_syntax_and_the_decoders_pydicom_has() -> None:
    result = CliRunner().invoke(main, ["--version"])

    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"localdicom {__version__}"
    assert f"pydicom {pydicom.__version__}" in lines[1]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert set(rows) == {str(uid) for uid in COMPRESSED}
    for uid in COMPRESSED:
        try:
            plugins = get_decoder(uid).available_plugins
        except NotImplementedError:
            plugins = ()
        listed = rows[str(uid)].split(": ", 1)[1]
        assert [name.split(" (")[0] for name in listed.split(", ")] == (
            list(plugins) or ["none"]
        ), uid
