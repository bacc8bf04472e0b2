"""Frames of native pixel data (PS3.5 8.1.1, PS3.18 8.1.5 frame lists).

Encapsulated frames and most native frames are served straight from the byte ranges in the
sidecar. What remains here: the frame list of a URL, byte order for big endian instances, and
frames that have no byte range (deflated files, bit-packed multi-frame data), which need the
dataset parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom


class FrameListError(ValueError):
    """A frame list that is not a comma-separated list of frame numbers."""


def parse_frame_list(text: str, limit: int = 100_000) -> list[int]:
    """Frame numbers (1-based, in the order asked) from e.g. ``"1,3,2"``."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()) or len(item) > 9 or int(item) == 0:
            raise FrameListError(
                f"frame list {text[:80]!r} must be frame numbers from 1 separated by commas"
            )
        numbers.append(int(item))
    if len(numbers) > limit:
        raise FrameListError(f"at most {limit} frames may be asked for at once")
    return numbers


def swap_unit(bits_allocated: int, vr: str) -> int:
    """Bytes per unit whose order big endian reverses: none for OB, 16-bit words for OW data
    of up to 16 bits (even 8-bit data, PS3.5 7.3), the pixel cell above that or for OF/OD."""
    if vr == "OB":
        return 1
    if vr == "OW":
        return max(2, bits_allocated // 8)
    return {"OF": 4, "OD": 8}.get(vr, max(1, bits_allocated // 8))


#: Bytes per value of the VRs whose values are bytes of numbers (PS3.5 Table 6.2-1).
VALUE_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def value_unit(vr: str, pixel_bits: int | None = None) -> int:
    """Bytes per value whose order big endian reverses in an element of ``vr``: for pixel
    data (``pixel_bits``, its Bits Allocated, given) :func:`swap_unit`, else the VR's."""
    if pixel_bits is not None:
        return swap_unit(pixel_bits, vr)
    return VALUE_SIZES.get(vr, 1)


#: BulkDataURI paths of the top-level pixel data elements.
PIXEL_DATA_PATHS = frozenset({"7FE00010", "7FE00008", "7FE00009"})


def bulk_unit(metadata: dict[str, Any], path: str) -> int:
    """:func:`value_unit` of the bulk value at ``path`` (a BulkDataURI path: tags and item
    indexes, ``00540016/0/00181072``) of the dataset whose DICOM JSON is ``metadata``."""
    element: dict[str, Any] = {"Value": [metadata]}
    steps = path.split("/")
    for key, index in zip(steps[::2], ["0", *steps[1::2]], strict=False):
        element = element["Value"][int(index)][key]
    bits = int(metadata.get("00280100", {}).get("Value", [16])[0])
    return value_unit(element.get("vr", "OB"), bits if path in PIXEL_DATA_PATHS else None)


def to_little_endian(data: bytes, unit: int) -> bytes:
    """Reverse the byte order of each ``unit``-byte value; ``data`` starts on a unit boundary."""
    if unit == 1:
        return data
    whole = len(data) - len(data) % unit
    swapped = np.frombuffer(data, f">u{unit}", count=whole // unit).astype(f"<u{unit}")
    return swapped.tobytes() + data[whole:]


def read_big_endian_frame(
    read: Callable[[int, int], bytes], pixel_start: int, span: tuple[int, int], unit: int
) -> bytes:
    """A frame of big endian pixel data in little endian order.

    A frame of odd-sized 8-bit OW data can start or end inside a word, so whole words around
    it are read, swapped and trimmed.
    """
    offset, length = span
    lead = (offset - pixel_start) % unit
    end = offset + length
    end += (-(end - pixel_start)) % unit
    data = to_little_endian(read(offset - lead, end - offset + lead), unit)
    return data[lead : lead + length]


def frames_by_parsing(path: Path, numbers: list[int]) -> list[bytes]:
    """Native frames read through pydicom: for files without usable byte ranges."""
    ds = pydicom.dcmread(path)
    element = ds["PixelData"]
    data = element.value
    bits = int(ds.BitsAllocated)
    if not ds.original_encoding[1]:  # big endian
        data = to_little_endian(data, swap_unit(bits, element.VR))
    frame_bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits
    if frame_bits % 8 == 0:
        size = frame_bits // 8
        return [data[(n - 1) * size : n * size] for n in numbers]
    bits_array = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    return [
        np.packbits(bits_array[(n - 1) * frame_bits : n * frame_bits], bitorder="little").tobytes()
        for n in numbers
    ]
