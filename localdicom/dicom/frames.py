"""Frames of native pixel data (PS3.5 8.1.1, PS3.18 8.1.5 frame lists).

Encapsulated frames and most native frames are served straight from the byte ranges in the
sidecar. What remains here: the frame list of a URL, byte order for big endian instances, and
frames that have no byte range (deflated files, bit-packed multi-frame data), which need the
dataset parsed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom


class FrameListError(ValueError):
    """A frame list that is not a comma-separated list of frame numbers."""


def parse_frame_list(text: str, limit: int = 100_000) -> list[int]:
    """Frame numbers (1-based, in the order asked) from e.g. ``"1,3,2"``."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or len(item) > 9 or int(item) == 0:
            raise FrameListError(
                f"frame list {text[:80]!r} must be frame numbers from 1 separated by commas"
            )
        numbers.append(int(item))
    if len(numbers) > limit:
        raise FrameListError(f"at most {limit} frames may be asked for at once")
    return numbers


def to_little_endian(frame: bytes, bits_allocated: int) -> bytes:
    """Swap the byte order of a big endian frame's pixel cells."""
    if bits_allocated not in (16, 32, 64):
        return frame
    return (
        np.frombuffer(frame, dtype=f">u{bits_allocated // 8}")
        .astype(f"<u{bits_allocated // 8}")
        .tobytes()
    )


def frames_by_parsing(path: Path, numbers: list[int]) -> list[bytes]:
    """Native frames read through pydicom: for files without usable byte ranges."""
    ds = pydicom.dcmread(path)
    data = ds.PixelData
    bits = int(ds.BitsAllocated)
    frame_bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits
    if frame_bits % 8 == 0:
        size = frame_bits // 8
        frames = [data[(n - 1) * size : n * size] for n in numbers]
    else:
        bits_array = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        frames = [
            np.packbits(
                bits_array[(n - 1) * frame_bits : n * frame_bits], bitorder="little"
            ).tobytes()
            for n in numbers
        ]
    if not ds.original_encoding[1]:  # big endian
        frames = [to_little_endian(frame, bits) for frame in frames]
    return frames
