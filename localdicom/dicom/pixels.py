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
from pydicom.pixels import get_encoder

from localdicom.dicom.decoding import decode_frames, preferred_plugin, repair
from localdicom.dicom.render import RenderParams, frame_header, render_frame
from localdicom.dicom.rewrite import convert_all, read_implicitly
from localdicom.dicom.syntaxes import JPEG_BASELINE, RLE_LOSSLESS
from localdicom.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

JPEG_QUALITY = 90
#: Targets whose pixel data is native: decompressing is all they need.
NATIVE_TARGETS = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
)


def encode_frames(path: Path, numbers: list[int], target: str) -> list[bytes]:
    """Frames ``numbers`` of the instance at ``path``, decoded and encoded in ``target``."""
    header = pydicom.dcmread(path, stop_before_pixels=True)
    decoded = decode_frames(path, header, numbers)
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
    are those that were stored. Big endian data is byte-swapped first (see
    :mod:`localdicom.dicom.rewrite`); pixel data pydicom's decoders refuse is decoded the
    way the frames resource decodes it.
    """
    ds = pydicom.dcmread(path)
    implicit = target == IMPLICIT_VR_LITTLE_ENDIAN
    if ds.original_encoding[1] is False or (not implicit and read_implicitly(ds)):
        convert_all(ds)  # raw values read big endian, or with no VR, cannot be copied
    if ds.file_meta.TransferSyntaxUID.is_compressed and "PixelData" in ds:
        _decompress(path, ds)
    ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    if target not in NATIVE_TARGETS and "PixelData" in ds:
        repair(ds)  # the encoders need what a reader may assume (see decoding.repair)
        if ds.get("PlanarConfiguration") == 1:
            _interleave(ds)
        ds.compress(target, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = target
    buffer = BytesIO()
    pydicom.dcmwrite(
        buffer,
        ds,
        enforce_file_format=True,
        implicit_vr=implicit,
        little_endian=True,
    )
    return buffer.getvalue()


def _interleave(ds: Dataset) -> None:
    """Colour by plane rewritten colour by pixel: pydicom's RLE encoder, given planes,
    writes segments that decode to other pixels."""
    array = ds.pixel_array
    ds.PixelData = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    ds.PlanarConfiguration = 0


def _decompress(path: Path, ds: Dataset) -> None:
    """Native pixel data in place of the encapsulated one, by pydicom's ``decompress``, or
    where its decoders refuse, by :func:`decode_frames` (which sets what it repairs)."""
    syntax = str(ds.file_meta.TransferSyntaxUID)
    try:
        ds.decompress(generate_instance_uid=False, decoding_plugin=preferred_plugin(syntax))
        return
    except Exception:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        repair(header)
        numbers = range(1, int(header.get("NumberOfFrames") or 1) + 1)
        frames = decode_frames(path, header, numbers)
    array = np.stack([frames[number] for number in numbers])
    ds.PixelData = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if array.dtype.itemsize > 1 else "OB"
    ds.BitsAllocated = array.dtype.itemsize * 8
    for keyword in ("SamplesPerPixel", "BitsStored", "PixelRepresentation", "NumberOfFrames"):
        if keyword in header:
            setattr(ds, keyword, header[keyword].value)
    if array.ndim == 4:  # frames x rows x columns x samples: colour, as RGB
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        ds.pop(keyword, None)


def render(
    path: Path, numbers: list[int], params: RenderParams, thumbnail_size: int | None = None
) -> list[bytes]:
    """Frames ``numbers`` rendered as images (PS3.18 8.3.5), each decoded once."""
    header = pydicom.dcmread(path, stop_before_pixels=True)
    decoded = decode_frames(path, header, numbers)
    images = {
        number: render_frame(
            array, frame_header(header, number), params, thumbnail_size=thumbnail_size
        )
        for number, array in decoded.items()
    }
    return [images[number] for number in numbers]
