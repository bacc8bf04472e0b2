"""Pixel data decoded as pydicom's ``pixel_array`` gives it, for every file pydicom can read.

Three ways are tried in turn, the cheapest first:

1. pydicom reading the file itself (``iter_pixels`` on the path): only the frames asked for
   are read, and pydicom's decoder plugins are tried in their own order.
2. pydicom decoding the whole dataset it read, as ``Dataset.pixel_array`` does: it is more
   lenient (an encapsulation whose Basic Offset Table item is damaged, a deflated file, a
   pixel representation the J2K stream contradicts) and decodes what the first way refuses.
3. GDCM reading the whole file (python-gdcm), where installed: it decodes JPEG streams both
   pydicom plugins refuse (a 12-bit JPEG Extended stream whose scan libjpeg rejects, and
   which pydicom does not hand to GDCM).

Attributes the decoders need but the file lacks or spoils take the value the standard's
readers assume (PS3.3 C.7.6.3 and C.7.6.6): unsigned data, one frame, one sample. Such a
header goes straight to the second way, where the repaired values are used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import convert_color_space, get_decoder, iter_pixels
from pydicom.uid import JPEG2000TransferSyntaxes

from localdicom.dicom.uids import NATIVE_TRANSFER_SYNTAXES

try:
    import gdcm
except ImportError:  # an optional decoder
    gdcm = None

logger = logging.getLogger(__name__)

#: JPEG 2000 and HTJ2K (PS3.5 A.4.4, A.4.11).
JPEG_2000_SYNTAXES = frozenset(str(uid) for uid in JPEG2000TransferSyntaxes)

#: GDCM's scalar types as numpy's.
_GDCM_DTYPES = {
    "UINT8": "u1",
    "INT8": "i1",
    "UINT16": "<u2",
    "INT16": "<i2",
    "UINT32": "<u4",
    "INT32": "<i4",
    "FLOAT32": "<f4",
    "FLOAT64": "<f8",
}


class UndecodableError(ValueError):
    """No decoder could turn the pixel data into the frames asked for."""


def repair(ds: Dataset) -> bool:
    """Give ``ds`` (a header or a whole dataset) usable pixel description attributes, in place;
    True if any was missing or unreadable.

    Pixel Representation absent: unsigned (its Enumerated Value 0, PS3.3 C.7.6.3.1); Number of
    Frames absent or not a number: one frame (C.7.6.6: absent means a single frame; the
    sidecar counts frames the same way); Samples per Pixel, Photometric Interpretation, Bits
    Stored and Planar Configuration from the others.
    """
    changed = False
    for keyword, value in _defaults(ds).items():
        try:
            current = ds.get(keyword)
            usable = current is not None and current != "" and int(current) >= 0
            if keyword == "NumberOfFrames":
                usable = usable and int(current) >= 1
        except (TypeError, ValueError):
            usable = False
        if not usable:
            ds.pop(keyword, None)
            setattr(ds, keyword, value)
            changed = True
    if not str(ds.get("PhotometricInterpretation") or "").strip():
        samples = int(ds.SamplesPerPixel)
        ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
        changed = True
    return changed


def _defaults(ds: Dataset) -> dict[str, int]:
    photometric = str(ds.get("PhotometricInterpretation") or "").upper()
    colour = photometric.startswith(("RGB", "YBR", "HSV"))
    defaults = {
        "PixelRepresentation": 0,
        "NumberOfFrames": 1,
        "SamplesPerPixel": 3 if colour else 1,
    }
    bits_allocated = ds.get("BitsAllocated")
    if isinstance(bits_allocated, int):
        defaults["BitsStored"] = bits_allocated
    if "NumberOfFrames" not in ds:
        del defaults["NumberOfFrames"]  # absent is valid: one frame
    if colour:
        defaults["PlanarConfiguration"] = 0
    return defaults


def preferred_plugin(syntax: str) -> str:
    """The pydicom decoder plugin tried first for ``syntax``, or "" for pydicom's own order.

    Once python-gdcm is installed pydicom asks GDCM first for JPEG, JPEG-LS and JPEG 2000
    alike. For the JPEG family that is the better choice (as fast or faster, and BSD:
    ``python -m benchmarks.jpeg_decoders``); for JPEG 2000 pylibjpeg-openjpeg is faster on
    most files, so it stays first there.
    """
    if syntax in JPEG_2000_SYNTAXES and "pylibjpeg" in get_decoder(syntax).available_plugins:
        return "pylibjpeg"
    return ""


def decode_frames(path: Path, header: Dataset, numbers: Iterable[int]) -> dict[int, np.ndarray]:
    """Frames (1-based) as pydicom's ``pixel_array`` gives them, each decoded once; colour is
    RGB whatever was stored (YBR converted, as pydicom does by default).

    ``header`` is the instance's header read without pixel data; it is repaired in place (see
    :func:`repair`), so that a caller rendering the frames uses the same values.
    """
    wanted = sorted(set(numbers))
    syntax = str(header.file_meta.TransferSyntaxUID)
    plugins = list(dict.fromkeys([preferred_plugin(syntax), ""]))
    failures: list[str] = []
    if not repair(header):
        frames = _first_decoded(path, wanted, plugins, failures)
        if frames is not None:
            return frames
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
    else:
        repair(ds)
        frames = _first_decoded(ds, wanted, plugins, failures)
        if frames is not None:
            return frames
    if gdcm is not None and syntax not in NATIVE_TRANSFER_SYNTAXES:
        try:
            return decode_with_gdcm(path, wanted)
        except Exception as exc:
            failures.append(f"GDCM: {exc}")
    logger.info("%s cannot be decoded: %s", path, "; ".join(failures))
    raise UndecodableError(_summary(failures))


def _first_decoded(
    source: Path | Dataset, wanted: list[int], plugins: list[str], failures: list[str]
) -> dict[int, np.ndarray] | None:
    """The frames decoded from ``source`` by the first plugin that can, or None; what each
    failing plugin said is added to ``failures``."""
    for plugin in plugins:
        try:
            frames = iter_pixels(source, indices=[n - 1 for n in wanted], decoding_plugin=plugin)
            return dict(zip(wanted, frames, strict=True))
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    return None


def _summary(failures: list[str]) -> str:
    """One line: what each way said, shortened (pydicom's messages run over many lines)."""
    text = " / ".join(" ".join(failure.split()) for failure in dict.fromkeys(failures))
    return text if len(text) <= 300 else text[:297] + "..."


def decode_with_gdcm(path: Path, wanted: list[int]) -> dict[int, np.ndarray]:
    """The frames of the whole file decoded by GDCM, in pydicom's layout: frames x rows x
    columns (x samples, interleaved), YBR_FULL and YBR_FULL_422 converted to RGB."""
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise UndecodableError("GDCM cannot read the file")
    image = reader.GetImage()
    buffer = image.GetBuffer()
    if not buffer:
        raise UndecodableError("GDCM cannot decode the pixel data")
    data = buffer.encode("utf-8", "surrogateescape")  # GDCM hands the bytes over as a str
    pixel_format = image.GetPixelFormat()
    dtype = np.dtype(_GDCM_DTYPES[pixel_format.GetScalarTypeAsString()])
    samples = pixel_format.GetSamplesPerPixel()
    columns, rows = image.GetDimension(0), image.GetDimension(1)
    count = image.GetDimension(2) if image.GetNumberOfDimensions() > 2 else 1
    array = np.frombuffer(data, dtype, count=count * rows * columns * samples)
    photometric = image.GetPhotometricInterpretation().GetString().strip()
    shape = (rows, columns, samples)
    frames = {number: _gdcm_frame(array, number, shape, image) for number in wanted}
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        frames = {n: convert_color_space(f, "YBR_FULL", "RGB") for n, f in frames.items()}
    return frames


def _gdcm_frame(
    array: np.ndarray, number: int, shape: tuple[int, int, int], image: Any
) -> np.ndarray:
    rows, columns, samples = shape
    size = rows * columns * samples
    if number * size > array.size:
        raise UndecodableError(f"GDCM decoded fewer frames than frame {number}")
    frame = array[(number - 1) * size : number * size]
    if samples == 1:
        return frame.reshape(rows, columns).copy()
    if image.GetPlanarConfiguration() == 1:
        return np.moveaxis(frame.reshape(samples, rows, columns), 0, -1).copy()
    return frame.reshape(rows, columns, samples).copy()
