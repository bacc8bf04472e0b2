"""Rendered images and thumbnails over HTTP (PS3.18 8.3.5, 10.4.1.1.4, 10.4.3.3.4).

The tutorial's three samples (a red triangle, a green square, a blue circle, each drawn in
the middle of a black 985x979 RGB image) and pydicom's CT_small.dcm go in through STOW-RS;
what comes back is decoded with Pillow. tests/test_render.py checks the pixel pipeline
itself; this file checks the routes, negotiation, parameters and the thumbnail cache.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient
from PIL import Image
from pydicom.data import get_testdata_file

from localdicom.app import make_app
from tests.helpers import (
    SAMPLES,
    SERIES_CIRCLE,
    SERIES_SQUARE_TRIANGLE,
    SOP_BLUE_CIRCLE,
    SOP_GREEN_SQUARE,
    SOP_RED_TRIANGLE,
    STUDY_UID,
    app_client,
    app_settings,
)
from tests.helpers.http import multipart_parts, stow

STUDY = f"/studies/{STUDY_UID}"
SQUARE_TRIANGLE = f"{STUDY}/series/{SERIES_SQUARE_TRIANGLE}"
CIRCLE = f"{STUDY}/series/{SERIES_CIRCLE}"
RED_TRIANGLE = f"{SQUARE_TRIANGLE}/instances/{SOP_RED_TRIANGLE}"
GREEN_SQUARE = f"{SQUARE_TRIANGLE}/instances/{SOP_GREEN_SQUARE}"
BLUE_CIRCLE = f"{CIRCLE}/instances/{SOP_BLUE_CIRCLE}"
SAMPLE_FILES = ("red-triangle.dcm", "green-square.dcm", "blue-circle.dcm")
SAMPLE_SIZE = (985, 979)  # width, height
PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
THUMBNAIL_SIZE = 128


# helpers ---------------------------------------------------------------------------------


async def store_bytes(client, data: bytes) -> None:
    response = await stow(client, data)
    assert response.status == 200, (response.status, response.headers.get("Warning"))


async def store_samples(client) -> None:
    for name in SAMPLE_FILES:
        await store_bytes(client, (SAMPLES / name).read_bytes())


async def store_ct(client) -> str:
    """Store pydicom's CT_small.dcm; its instance URL."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    await store_bytes(client, Path(get_testdata_file("CT_small.dcm")).read_bytes())
    return instance_url(ds)


def instance_url(ds: pydicom.Dataset) -> str:
    return (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


CT_SMALL_URL = instance_url(pydicom.dcmread(get_testdata_file("CT_small.dcm")))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def samples_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TestClient]:
    """One app for the module's tests that only read, holding the samples and CT_small (at
    ``CT_SMALL_URL``); tests that store, delete or look at the thumbnail cache take ``client``,
    on an empty archive of their own."""
    archive = tmp_path_factory.mktemp("rendered") / "archive"
    async with app_client(archive) as client:
        await store_samples(client)
        assert await store_ct(client) == CT_SMALL_URL
        yield client


async def get_image(client, url: str, accept: str | None = "image/jpeg") -> Image.Image:
    """GET ``url`` and decode the single image it answers with."""
    headers = {} if accept is None else {"Accept": accept}
    response = await client.get(url, headers=headers)
    body = await response.read()
    assert response.status == 200, (url, accept, response.status, body[:300])
    media_type = accept if accept in PIL_FORMATS else "image/jpeg"
    assert response.headers["Content-Type"].split(";")[0].strip() == media_type
    return decode(body, PIL_FORMATS[media_type])


def decode(data: bytes, pil_format: str) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == pil_format
    return image


def centre(image: Image.Image) -> tuple[int, int, int]:
    rgb = image.convert("RGB")
    return rgb.getpixel((rgb.width // 2, rgb.height // 2))


def colour_name(rgb: tuple[int, int, int]) -> str:
    """red, green or blue for a clearly saturated pixel, else what it is."""
    r, g, b = rgb
    for name, (high, low1, low2) in {
        "red": (r, g, b),
        "green": (g, r, b),
        "blue": (b, r, g),
    }.items():
        if high > 200 and low1 < 60 and low2 < 60:
            return name
    return f"neither red, green nor blue: {rgb}"


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def thumbnail_files(archive_dir: Path) -> list[Path]:
    folder = archive_dir / ".cache" / "thumbnails"
    return sorted(folder.iterdir()) if folder.is_dir() else []


# rendered --------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("url", "colour"),
    [(RED_TRIANGLE, "red"), (GREEN_SQUARE, "green"), (BLUE_CIRCLE, "blue")],
    ids=["red-triangle", "green-square", "blue-circle"],
)
@pytest.mark.parametrize("media_type", list(PIL_FORMATS))
async def test_sample_rendered_in_its_colour(
    samples_client, url: str, colour: str, media_type: str
):
    image = await get_image(samples_client, f"{url}/rendered", media_type)
    assert image.size == SAMPLE_SIZE
    assert colour_name(centre(image)) == colour
    assert max(image.convert("RGB").getpixel((2, 2))) < 30  # the background stays black


@pytest.mark.asyncio(loop_scope="module")
async def test_jpeg_is_the_default(samples_client) -> None:
    for accept in (None, "*/*", "image/*"):
        image = await get_image(samples_client, f"{RED_TRIANGLE}/rendered", accept)
        assert colour_name(centre(image)) == "red"


@pytest.mark.asyncio(loop_scope="module")
async def test_frame_level_rendered(samples_client) -> None:
    frame = await get_image(samples_client, f"{RED_TRIANGLE}/frames/1/rendered", "image/png")
    whole = await get_image(samples_client, f"{RED_TRIANGLE}/rendered", "image/png")
    np.testing.assert_array_equal(pixels(frame), pixels(whole))


@pytest.mark.asyncio(loop_scope="module")
async def test_ct_rendered_is_grayscale_and_window_changes_it(samples_client) -> None:
    url = CT_SMALL_URL
    default = await get_image(samples_client, f"{url}/rendered", "image/png")
    assert default.mode == "L"
    assert default.size == (128, 128)
    narrow = await get_image(samples_client, f"{url}/rendered?window=40,80", "image/png")
    wide = await get_image(samples_client, f"{url}/rendered?window=40,4000,linear", "image/png")
    assert not np.array_equal(pixels(narrow), pixels(wide))
    # a wider window maps the same values into fewer grey levels around the centre
    assert np.asarray(narrow).std() > np.asarray(wide).std()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("viewport", "size"),
    [("200,100", (101, 100)), ("100,200", (100, 99)), ("50,0", (50, 50)), ("1970,0", None)],
)
async def test_viewport_is_honoured(samples_client, viewport: str, size) -> None:
    image = await get_image(
        samples_client, f"{GREEN_SQUARE}/rendered?viewport={viewport}", "image/png"
    )
    box_width, box_height = (int(v) for v in viewport.split(","))
    assert image.width <= box_width and (box_height == 0 or image.height <= box_height)
    if size is not None:
        assert image.size == size
    else:  # enlarged: twice the width, the aspect ratio kept
        assert image.width == 1970 and abs(image.height - 2 * 979) <= 1
    assert colour_name(centre(image)) == "green"


@pytest.mark.asyncio(loop_scope="module")
async def test_lower_quality_gives_a_smaller_jpeg(samples_client) -> None:
    url = CT_SMALL_URL
    sizes = {}
    for quality in (10, 95):
        response = await samples_client.get(f"{url}/rendered?quality={quality}")
        assert response.status == 200
        sizes[quality] = len(await response.read())
    assert sizes[10] < sizes[95]


@pytest.mark.asyncio(loop_scope="module")
async def test_series_rendered_is_one_of_its_instances(samples_client) -> None:
    series = await get_image(samples_client, f"{SQUARE_TRIANGLE}/rendered", "image/png")
    members = [
        await get_image(samples_client, f"{url}/rendered", "image/png")
        for url in (RED_TRIANGLE, GREEN_SQUARE)
    ]
    assert any(np.array_equal(pixels(series), pixels(image)) for image in members)


@pytest.mark.asyncio(loop_scope="module")
async def test_study_rendered_is_one_of_its_instances(samples_client) -> None:
    study = await get_image(samples_client, f"{STUDY}/rendered", "image/png")
    members = [
        await get_image(samples_client, f"{url}/rendered", "image/png")
        for url in (RED_TRIANGLE, GREEN_SQUARE, BLUE_CIRCLE)
    ]
    assert any(np.array_equal(pixels(study), pixels(image)) for image in members)
    circle = await get_image(samples_client, f"{CIRCLE}/rendered", "image/png")
    assert colour_name(centre(circle)) == "blue"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("url", "colours"), [(SQUARE_TRIANGLE, ["red", "green"]), (STUDY, ["red", "green", "blue"])]
)
async def test_multipart_rendered_gives_one_part_per_instance(samples_client, url, colours) -> None:
    response = await samples_client.get(
        f"{url}/rendered", headers={"Accept": 'multipart/related; type="image/jpeg"'}
    )
    assert response.status == 200, await response.text()
    parts = await multipart_parts(response)
    assert [content_type.split(";")[0] for content_type, _ in parts] == ["image/jpeg"] * len(
        colours
    )
    found = [colour_name(centre(decode(body, "JPEG"))) for _, body in parts]
    assert sorted(found) == sorted(colours)


async def test_multi_frame_rendered(client) -> None:
    path = Path(get_testdata_file("emri_small.dcm"))
    await store_bytes(client, path.read_bytes())
    url = instance_url(pydicom.dcmread(path, stop_before_pixels=True))
    first = await get_image(client, f"{url}/frames/1/rendered", "image/png")
    second = await get_image(client, f"{url}/frames/2/rendered", "image/png")
    assert not np.array_equal(pixels(first), pixels(second))

    response = await client.get(
        f"{url}/frames/2,1/rendered", headers={"Accept": 'multipart/related; type="image/png"'}
    )
    assert response.status == 200, await response.text()
    parts = [decode(body, "PNG") for _, body in await multipart_parts(response)]
    assert [p.tobytes() for p in parts] == [second.tobytes(), first.tobytes()]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("window=abc", "window"),
        ("window=40", "window"),
        ("window=40,0", "width"),
        ("window=40,400,cubic", "window"),
        ("viewport=0,0", "viewport"),
        ("viewport=-5,10", "viewport"),
        ("viewport=ten,10", "viewport"),
        pytest.param(
            "viewport=100,100,5000,5000,10,10",
            "outside",
        ),
        ("quality=0", "quality"),
        ("quality=101", "quality"),
        ("quality=high", "quality"),
    ],
)
async def test_bad_parameters_are_400_with_a_message(
    samples_client, query: str, words: str
) -> None:
    response = await samples_client.get(f"{RED_TRIANGLE}/rendered?{query}")
    text = await response.text()
    assert response.status == 400, (response.status, text)
    assert words in text, text


@pytest.mark.asyncio(loop_scope="module")
async def test_frame_two_of_a_single_frame_instance_is_404(samples_client) -> None:
    for resource in ("rendered", "thumbnail"):
        response = await samples_client.get(f"{RED_TRIANGLE}/frames/2/{resource}")
        text = await response.text()
        assert response.status == 404, (resource, response.status, text)
        assert "frame 2" in text


@pytest.mark.asyncio(loop_scope="module")
async def test_unknown_study_is_404(samples_client) -> None:
    for resource in ("rendered", "thumbnail"):
        response = await samples_client.get(f"/studies/1.2.3.4/{resource}")
        assert response.status == 404, resource


@pytest.mark.asyncio(loop_scope="module")
async def test_unrenderable_media_type_is_406(samples_client) -> None:
    response = await samples_client.get(
        f"{RED_TRIANGLE}/rendered", headers={"Accept": "image/tiff"}
    )
    assert response.status == 406
    assert "image/png" in await response.text()


# thumbnails ------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "url",
    [STUDY, SQUARE_TRIANGLE, RED_TRIANGLE, f"{RED_TRIANGLE}/frames/1"],
    ids=["study", "series", "instance", "frame"],
)
async def test_thumbnail_at_each_level_is_small(samples_client, url: str) -> None:
    image = await get_image(samples_client, f"{url}/thumbnail", "image/jpeg")
    assert max(image.size) <= THUMBNAIL_SIZE
    assert max(image.size) >= THUMBNAIL_SIZE - 1  # a 985x979 image is shrunk, not dropped
    assert colour_name(centre(image)) in ("red", "green", "blue")


@pytest.mark.asyncio(loop_scope="module")
async def test_instance_thumbnail_is_of_the_instance(samples_client) -> None:
    for url, colour in ((RED_TRIANGLE, "red"), (GREEN_SQUARE, "green"), (BLUE_CIRCLE, "blue")):
        image = await get_image(samples_client, f"{url}/thumbnail", "image/png")
        assert colour_name(centre(image)) == colour


@pytest.mark.asyncio(loop_scope="module")
async def test_small_image_thumbnail_is_not_enlarged(samples_client) -> None:
    url = CT_SMALL_URL  # 128 x 128 already
    image = await get_image(samples_client, f"{url}/thumbnail", "image/png")
    assert image.size == (128, 128)


async def test_thumbnail_is_cached_and_served_from_the_cache(client, archive_dir: Path) -> None:
    await store_samples(client)
    assert thumbnail_files(archive_dir) == []
    first = await client.get(f"{BLUE_CIRCLE}/thumbnail")
    assert first.status == 200
    first_body = await first.read()

    (cached,) = thumbnail_files(archive_dir)
    assert cached.name.startswith(SOP_BLUE_CIRCLE + "_")
    assert cached.read_bytes() == first_body
    mtime = cached.stat().st_mtime_ns

    second = await client.get(f"{BLUE_CIRCLE}/thumbnail")
    assert second.status == 200
    assert second.headers["Content-Type"] == "image/jpeg"
    assert await second.read() == first_body
    assert cached.stat().st_mtime_ns == mtime, "the thumbnail was rendered again"

    # what the cache holds is what is sent: replace it and the answer follows
    marker = io.BytesIO()
    Image.new("RGB", (7, 5), (1, 2, 3)).save(marker, "JPEG")
    cached.write_bytes(marker.getvalue())
    third = await client.get(f"{BLUE_CIRCLE}/thumbnail")
    assert await third.read() == marker.getvalue()


async def test_each_format_is_cached_separately(client, archive_dir: Path) -> None:
    await store_samples(client)
    for _ in range(2):  # rendered, then from the cache
        for media_type in PIL_FORMATS:
            image = await get_image(client, f"{GREEN_SQUARE}/thumbnail", media_type)
            assert colour_name(centre(image)) == "green"
    assert len(thumbnail_files(archive_dir)) == 3


async def test_deleting_an_instance_removes_its_thumbnails(client, archive_dir: Path) -> None:
    await store_samples(client)
    for url in (RED_TRIANGLE, GREEN_SQUARE):
        for media_type in ("image/jpeg", "image/png"):
            await get_image(client, f"{url}/thumbnail", media_type)
    assert len(thumbnail_files(archive_dir)) == 4

    response = await client.delete(RED_TRIANGLE)
    assert response.status in (200, 204), await response.text()

    remaining = thumbnail_files(archive_dir)
    assert len(remaining) == 2
    assert all(path.name.startswith(SOP_GREEN_SQUARE + "_") for path in remaining)
    response = await client.get(f"{RED_TRIANGLE}/thumbnail")
    assert response.status == 404


async def test_deleting_a_series_or_study_removes_their_thumbnails(
    client, archive_dir: Path
) -> None:
    await store_samples(client)
    for url in (RED_TRIANGLE, GREEN_SQUARE, BLUE_CIRCLE):
        await get_image(client, f"{url}/thumbnail")
    assert (await client.delete(SQUARE_TRIANGLE)).status in (200, 204)
    (remaining,) = thumbnail_files(archive_dir)
    assert remaining.name.startswith(SOP_BLUE_CIRCLE + "_")
    assert (await client.delete(STUDY)).status in (200, 204)
    assert thumbnail_files(archive_dir) == []


def with_uid_and_pixels(name: str, sop: str | None = None, colour=None) -> bytes:
    """A sample with another SOP Instance UID and/or its shape painted another colour."""
    ds = pydicom.dcmread(SAMPLES / name)
    if sop is not None:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    if colour is not None:
        array = ds.pixel_array.copy()
        array[array.any(axis=-1)] = colour
        ds.PixelData = array.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


async def test_deleting_an_instance_keeps_thumbnails_of_other_uids(
    client, archive_dir: Path
) -> None:
    """UID 1.2.3 and UID 1.2.3.5 are different instances; the cache must tell them apart."""
    await store_samples(client)
    longer = SOP_RED_TRIANGLE[:58] + ".5"  # red triangle's UID cut to a prefix, then .5
    shorter = SOP_RED_TRIANGLE[:58]
    await store_bytes(client, with_uid_and_pixels("red-triangle.dcm", sop=shorter))
    await store_bytes(client, with_uid_and_pixels("red-triangle.dcm", sop=longer))
    for sop in (shorter, longer):
        await get_image(client, f"{SQUARE_TRIANGLE}/instances/{sop}/thumbnail")
    assert len(thumbnail_files(archive_dir)) == 2

    response = await client.delete(f"{SQUARE_TRIANGLE}/instances/{shorter}")
    assert response.status in (200, 204)

    assert [p.name[: len(longer) + 1] for p in thumbnail_files(archive_dir)] == [longer + "_"]


async def test_replaced_instance_gets_a_new_thumbnail(aiohttp_client, archive_dir: Path) -> None:
    client = await aiohttp_client(make_app(app_settings(archive_dir, overwrite=True)))
    await store_samples(client)
    before = await get_image(client, f"{RED_TRIANGLE}/thumbnail", "image/png")
    assert colour_name(centre(before)) == "red"
    assert len(thumbnail_files(archive_dir)) == 1

    await store_bytes(client, with_uid_and_pixels("red-triangle.dcm", colour=(0, 0, 255)))

    assert thumbnail_files(archive_dir) == []  # the old instance's thumbnail went with it
    after = await get_image(client, f"{RED_TRIANGLE}/thumbnail", "image/png")
    assert colour_name(centre(after)) == "blue"
    rendered = await get_image(client, f"{RED_TRIANGLE}/rendered", "image/png")
    assert colour_name(centre(rendered)) == "blue"


def without_pixels(series: str, sop: str, instance_number: int) -> bytes:
    """A copy of the red triangle without pixel data (standing in for a report)."""
    ds = pydicom.dcmread(SAMPLES / "red-triangle.dcm")
    del ds.PixelData
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.InstanceNumber = instance_number
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("url", "series"),
    [
        pytest.param(STUDY, "1.2.826.0.1.3680043.8.498.1", id="study-first-series-has-no-image"),
        pytest.param(CIRCLE, SERIES_CIRCLE, id="series-middle-instance-has-no-image"),
    ],
)
async def test_thumbnail_skips_instances_without_pixels(client, url: str, series: str) -> None:
    """A study or series with images has a thumbnail even if it also holds a non-image.

    The extra instance sorts where the representative is taken: its series UID before the
    others (study), or instance number 2 of 2 in the circle series (the middle one).
    """
    await store_samples(client)
    await store_bytes(client, without_pixels(series, "1.2.826.0.1.3680043.8.498.2", 2))

    rendered = await get_image(client, f"{url}/rendered")
    assert colour_name(centre(rendered)) in ("red", "green", "blue")
    thumbnail = await get_image(client, f"{url}/thumbnail")
    assert colour_name(centre(thumbnail)) in ("red", "green", "blue")
