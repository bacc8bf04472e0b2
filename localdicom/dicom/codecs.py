"""Which compressed transfer syntaxes this installation decodes, and with which library.

What ``localdicom --version`` prints: the same answer for a pip install and for the one-file
executable, so a user (or a test) can tell that the codecs made it into either. It asks
pydicom's decoders which of their plugins can run here (``Decoder.available_plugins``), and
names the library behind pydicom's "pylibjpeg" plugin (pylibjpeg only dispatches, to
pylibjpeg-openjpeg, pylibjpeg-rle or the GPL pylibjpeg-libjpeg, whichever is installed).
"""

from __future__ import annotations

from importlib import metadata

from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLETransferSyntaxes,
)

#: The compressed transfer syntaxes pydicom has decoders for (PS3.5 A.4 and 8.2), in the
#: order of the standard's table.
COMPRESSED = [*JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes, *JPEG2000TransferSyntaxes]
COMPRESSED += list(RLETransferSyntaxes)

#: The distributions whose version ``--version`` names, when installed.
LIBRARIES = [
    "pydicom",
    "pynetdicom",
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pylibjpeg-libjpeg",
    "python-gdcm",
    "pyjpegls",
    "pillow",
    "numpy",
]


def decoders() -> list[tuple[str, str, list[str]]]:
    """(UID, name, plugins that decode it here) for each compressed transfer syntax, in the
    order pydicom tries them; an empty list when none can."""
    behind = _pylibjpeg_plugins()
    rows = []
    for uid in COMPRESSED:
        try:
            plugins = list(get_decoder(uid).available_plugins)
        except NotImplementedError:  # no decoder at all in this pydicom
            plugins = []
        named = [
            f"pylibjpeg ({'+'.join(behind[uid])})"
            if plugin == "pylibjpeg" and uid in behind
            else plugin
            for plugin in plugins
        ]
        rows.append((str(uid), uid.name, named))
    return rows


def libraries() -> list[tuple[str, str]]:
    """(distribution, version) of each of :data:`LIBRARIES` installed."""
    found = []
    for name in LIBRARIES:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return found


def report() -> list[str]:
    """The lines ``--version`` prints after the version itself."""
    lines = ["Libraries: " + ", ".join(f"{name} {version}" for name, version in libraries())]
    lines.append("Decodes (transfer syntax: pydicom plugins that can decode it here):")
    for uid, name, plugins in decoders():
        lines.append(f"  {uid:<23} {name}: {', '.join(plugins) or 'none'}")
    return lines


def _pylibjpeg_plugins() -> dict[str, list[str]]:
    """Transfer syntax UID -> the pylibjpeg plugins (by entry point name) that decode it."""
    try:
        from pylibjpeg.utils import get_pixel_data_decoders
    except ImportError:
        return {}
    return {str(uid): sorted(found) for uid, found in get_pixel_data_decoders(2).items()}
