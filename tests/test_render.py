"""Rendered and thumbnail images (PS3.18 8.3.5) from real instances: pydicom's test files and
the repository's sample. Expected values come from the standard's formulas and from pydicom,
never from localdicom's own pipeline; PNG is used wherever pixels are compared exactly.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_voi, pixel_array

from localdicom.dicom.render import (
    RENDERED_MEDIA_TYPES,
    RenderError,
    RenderParams,
    parse_render_params,
    render_frame,
)
from tests.helpers import SAMPLES

PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}


def load(name: str) -> tuple[np.ndarray, pydicom.Dataset]:
    """The first frame and the header of a test file, read the way the server reads them."""
    path = SAMPLES / name if (SAMPLES / name).exists() else get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return pixel_array(path, index=0), pydicom.dcmread(path, stop_before_pixels=True)


def render(
    name_or_frame: str | tuple[np.ndarray, pydicom.Dataset],
    query: dict[str, str] | None = None,
    media_type: str = "image/png",
    **kwargs: int,
) -> Image.Image:
    pixels, ds = load(name_or_frame) if isinstance(name_or_frame, str) else name_or_frame
    params = parse_render_params(query or {}, media_type)
    image = Image.open(io.BytesIO(render_frame(pixels, ds, params, **kwargs)))
    image.load()
    return image


def grey(image: Image.Image) -> np.ndarray:
    assert image.mode == "L"
    return np.asarray(image).astype(int)


# query parameters -------------------------------------------------------------------------


def test_no_parameters_give_the_defaults() -> None:
    assert parse_render_params({}, "image/jpeg") == RenderParams()
    assert parse_render_params({}, "image/png").media_type == "image/png"
    assert parse_render_params({}, "Image/PNG; charset=x").media_type == "image/png"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"window": "40,400"}, (40.0, 400.0, "linear")),
        ({"window": "40,400,linear"}, (40.0, 400.0, "linear")),
        ({"window": "-600.5, 1500 ,LINEAR-EXACT"}, (-600.5, 1500.0, "linear-exact")),
        ({"window": "0,0.5,sigmoid"}, (0.0, 0.5, "sigmoid")),
        ({"window": "40,400,"}, (40.0, 400.0, "linear")),
        ({"windowCenter": "40", "windowWidth": "400"}, (40.0, 400.0, "linear")),
    ],
)
def test_window(query: dict[str, str], expected: tuple[float, float, str]) -> None:
    assert parse_render_params(query, "image/jpeg").window == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"viewport": "100,100"}, (100, 100)),
        ({"viewport": "0,64"}, (0, 64)),
        ({"viewport": "256,256,10,20,-50,60"}, (256, 256, 10, 20, -50, 60)),
        ({"viewport": "512,512,,,,"}, (512, 512, 0, 0, 0, 0)),
        ({"rows": "64", "columns": "128"}, (128, 64)),
        ({"rows": "64"}, (0, 64)),
    ],
)
def test_viewport(query: dict[str, str], expected: tuple[int, ...]) -> None:
    assert parse_render_params(query, "image/jpeg").viewport == expected


@pytest.mark.parametrize(
    ("query", "expected"), [({"quality": "1"}, 1), ({"imageQuality": "100"}, 100), ({}, 90)]
)
def test_quality(query: dict[str, str], expected: int) -> None:
    assert parse_render_params(query, "image/jpeg").quality == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"window": "abc"}, r"window must be center,width\[,function\].*'abc'"),
        ({"window": "40"}, "window must be center,width"),
        ({"window": "40,400,cubic"}, "function one of linear, linear-exact or sigmoid"),
        ({"window": "40,400,linear,1"}, "window must be center,width"),
        ({"window": "nan,400"}, "window must be center,width"),
        ({"window": "40,0.5"}, "linear window's width must be at least 1"),
        ({"window": "40,0,sigmoid"}, "sigmoid window's width must be greater than 0"),
        ({"window": "40,400", "windowCenter": "40"}, "not both"),
        ({"windowCenter": "40"}, "windowCenter and windowWidth must be given together"),
        ({"windowCenter": "x", "windowWidth": "400"}, "must be decimal numbers"),
        ({"viewport": "0,0"}, "at least one must be greater than 0"),
        ({"viewport": "100"}, r"viewport must be vw,vh or vw,vh,sx,sy,sw,sh"),
        ({"viewport": "1,2,3"}, "viewport must be vw,vh"),
        ({"viewport": "a,b"}, "viewport must be vw,vh"),
        ({"viewport": "-5,100"}, "must not be negative"),
        ({"viewport": "100,100,-1,0,10,10"}, "sx and sy are offsets"),
        ({"viewport": "99999,100"}, "at most 8192 pixels"),
        ({"viewport": "100,100", "rows": "10"}, "not both"),
        ({"rows": "0"}, "rows must be a whole number of pixels from 1"),
        ({"quality": "101"}, "quality must be a whole number from 1 to 100.*'101'"),
        ({"quality": "0"}, "quality must be a whole number from 1 to 100"),
        ({"quality": "9.5"}, "quality must be a whole number from 1 to 100"),
        ({"imageQuality": "high"}, "quality must be a whole number from 1 to 100"),
        ({"quality": "80", "imageQuality": "80"}, "not both"),
    ],
)
def test_malformed_parameters_say_what_to_fix(query: dict[str, str], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        parse_render_params(query, "image/jpeg")


def test_unrenderable_media_type() -> None:
    with pytest.raises(RenderError, match="image/jpeg, image/png, image/gif"):
        parse_render_params({}, "image/webp")


def test_params_built_directly_are_checked_too() -> None:
    with pytest.raises(RenderError, match="quality"):
        RenderParams(quality=0)
    with pytest.raises(RenderError, match="function"):
        RenderParams(window=(40.0, 400.0, "cubic"))
    with pytest.raises(RenderError, match="viewport"):
        RenderParams(viewport=(1, 2, 3))


# output format and size ---------------------------------------------------------------------


@pytest.mark.parametrize("media_type", RENDERED_MEDIA_TYPES)
def test_red_triangle_in_each_media_type(media_type: str) -> None:
    """979 rows x 985 columns fitted to a 100x100 viewport keeping the aspect ratio (PS3.18
    8.3.5.1.3): the columns limit, so 100 columns and 979 * 100 / 985 = 99.4 -> 99 rows."""
    image = render("red-triangle.dcm", {"viewport": "100,100"}, media_type)
    assert image.format == PIL_FORMATS[media_type]
    assert image.size == (100, 99)
    r, g, b = image.convert("RGB").getpixel((50, 49))
    assert r > 200 and g < 50 and b < 50
    assert max(image.convert("RGB").getpixel((2, 2))) < 20  # black corner (JPEG: nearly)


def test_red_triangle_png_is_the_stored_pixels() -> None:
    pixels, _ = load("red-triangle.dcm")
    image = render("red-triangle.dcm")
    assert image.mode == "RGB"
    assert image.size == (985, 979)
    assert np.array_equal(np.asarray(image), pixels)
    r, g, b = image.getpixel((492, 489))
    assert r > 200 and g < 50 and b < 50


@pytest.mark.parametrize(
    ("viewport", "size"), [("50,0", (50, 50)), ("0,40", (40, 40)), ("2000,100", (101, 100))]
)
def test_one_side_of_the_viewport(viewport: str, size: tuple[int, int]) -> None:
    """A 0 side does not constrain; 2000,100: rows limit, 985 * 100 / 979 = 100.6 -> 101."""
    assert render("red-triangle.dcm", {"viewport": viewport}).size == size


def test_viewport_enlarges_a_rendered_image_but_a_thumbnail_never_grows() -> None:
    assert render("SC_rgb.dcm", {"viewport": "200,200"}).size == (200, 200)
    assert render("SC_rgb.dcm", thumbnail_size=256).size == (100, 100)
    assert render("SC_rgb.dcm", {"viewport": "200,200"}, thumbnail_size=256).size == (100, 100)
    assert render("SC_rgb.dcm", {"viewport": "50,50"}, thumbnail_size=256).size == (50, 50)


def test_thumbnail_fits_a_square() -> None:
    image = render("red-triangle.dcm", media_type="image/jpeg", thumbnail_size=64)
    assert image.format == "JPEG"
    assert image.size == (64, 64)  # 979 * 64 / 985 = 63.6 -> 64
    assert render("US1_J2KR.dcm", thumbnail_size=64).size == (64, 48)


def test_source_region_is_cropped_then_fitted() -> None:
    pixels, _ = load("red-triangle.dcm")
    image = render("red-triangle.dcm", {"viewport": "100,50,300,400,100,50"})
    assert np.array_equal(np.asarray(image), pixels[400:450, 300:400])
    corner = render("red-triangle.dcm", {"viewport": "50,50,0,0,200,200"})
    assert corner.size == (50, 50)
    assert not np.asarray(corner).any()  # the black top-left corner only
    # empty sx, sy, sw, sh: the whole image
    assert render("red-triangle.dcm", {"viewport": "985,979,,,,"}).size == (985, 979)


def test_negative_region_sides_flip() -> None:
    pixels, _ = load("red-triangle.dcm")
    flipped = render("red-triangle.dcm", {"viewport": "985,979,0,0,0,-979"})
    assert np.array_equal(np.asarray(flipped), pixels[::-1])
    mirrored = render("red-triangle.dcm", {"viewport": "100,50,300,400,-100,-50"})
    assert np.array_equal(np.asarray(mirrored), pixels[400:450, 300:400][::-1, ::-1])


def test_region_outside_the_image() -> None:
    with pytest.raises(RenderError, match="outside the 985x979 image"):
        render("red-triangle.dcm", {"viewport": "100,100,985,0,10,10"})


def test_lower_quality_gives_a_smaller_jpeg() -> None:
    pixels, ds = load("US1_J2KR.dcm")
    low = render_frame(pixels, ds, RenderParams(quality=10))
    high = render_frame(pixels, ds, RenderParams(quality=95))
    assert len(low) < len(high)
    png = render_frame(pixels, ds, RenderParams(media_type="image/png", quality=10))
    assert png == render_frame(pixels, ds, RenderParams(media_type="image/png", quality=95))


# grayscale: modality LUT, VOI, polarity -------------------------------------------------------


def test_ct_window_follows_ps33_linear_formula() -> None:
    """CT_small has no window of its own; window=40,400 is in Hounsfield units (after the
    rescale). Linear (PS3.3 C.11.2.1.2.1): 0 for x <= c - 0.5 - (w-1)/2 = -160, 255 for
    x > c - 0.5 + (w-1)/2 = 239."""
    pixels, ds = load("CT_small.dcm")
    hu = pixels * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    windowed = grey(render("CT_small.dcm", {"window": "40,400"}))
    default = grey(render("CT_small.dcm"))
    assert not np.array_equal(windowed, default)
    assert (windowed[hu <= -160] == 0).all()
    assert (windowed[hu > 239] == 255).all()
    inside = (hu > -160) & (hu <= 239)
    expected = np.rint(((hu[inside] - 39.5) / 399 + 0.5) * 255)
    assert np.abs(windowed[inside] - expected).max() <= 1


def test_without_any_voi_the_frame_range_is_stretched() -> None:
    pixels, _ = load("CT_small.dcm")
    default = grey(render("CT_small.dcm"))
    assert default[pixels == pixels.min()].max() == 0
    assert default[pixels == pixels.max()].min() == 255


def test_instance_window_is_the_default() -> None:
    """MR_small carries Window Center 600 and Width 1600."""
    frame = load("MR_small.dcm")
    assert float(frame[1].WindowCenter) == 600
    default = grey(render(frame))
    assert np.array_equal(default, grey(render(frame, {"window": "600,1600"})))
    assert not np.array_equal(default, grey(render(frame, {"window": "300,600"})))


def test_multi_valued_window_uses_the_first() -> None:
    pixels, ds = load("MR_small.dcm")
    ds = copy.deepcopy(ds)
    ds.WindowCenter = [300, 900]
    ds.WindowWidth = [600, 100]
    assert np.array_equal(
        grey(render((pixels, ds))), grey(render((pixels, ds), {"window": "300,600"}))
    )


def test_sigmoid_differs_from_linear_and_follows_the_instance_function() -> None:
    pixels, ds = load("MR_small.dcm")
    linear = grey(render((pixels, ds), {"window": "600,1600,linear"}))
    sigmoid = grey(render((pixels, ds), {"window": "600,1600,sigmoid"}))
    assert not np.array_equal(linear, sigmoid)
    # PS3.3 C.11.2.1.3.1: y = 255 / (1 + exp(-4 (x - c) / w))
    expected = np.rint(255 / (1 + np.exp(-4 * (pixels.astype(float) - 600) / 1600)))
    assert np.array_equal(sigmoid, expected)
    ds = copy.deepcopy(ds)
    ds.VOILUTFunction = "SIGMOID"
    assert np.array_equal(grey(render((pixels, ds))), sigmoid)


def test_monochrome1_is_inverted() -> None:
    pixels, ds = load("CT_small.dcm")
    inverse = copy.deepcopy(ds)
    inverse.PhotometricInterpretation = "MONOCHROME1"
    for query in ({}, {"window": "40,400"}):
        as_mono2 = grey(render((pixels, ds), query))
        as_mono1 = grey(render((pixels, inverse), query))
        assert np.array_equal(as_mono1, 255 - as_mono2)


def test_real_monochrome1_file_is_inverted() -> None:
    """RG3_UNCR is a MONOCHROME1 radiograph: read as MONOCHROME2 it is the negative (up to
    the rounding of the thumbnail's resampling)."""
    pixels, ds = load("RG3_UNCR.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    as_mono1 = grey(render((pixels, ds), thumbnail_size=64))
    positive = copy.deepcopy(ds)
    positive.PhotometricInterpretation = "MONOCHROME2"
    as_mono2 = grey(render((pixels, positive), thumbnail_size=64))
    assert as_mono1.shape == (64, 64)
    assert np.abs(as_mono1 - (255 - as_mono2)).max() <= 1
    assert as_mono1.std() > 20  # an image, not a blank


def test_voi_lut_sequence() -> None:
    """vlut_04 maps through an 8-bit-in, 16-bit-out VOI LUT: the top 8 bits of its output."""
    pixels, ds = load("vlut_04.dcm")
    expected = apply_voi(pixels, ds) >> 8
    assert np.array_equal(grey(render((pixels, ds))), expected)


def test_modality_lut_sequence() -> None:
    image = render("mlut_18.dcm")
    assert image.mode == "L"
    assert image.size == (512, 512)
    assert np.asarray(image).std() > 20


def test_one_bit_pixels_become_black_and_white() -> None:
    pixels, _ = load("liver_1frame.dcm")
    out = grey(render("liver_1frame.dcm"))
    assert set(np.unique(out)) == {0, 255}
    assert np.array_equal(out == 255, pixels == 1)


def test_float_frame_with_nan() -> None:
    pixels, ds = load("MR_small.dcm")
    floats = pixels.astype(np.float32)
    floats[0, 0] = np.nan
    header = copy.deepcopy(ds)
    del header.WindowCenter, header.WindowWidth
    out = grey(render((floats, header)))
    assert out[0, 0] == 0
    assert out[floats == np.nanmax(floats)].min() == 255


# colour ---------------------------------------------------------------------------------------


def test_ybr_is_rendered_as_rgb() -> None:
    image = render("US1_J2KR.dcm")  # YBR_RCT, converted by pydicom
    assert image.mode == "RGB"
    assert image.size == (640, 480)
    pixels, _ = load("US1_J2KR.dcm")
    assert np.array_equal(np.asarray(image), pixels)


def test_sixteen_bit_rgb_is_scaled_to_eight_bits() -> None:
    eight = np.asarray(render("SC_rgb.dcm"))
    sixteen = np.asarray(render("SC_rgb_16bit.dcm"))
    assert np.array_equal(eight, sixteen)


@pytest.mark.parametrize("name", ["OBXXXX1A.dcm", "examples_palette.dcm"])
def test_palette_color(name: str) -> None:
    pixels, ds = load(name)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    image = render((pixels, ds))
    assert image.mode == "RGB"
    rgb = np.asarray(image)
    assert np.array_equal(rgb, apply_color_lut(pixels, ds) >> 8)  # 16-bit LUT entries
    assert (rgb[..., 0] != rgb[..., 2]).any()  # colour, not grey


def test_grayscale_gif() -> None:
    image = render("CT_small.dcm", {"window": "40,400"}, "image/gif")
    assert image.format == "GIF"
    assert np.array_equal(
        np.asarray(image.convert("L")), grey(render("CT_small.dcm", {"window": "40,400"}))
    )
