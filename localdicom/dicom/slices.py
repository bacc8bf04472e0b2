"""The order in which a viewer shows a series' frames, and each frame's own window: pure, from
the instances' DICOM JSON (PS3.18 F.2), no HTTP, no disk.

Instances come by Instance Number (PS3.3 C.7.6.1), then by their place along the slice normal:
the Image Position (Patient) projected on the cross product of the row and column direction
cosines of Image Orientation (Patient) (PS3.3 C.7.6.2.1.1), so that slices without numbers,
or with repeated ones, still come in space order. The frames of a multi-frame instance follow
one another in their stored order (PS3.3 C.7.6.6). A frame's window is the first Window
Center and Width of its instance (PS3.3 C.11.2.1.2), or of the Frame VOI LUT macro of its
Per-Frame or Shared Functional Groups (C.7.6.16.2.10), or None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]

INSTANCE_NUMBER = "00200013"
POSITION = "00200032"
ORIENTATION = "00200037"
WINDOW_CENTER, WINDOW_WIDTH = "00281050", "00281051"
NUMBER_OF_FRAMES = "00280008"
SHARED_GROUPS, PER_FRAME_GROUPS = "52009229", "52009230"
FRAME_VOI_LUT = "00289132"


@dataclass(frozen=True)
class Frame:
    """One frame to show: its instance, its number (from 1) and its own window, if any."""

    instance: str
    number: int
    window: tuple[float, float] | None


def ordered_frames(instances: list[tuple[str, Json, int]]) -> list[Frame]:
    """The frames of ``instances`` (SOP Instance UID, DICOM JSON, number of frames) in viewing
    order; instances without frames (a report) are left out."""
    normal = next(filter(None, (_normal(metadata) for _, metadata, _ in instances)), None)
    keyed = [
        (_instance_key(metadata, normal, sop), sop, metadata, count)
        for sop, metadata, count in instances
        if count > 0
    ]
    keyed.sort(key=lambda item: item[0])
    frames = []
    for _, sop, metadata, count in keyed:
        frames += [Frame(sop, number, window(metadata, number)) for number in range(1, count + 1)]
    return frames


def _instance_key(metadata: Json, normal: tuple[float, ...] | None, sop: str) -> tuple:
    number = _number(first(metadata, INSTANCE_NUMBER))
    place = math.inf
    position = numbers(metadata, POSITION)
    if normal is not None and len(position) == 3:
        place = sum(p * n for p, n in zip(position, normal, strict=True))
    return (number, place, sop)


def _normal(metadata: Json) -> tuple[float, ...] | None:
    """The slice normal of an instance: row cosines x column cosines."""
    cosines = numbers(metadata, ORIENTATION)
    if len(cosines) != 6:
        return None
    (a, b, c), (d, e, f) = cosines[:3], cosines[3:]
    return (b * f - c * e, c * d - a * f, a * e - b * d)


def window(metadata: Json, number: int = 1) -> tuple[float, float] | None:
    """The first window of frame ``number``: the instance's own, else its functional
    groups' (per-frame first, then shared), else None."""
    found = _window_of(metadata)
    if found is not None:
        return found
    per_frame = metadata.get(PER_FRAME_GROUPS, {}).get("Value") or []
    shared = metadata.get(SHARED_GROUPS, {}).get("Value") or []
    groups = ([per_frame[number - 1]] if number <= len(per_frame) else []) + shared[:1]
    for group in groups:
        for item in (group or {}).get(FRAME_VOI_LUT, {}).get("Value") or []:
            found = _window_of(item or {})
            if found is not None:
                return found
    return None


def _window_of(metadata: Json) -> tuple[float, float] | None:
    center, width = numbers(metadata, WINDOW_CENTER), numbers(metadata, WINDOW_WIDTH)
    if not center or not width or width[0] <= 0:
        return None
    return (center[0], width[0])


def full_range(metadata: Json) -> tuple[float, float]:
    """A window (center, width) over every value the instance's pixels can hold, through its
    Modality LUT (Bits Stored, Pixel Representation, Rescale Slope and Intercept; PS3.3
    C.7.6.3, C.11.1): where a viewer starts when an image has no window of its own."""
    bits = min(max(int((numbers(metadata, "00280101") or [8.0])[0]), 1), 32)
    signed = first(metadata, "00280103") == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope = (numbers(metadata, "00281053") or [1.0])[0] or 1.0
    intercept = (numbers(metadata, "00281052") or [0.0])[0]
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ((ends[0] + ends[1]) / 2, max(ends[1] - ends[0], 1.0))


def first(metadata: Json, tag: str) -> Any:
    values = metadata.get(tag, {}).get("Value") or [None]
    return values[0]


def numbers(metadata: Json, tag: str) -> list[float]:
    """The values of a numeric attribute as floats ([] when absent or not numbers)."""
    try:
        return [float(value) for value in metadata.get(tag, {}).get("Value") or []]
    except (TypeError, ValueError):
        return []


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.inf
