"""Whole-instance transcoding to the default transfer syntax (PS3.18 8.7.3.5.2).

WADO-RS answers an Accept without a ``transfer-syntax`` parameter in Explicit VR Little Endian,
so an instance stored otherwise is rewritten: decompressed with the pylibjpeg plugins through
pydicom (which also sets PhotometricInterpretation to RGB after decoding YBR JPEG), or simply
re-encoded when it is native little endian. Other targets are the pixel-data issue's work.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.pixels import get_decoder

from localdicom.dicom.uids import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
)


def can_transcode(source: str, target: str) -> bool:
    """True when an instance stored in ``source`` can be served in ``target``."""
    if source == target:
        return True
    if target != EXPLICIT_VR_LITTLE_ENDIAN or source == EXPLICIT_VR_BIG_ENDIAN:
        return False
    if source in NATIVE_TRANSFER_SYNTAXES:
        return True
    try:
        return get_decoder(source).is_available
    except NotImplementedError:
        return False


def transcode(path: Path, target: str) -> bytes:
    """The Part 10 bytes of the instance at ``path`` in ``target`` (see :func:`can_transcode`)."""
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = target
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True, little_endian=True, implicit_vr=False)
    return buffer.getvalue()
