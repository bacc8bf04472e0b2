"""Rendered and thumbnail images of one frame (PS3.18 8.3.5, thumbnails PS3.18 10.4.3.3.4).

A WADO-RS ``/rendered`` or ``/thumbnail`` resource is a frame turned into a consumer image: the
grayscale pipeline of PS3.4 N.2 (Modality LUT, VOI LUT, polarity) or the colour one (palette or
true colour scaled to 8 bits), then the source region and viewport of PS3.18 8.3.5.1.3, then
JPEG, PNG or GIF. This module is pure: the caller decodes the frame, reads the header and sends
the bytes; a :class:`RenderError` is a request the client can fix (a 400 answer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

__all__ = [
    "RENDERED_MEDIA_TYPES",
    "RenderError",
    "RenderParams",
    "frame_header",
    "parse_render_params",
    "render_frame",
]

RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")

# PS3.18 8.3.5.1.4: the shapes a window may have, as PS3.3 C.11.2.1.2 defines them.
_WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
# Upscaling to a client's viewport allocates vw x vh pixels; bound it so one request cannot
# ask for gigabytes.
_MAX_VIEWPORT = 8192
_DEFAULT_QUALITY = 90
_WINDOW_HINT = (
    "window must be center,width[,function] with decimal center and width and function one of "
    "linear, linear-exact or sigmoid, e.g. window=40,400 or window=40,400,sigmoid"
)
_VIEWPORT_HINT = (
    "viewport must be vw,vh or vw,vh,sx,sy,sw,sh in whole pixels, e.g. viewport=512,512 or "
    "viewport=256,256,0,0,100,100 (a negative sw or sh flips the region)"
)
# Fallbacks for instance attributes too broken to use: render something rather than fail.
_HEADER_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError)


class RenderError(ValueError):
    """A rendering parameter the client got wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class RenderParams:
    """What a client asked for: media type, VOI window, viewport and JPEG quality.

    ``window`` is ``(center, width, function)`` in the units of the Modality LUT output, the
    same units as the instance's Window Center and Width (PS3.18 8.3.5.1.4). ``viewport`` is
    ``(vw, vh)`` or ``(vw, vh, sx, sy, sw, sh)`` (PS3.18 8.3.5.1.3): a 0 for vw or vh leaves that
    dimension free, a 0 for sw or sh means "to the image's edge", a negative one flips.
    """

    media_type: str = "image/jpeg"
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, ...] | None = None
    quality: int = _DEFAULT_QUALITY

    def __post_init__(self) -> None:
        # Params built directly (not parsed) get the same guarantees, so render_frame never
        # meets a state it cannot render.
        if self.media_type not in RENDERED_MEDIA_TYPES:
            raise RenderError(
                f"media type {self.media_type!r} cannot be rendered; use one of "
                + ", ".join(RENDERED_MEDIA_TYPES)
            )
        if not 1 <= self.quality <= 100:
            raise RenderError(f"quality must be a whole number from 1 to 100, not {self.quality}")
        if self.window is not None:
            _check_window(*self.window)
        if self.viewport is not None:
            _check_viewport(self.viewport)


def parse_render_params(query: Mapping[str, str], media_type: str) -> RenderParams:
    """The rendering parameters of a request's query (PS3.18 8.3.5.1, Table 8.3.5-1).

    Accepts the WADO-RS keys ``window``, ``viewport`` and ``quality`` and, because clients
    ported from WADO-URI (PS3.18 chapter 9) still send them, ``windowCenter``/``windowWidth``,
    ``rows``/``columns`` and ``imageQuality``; giving both spellings of one parameter is an
    error rather than a silent choice. Other keys (``annotation``, ``iccprofile``, ``charset``,
    ...) are left to the caller: PS3.18 8.3.5.1 lets an origin server not support them.
    ``media_type`` is the negotiated rendered media type.
    """
    normalized = media_type.split(";", 1)[0].strip().lower()
    if normalized not in RENDERED_MEDIA_TYPES:
        raise RenderError(
            f"media type {media_type!r} cannot be rendered; use one of "
            + ", ".join(RENDERED_MEDIA_TYPES)
        )
    return RenderParams(
        media_type=normalized,
        window=_parse_window(query),
        viewport=_parse_viewport(query),
        quality=_parse_quality(query),
    )


def render_frame(
    pixels: np.ndarray,
    ds: pydicom.Dataset,
    params: RenderParams,
    *,
    thumbnail_size: int | None = None,
) -> bytes:
    """One frame as an encoded JPEG, PNG or GIF image.

    ``pixels`` is the frame as :func:`pydicom.pixels.pixel_array` returns it (YBR already
    converted to RGB); ``ds`` is the instance's header. ``thumbnail_size`` makes this a
    thumbnail (PS3.18 10.4.3.3.4 leaves its form to the server): without a viewport it fits
    the image within a square of that many pixels, and a thumbnail is never enlarged.
    Grayscale comes out as mode "L" (MONOCHROME1 inverted to read like MONOCHROME2), colour
    as "RGB".
    """
    if thumbnail_size is not None and thumbnail_size < 1:
        raise ValueError(f"thumbnail_size must be at least 1, not {thumbnail_size}")
    display = _display_values(pixels, ds, params.window)
    viewport = params.viewport
    if viewport is not None and len(viewport) == 6:
        display = _source_region(display, viewport)
    image = Image.fromarray(np.ascontiguousarray(display))
    if viewport is not None:
        size = _fit(image.size, viewport[0], viewport[1], enlarge=thumbnail_size is None)
    elif thumbnail_size is not None:
        size = _fit(image.size, thumbnail_size, thumbnail_size, enlarge=False)
    else:
        size = image.size
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _encode(image, params)


# --- query parameters ---------------------------------------------------------------------


def _parse_window(query: Mapping[str, str]) -> tuple[float, float, str] | None:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.4) or WADO-URI's pair of keys.

    The standard's syntax names all three values; the function is optional here and defaults
    to linear, the default of VOI LUT Function (PS3.3 C.11.2.1.3).
    """
    text = query.get("window")
    center_text = query.get("windowCenter")
    width_text = query.get("windowWidth")
    if text is not None:
        if center_text is not None or width_text is not None:
            raise RenderError(
                "give the window either as window=center,width[,function] or as windowCenter "
                "and windowWidth, not both"
            )
        parts = [part.strip() for part in text.split(",")]
        if len(parts) not in (2, 3):
            raise RenderError(f"{_WINDOW_HINT} (got {text[:80]!r})")
        center = _decimal(parts[0], _WINDOW_HINT, text)
        width = _decimal(parts[1], _WINDOW_HINT, text)
        function = parts[2].lower() if len(parts) == 3 and parts[2] else "linear"
        if function not in _WINDOW_FUNCTIONS:
            raise RenderError(f"{_WINDOW_HINT} (got {text[:80]!r})")
        _check_window(center, width, function)
        return center, width, function
    if center_text is None and width_text is None:
        return None
    if center_text is None or width_text is None:
        raise RenderError("windowCenter and windowWidth must be given together")
    hint = "windowCenter and windowWidth must be decimal numbers, e.g. windowCenter=40"
    center = _decimal(center_text.strip(), hint, center_text)
    width = _decimal(width_text.strip(), hint, width_text)
    _check_window(center, width, "linear")
    return center, width, "linear"


def _check_window(center: float, width: float, function: str) -> None:
    """Width limits of PS3.3 C.11.2.1.2.1 (linear: >= 1) and C.11.2.1.3 (others: > 0)."""
    if function not in _WINDOW_FUNCTIONS:
        raise RenderError(f"{_WINDOW_HINT} (got function {function!r})")
    if not (math.isfinite(center) and math.isfinite(width)):
        raise RenderError(f"{_WINDOW_HINT} (center and width must be finite)")
    if function == "linear" and width < 1:
        raise RenderError(f"a linear window's width must be at least 1, not {width:g}")
    if width <= 0:
        raise RenderError(f"a {function} window's width must be greater than 0, not {width:g}")


def _parse_viewport(query: Mapping[str, str]) -> tuple[int, ...] | None:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3) or WADO-URI's ``rows``/``columns``.

    Empty sx, sy, sw or sh take their defaults (0, 0 and "to the edge", stored as 0). WADO-URI's
    rows and columns are each a maximum with the aspect ratio kept, which is the 2-value
    viewport with the missing one as 0.
    """
    text = query.get("viewport")
    rows = query.get("rows")
    columns = query.get("columns")
    if text is not None:
        if rows is not None or columns is not None:
            raise RenderError("give either viewport=vw,vh or rows and columns, not both")
        parts = [part.strip() for part in text.split(",")]
        if len(parts) not in (2, 6):
            raise RenderError(f"{_VIEWPORT_HINT} (got {text[:80]!r})")
        vw = _integer(parts[0], _VIEWPORT_HINT, text)
        vh = _integer(parts[1], _VIEWPORT_HINT, text)
        region = [_integer(part, _VIEWPORT_HINT, text) if part else 0 for part in parts[2:]]
        viewport = (vw, vh, *region)
        _check_viewport(viewport)
        return viewport
    if rows is None and columns is None:
        return None
    size = []
    for name, value in (("columns", columns), ("rows", rows)):
        if value is None:
            size.append(0)
            continue
        hint = f"{name} must be a whole number of pixels from 1, e.g. {name}=512"
        number = _integer(value.strip(), hint, value)
        if number < 1:
            raise RenderError(f"{hint} (got {value[:80]!r})")
        size.append(number)
    viewport = tuple(size)
    _check_viewport(viewport)
    return viewport


def _check_viewport(viewport: tuple[int, ...]) -> None:
    if len(viewport) not in (2, 6):
        raise RenderError(f"{_VIEWPORT_HINT} (got {len(viewport)} values)")
    vw, vh = viewport[:2]
    if vw < 0 or vh < 0 or vw == vh == 0:
        raise RenderError(
            f"viewport width and height must not be negative and at least one must be greater "
            f"than 0 (got {vw},{vh}); {_VIEWPORT_HINT}"
        )
    if vw > _MAX_VIEWPORT or vh > _MAX_VIEWPORT:
        raise RenderError(f"viewport width and height must be at most {_MAX_VIEWPORT} pixels")
    if len(viewport) == 6 and (viewport[2] < 0 or viewport[3] < 0):
        raise RenderError(
            f"viewport sx and sy are offsets into the image and must not be negative; "
            f"{_VIEWPORT_HINT}"
        )


def _parse_quality(query: Mapping[str, str]) -> int:
    """``quality`` (PS3.18 8.3.5.1.2) or WADO-URI's ``imageQuality``: 1 (worst) to 100 (best).

    Checked for every media type but only used for JPEG: PNG and GIF are lossless.
    """
    text = query.get("quality")
    uri_text = query.get("imageQuality")
    if text is not None and uri_text is not None:
        raise RenderError("give either quality or imageQuality, not both")
    if text is None:
        text = uri_text
    if text is None:
        return _DEFAULT_QUALITY
    hint = "quality must be a whole number from 1 to 100, e.g. quality=80"
    value = text.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 3) or not 1 <= int(value) <= 100:
        raise RenderError(f"{hint} (got {text[:80]!r})")
    return int(value)


def _decimal(text: str, hint: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RenderError(f"{hint} (got {whole[:80]!r})") from None
    if not math.isfinite(value):
        raise RenderError(f"{hint} (got {whole[:80]!r})")
    return value


def _integer(text: str, hint: str, whole: str) -> int:
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        raise RenderError(f"{hint} (got {whole[:80]!r})")
    return int(text)


# --- pixel pipeline -------------------------------------------------------------------------

#: Functional group macros (PS3.3 C.7.6.16.2.9 Pixel Value Transformation, C.7.6.16.2.10
#: Frame VOI LUT) whose attributes replace the top-level ones for one frame.
_FRAME_GROUPS = {
    "PixelValueTransformationSequence": ("RescaleIntercept", "RescaleSlope", "RescaleType"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
}


def frame_header(ds: pydicom.Dataset, number: int) -> pydicom.Dataset:
    """The header as frame ``number`` (1-based) of a multi-frame instance sees it.

    An enhanced multi-frame instance gives rescale and window per frame or once for all, in
    its Per-Frame and Shared Functional Groups (PS3.3 C.7.6.16): the frame's own values win
    over the shared ones, which win over top-level ones. Other instances are unchanged.
    """
    groups = [
        _item(ds, "SharedFunctionalGroupsSequence", 0),
        _item(ds, "PerFrameFunctionalGroupsSequence", number - 1),
    ]
    found = [
        (keyword, item[keyword].value)
        for group in groups
        if group is not None
        for macro, keywords in _FRAME_GROUPS.items()
        if (item := _item(group, macro, 0)) is not None
        for keyword in keywords
        if keyword in item
    ]
    if not found:
        return ds
    view = Dataset()
    view.update(ds)  # a new dataset sharing the elements of ``ds``, which stays as it was:
    for keyword, value in found:
        view.pop(keyword, None)  # so a new element replaces the shared one, not changes it
        setattr(view, keyword, value)
    return view


def _item(ds: pydicom.Dataset, keyword: str, index: int) -> pydicom.Dataset | None:
    try:
        sequence = ds.get(keyword)
        return sequence[index] if sequence is not None and len(sequence) > index else None
    except _HEADER_ERRORS:
        return None


def _display_values(
    pixels: np.ndarray, ds: pydicom.Dataset, window: tuple[float, float, str] | None
) -> np.ndarray:
    """The frame as 8-bit display values: rows x cols (grayscale) or rows x cols x 3 (RGB)."""
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        # RGB, or YBR that pydicom already converted: PS3.4 N.2 applies no VOI to colour.
        return _to_8_bits(pixels, _stored_bits(ds, pixels))
    if pixels.ndim != 2:
        raise ValueError(f"expected one frame of rows x cols (x 3), got shape {pixels.shape}")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)[..., :3]  # an alpha LUT has no place in JPEG
        return _to_8_bits(rgb, rgb.dtype.itemsize * 8)
    grey = _grayscale(pixels, ds, window)
    if photometric == "MONOCHROME1":
        # PS3.3 C.7.6.3.1.2: minimum is white; the output reads like MONOCHROME2.
        grey = 255 - grey
    return grey


def _stored_bits(ds: pydicom.Dataset, pixels: np.ndarray) -> int:
    container = pixels.dtype.itemsize * 8
    try:
        bits = int(ds.get("BitsStored") or container)
    except _HEADER_ERRORS:
        bits = container
    return min(max(bits, 1), container)


def _to_8_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """The most significant 8 of ``bits`` bits as uint8 (fewer than 8 bits are shifted up)."""
    if values.dtype == np.uint8 and bits == 8:
        return values
    data = values.astype(np.int64)
    data = data >> (bits - 8) if bits > 8 else data << (8 - bits)
    return np.clip(data, 0, 255).astype(np.uint8)


_LUT_MIN_PIXELS = 4096
_LUT_MAX_ENTRIES = 1 << 17


def _grayscale(
    pixels: np.ndarray, ds: pydicom.Dataset, window: tuple[float, float, str] | None
) -> np.ndarray:
    """Modality LUT then VOI (PS3.4 N.2.1.1), as uint8 with MONOCHROME2 polarity.

    The VOI is the client's window if it gave one (PS3.18 8.3.5.1: the parameters act as a
    presentation state and replace the instance's VOI), else the instance's first VOI LUT or
    window (PS3.3 C.11.2), else the frame's own range.
    """
    stored = pixels.astype(np.uint8) if pixels.dtype == np.bool_ else pixels
    if stored.dtype.kind in "iu" and stored.size > _LUT_MIN_PIXELS:
        low, high = int(stored.min()), int(stored.max())
        if high - low < _LUT_MAX_ENTRIES:
            # The whole pipeline on each stored value once, then a table look-up: a 512x512
            # CT frame has a few thousand distinct values but a quarter million pixels.
            domain = np.arange(low, high + 1).astype(stored.dtype)
            table = _grayscale_values(domain, ds, window)
            return table[stored.astype(np.int64) - low]
    return _grayscale_values(stored, ds, window)


def _grayscale_values(
    stored: np.ndarray, ds: pydicom.Dataset, window: tuple[float, float, str] | None
) -> np.ndarray:
    values = apply_modality_lut(stored, ds)
    if window is not None:
        return _apply_window(values, *window)
    try:
        voi = _instance_voi(values, ds)
    except _HEADER_ERRORS:
        voi = None
    return voi if voi is not None else _full_range(values)


def _instance_voi(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """The instance's own VOI, or None when it has none that is usable.

    When both a VOI LUT and a window are present, PS3.3 C.11.2.1 leaves the choice to the
    application; the LUT is taken, as :func:`pydicom.pixels.apply_voi_lut` does by default.
    The window is computed here rather than by pydicom, whose output range depends on
    BitsStored and rescaling, so that it maps straight onto 0..255.
    """
    sequence = ds.get("VOILUTSequence")
    if sequence and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]:
        entries, first, bits = (int(value) for value in sequence[0].LUTDescriptor)
        entries = entries or 2**16
        # pydicom indexes an unsigned array with the values; clip first so none wraps.
        clipped = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
        return _to_8_bits(apply_voi(clipped, ds), bits)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().lower().replace("_", "-")
    if function not in _WINDOW_FUNCTIONS:
        function = "linear"
    try:
        _check_window(center, width, function)
    except RenderError:
        return None
    return _apply_window(values, center, width, function)


def _first(value: Any) -> float | None:
    """The first of a possibly multi-valued DS attribute (the default of several VOIs)."""
    if value is None or isinstance(value, str | bytes):
        return None
    if isinstance(value, Sequence):
        if not value:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _full_range(values: np.ndarray) -> np.ndarray:
    """No VOI at all: stretch the frame's finite range over 0..255 (a linear-exact window)."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return np.zeros(values.shape, np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return _apply_window(values, (low + high) / 2, high - low, "linear-exact")


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 with y_min = 0 and y_max = 255.

    linear (C.11.2.1.2.1) shifts the centre by half and the width by one unit so that a
    width-1 window is a threshold; linear-exact (C.11.2.1.3.2) does not; sigmoid
    (C.11.2.1.3.1) is 255 / (1 + exp(-4 (x - c) / w)).
    """
    x = np.asarray(values, dtype=np.float64)
    if function == "sigmoid":
        with np.errstate(over="ignore"):
            y = 255.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    else:
        if function == "linear":
            center, width = center - 0.5, width - 1.0
        # A width-1 linear window is a threshold at its centre: nothing to divide by.
        y = ((x - center) / width + 0.5) * 255.0 if width > 0 else np.where(x > center, 255, 0)
    y = np.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(y, 0.0, 255.0)).astype(np.uint8)


# --- geometry and encoding ------------------------------------------------------------------


def _source_region(image: np.ndarray, viewport: tuple[int, ...]) -> np.ndarray:
    """The sx, sy, sw, sh region of PS3.18 8.3.5.1.3, flipped where sw or sh is negative.

    The region always starts at (sx, sy) and spans |sw| x |sh| pixels (0: to the edge) to the
    right and down; the sign only mirrors it, so ``0,0,-cols,rows`` is the whole image flipped.
    A region running past the image is cut at its edge.
    """
    rows, cols = image.shape[:2]
    sx, sy, sw, sh = viewport[2:6]
    if sx >= cols or sy >= rows:
        raise RenderError(
            f"viewport region starts at sx={sx}, sy={sy}, outside the {cols}x{rows} image; "
            f"sx must be below {cols} and sy below {rows}"
        )
    region = image[sy : sy + (abs(sh) or rows), sx : sx + (abs(sw) or cols)]
    if sw < 0:
        region = region[:, ::-1]
    if sh < 0:
        region = region[::-1]
    return region


def _fit(
    size: tuple[int, int], box_width: int, box_height: int, *, enlarge: bool
) -> tuple[int, int]:
    """The size of ``size`` scaled to fit a box, aspect ratio kept (PS3.18 8.3.5.1.3).

    A 0 side of the box does not constrain. Sides are rounded half up and never below 1.
    """
    width, height = size
    scales = []
    if box_width > 0:
        scales.append(box_width / width)
    if box_height > 0:
        scales.append(box_height / height)
    scale = min(scales)
    if not enlarge:
        scale = min(scale, 1.0)
    new_width = max(1, math.floor(width * scale + 0.5))
    new_height = max(1, math.floor(height * scale + 0.5))
    if box_width > 0:
        new_width = min(new_width, box_width)
    if box_height > 0:
        new_height = min(new_height, box_height)
    return new_width, new_height


def _encode(image: Image.Image, params: RenderParams) -> bytes:
    buffer = BytesIO()
    if params.media_type == "image/jpeg":
        image.save(buffer, "JPEG", quality=params.quality)
    elif params.media_type == "image/png":
        image.save(buffer, "PNG")
    else:
        # Pillow reduces RGB to an adaptive 256-colour palette; grayscale fits GIF as is.
        image.save(buffer, "GIF")
    return buffer.getvalue()
