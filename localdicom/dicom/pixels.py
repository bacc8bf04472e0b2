"""Decoding, encoding and rendering: the CPU-heavy work, run in the worker processes.

Every function takes a file path and plain values and returns bytes, so that it can be sent
to another process. Each request decodes each frame it needs once: a frame list naming a
frame twice, or several renderings of one frame, reuse the decoded array.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import get_encoder, iter_pixels

from localdicom.dicom.render import RenderParams, render_frame
from localdicom.dicom.syntaxes import JPEG_BASELINE, RLE_LOSSLESS
from localdicom.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

JPEG_QUALITY = 90


def decode_frames(path: Path, numbers: list[int]) -> dict[int, np.ndarray]:
    """Frames (1-based) as pydicom's ``pixel_array`` gives them, each decoded once.

    Colour is RGB whatever was stored (YBR converted, as pydicom does by default).
    """
    wanted = sorted(set(numbers))
    arrays = iter_pixels(path, indices=[n - 1 for n in wanted])
    return dict(zip(wanted, arrays, strict=True))


def encode_frames(path: Path, numbers: list[int], target: str) -> list[bytes]:
    """Frames ``numbers`` of the instance at ``path``, decoded and encoded in ``target``."""
    header = pydicom.dcmread(path, stop_before_pixels=True)
    decoded = decode_frames(path, numbers)
    encoded = {number: encode_frame(array, header, target) for number, array in decoded.items()}
    return [encoded[number] for number in numbers]


def encode_frame(array: np.ndarray, header: Dataset, target: str) -> bytes:
    """One decoded frame in ``target``: native little endian, baseline JPEG, or any syntax
    pydicom has an encoder for (RLE, JPEG-LS, JPEG 2000 lossless)."""
    if target == EXPLICIT_VR_LITTLE_ENDIAN:
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    if target == JPEG_BASELINE:
        buffer = BytesIO()
        Image.fromarray(array.astype(np.uint8)).save(buffer, "JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()
    samples = array.shape[2] if array.ndim == 3 else 1
    photometric = "RGB" if samples == 3 else str(header.PhotometricInterpretation)
    options = {
        "rows": array.shape[0],
        "columns": array.shape[1],
        "samples_per_pixel": samples,
        "bits_allocated": array.dtype.itemsize * 8,
        "bits_stored": min(int(header.BitsStored), array.dtype.itemsize * 8),
        "pixel_representation": int(array.dtype.kind == "i"),
        "photometric_interpretation": photometric,
        "number_of_frames": 1,
        "planar_configuration": 0,
    }
    if target == RLE_LOSSLESS:
        options["byteorder"] = "<"
    return get_encoder(target).encode(array, **options)


def transcode(path: Path, target: str) -> bytes:
    """The Part 10 bytes of the instance at ``path`` rewritten in ``target``.

    Decompressing sets the attributes that must change with it (PhotometricInterpretation
    RGB after YBR JPEG, PlanarConfiguration); the SOP Instance UID stays: the pixel values
    are those that were stored.
    """
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed and "PixelData" in ds:
        ds.decompress(generate_instance_uid=False)
    if (
        target
        in (
            EXPLICIT_VR_LITTLE_ENDIAN,
            IMPLICIT_VR_LITTLE_ENDIAN,
            DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        )
        or "PixelData" not in ds
    ):
        ds.file_meta.TransferSyntaxUID = target
    else:
        ds.compress(target, generate_instance_uid=False)
    buffer = BytesIO()
    ds.save_as(
        buffer,
        enforce_file_format=True,
        implicit_vr=target == IMPLICIT_VR_LITTLE_ENDIAN,
        little_endian=True,
    )
    return buffer.getvalue()


def render(
    path: Path, numbers: list[int], params: RenderParams, thumbnail_size: int | None = None
) -> list[bytes]:
    """Frames ``numbers`` rendered as images (PS3.18 8.3.5), each decoded once."""
    header = pydicom.dcmread(path, stop_before_pixels=True)
    decoded = decode_frames(path, numbers)
    images = {
        number: render_frame(array, header, params, thumbnail_size=thumbnail_size)
        for number, array in decoded.items()
    }
    return [images[number] for number in numbers]
