"""WADO-URI (PS3.18 chapter 9) on the tutorial's samples, stored at startup; the tests that
only read share one app."""

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
    SOP_RED_TRIANGLE,
    STUDY_UID,
    app_client,
    app_settings,
)
from tests.helpers.http import stow

RED = {"studyUID": STUDY_UID, "seriesUID": SERIES_SQUARE_TRIANGLE, "objectUID": SOP_RED_TRIANGLE}
BLUE = {"studyUID": STUDY_UID, "seriesUID": SERIES_CIRCLE, "objectUID": SOP_BLUE_CIRCLE}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def samples_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TestClient]:
    """One app for the module's tests that only read, with the samples stored at startup."""
    archive = tmp_path_factory.mktemp("wado-uri") / "archive"
    async with app_client(archive, samples=True) as client:
        yield client


def _wado(**params: str) -> dict[str, str]:
    return {"requestType": "WADO", **params}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("prefix", ["", "/v1", "/dicom-web"])
async def test_dicom_is_the_stored_instance(samples_client, prefix: str) -> None:
    response = await samples_client.get(
        f"{prefix}/wado", params=_wado(contentType="application/dicom", **RED)
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/dicom")
    assert await response.read() == (SAMPLES / "red-triangle.dcm").read_bytes()


@pytest.mark.asyncio(loop_scope="module")
async def test_default_for_an_image_is_jpeg(samples_client) -> None:
    response = await samples_client.get("/wado", params=_wado(**BLUE))
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    image = np.asarray(Image.open(io.BytesIO(await response.read())).convert("RGB"))
    assert image.shape == (979, 985, 3)
    middle = image[979 // 2, 985 // 2].astype(int)
    assert middle[2] > 150 and middle[0] < 80 and middle[1] < 80  # blue


@pytest.mark.asyncio(loop_scope="module")
async def test_image_parameters(samples_client) -> None:
    params = _wado(contentType="image/png", rows="100", columns="100", **RED)
    response = await samples_client.get("/wado", params=params)
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(await response.read()))
    assert image.format == "PNG"
    assert max(image.size) == 100


@pytest.mark.asyncio(loop_scope="module")
async def test_content_type_list_takes_the_first_supported(samples_client) -> None:
    params = _wado(contentType="image/jp2,image/gif", **RED)
    response = await samples_client.get("/wado", params=params)
    assert response.headers["Content-Type"] == "image/gif"


async def test_transfer_syntax_transcodes(aiohttp_client, archive_dir: Path) -> None:
    client = await aiohttp_client(make_app(app_settings(archive_dir)))
    ct = Path(get_testdata_file("CT_small.dcm"))
    assert (await stow(client, ct.read_bytes())).status == 200
    ds = pydicom.dcmread(ct)
    uids = {
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
    }
    response = await client.get("/wado", params=_wado(contentType="application/dicom", **uids))
    assert response.status == 200
    back = pydicom.dcmread(io.BytesIO(await response.read()))
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # the default
    assert back.pixel_array.shape == ds.pixel_array.shape
    as_stored = await client.get(
        "/wado", params=_wado(contentType="application/dicom", transferSyntax="*", **uids)
    )
    assert await as_stored.read() == ct.read_bytes()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({**RED}, 400, "requestType=WADO"),
        (_wado(studyUID=STUDY_UID, seriesUID=SERIES_CIRCLE), 400, "objectUID"),
        (_wado(**{**RED, "objectUID": "1.2.3"}), 404, "not stored"),
        (_wado(**{**RED, "studyUID": "not a uid"}), 400, "StudyInstanceUID"),
        (_wado(contentType="text/html", **RED), 406, "contentType"),
        (_wado(anonymize="yes", **RED), 400, "anonymize"),
        (_wado(frameNumber="2", **RED), 404, ""),
        (_wado(frameNumber="zero", **RED), 400, "frameNumber"),
        (_wado(windowCenter="40", **RED), 400, ""),
    ],
)
async def test_mistakes_are_explained(samples_client, params, status: int, words: str) -> None:
    response = await samples_client.get("/wado", params=params)
    assert response.status == status, await response.text()
    assert words in await response.text()


# leniency: what viewers send (Orthanc answers these too) ---------------------------------


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "given",
    [
        {"objectUID": SOP_RED_TRIANGLE},
        {"objectUID": SOP_RED_TRIANGLE, "studyUID": STUDY_UID},
        {"objectUID": SOP_RED_TRIANGLE, "seriesUID": SERIES_SQUARE_TRIANGLE},
    ],
    ids=["objectUID-alone", "with-studyUID", "with-seriesUID"],
)
async def test_object_uid_alone_finds_the_instance(samples_client, given) -> None:
    """PS3.18 9.1.2.1 asks for all three UIDs; a SOP Instance UID alone is unique enough."""
    params = _wado(contentType="application/dicom", transferSyntax="*", **given)
    response = await samples_client.get("/wado", params=params)
    assert response.status == 200, await response.text()
    assert await response.read() == (SAMPLES / "red-triangle.dcm").read_bytes()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("other", "words"),
    [
        ({"studyUID": "1.2.3"}, "not in the study 1.2.3"),
        ({"seriesUID": SERIES_CIRCLE}, f"not in the series {SERIES_CIRCLE}"),
    ],
)
async def test_a_given_uid_must_be_the_instances_own(samples_client, other, words) -> None:
    response = await samples_client.get("/wado", params=_wado(objectUID=SOP_RED_TRIANGLE, **other))
    assert response.status == 404
    assert words in await response.text()


@pytest.mark.asyncio(loop_scope="module")
async def test_object_uid_of_no_stored_instance_is_404(samples_client) -> None:
    response = await samples_client.get("/wado", params=_wado(objectUID="1.2.3.4"))
    assert response.status == 404
    assert "1.2.3.4 is not stored" in await response.text()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("content_type", ["image/jpg", "IMAGE/JPG", "image/jp2,image/jpg"])
async def test_image_jpg_is_jpeg(samples_client, content_type: str) -> None:
    params = _wado(contentType=content_type, objectUID=SOP_BLUE_CIRCLE)
    response = await samples_client.get("/wado", params=params)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(await response.read()))
    assert image.format == "JPEG"
    assert image.size == (985, 979)
