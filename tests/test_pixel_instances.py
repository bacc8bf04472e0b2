"""WADO-RS instances transcoded to the transfer syntax a client names (PS3.18 8.7.3.5).

Each original is stored as it is, then asked for in each syntax the server can write: the
answer must be a Part 10 file pydicom reads, labelled with that syntax in its File Meta
Information and its Content-Type, with the same SOP Instance UID and the same pixel values
as pydicom decodes from the original (exact: every target is lossless, and a lossy original
is compared with pydicom's decode of it, which is what the server starts from).
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.helpers.corpus import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    Instance,
    pydicom_file,
    store,
)
from tests.helpers.http import multipart_parts, parameters

RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
TARGETS = {
    "rle": RLE_LOSSLESS,
    "jpeg-ls": JPEG_LS_LOSSLESS,
    "j2k": JPEG_2000_LOSSLESS,
    "implicit": IMPLICIT_VR_LITTLE_ENDIAN,
    "deflate": DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    "explicit": EXPLICIT_VR_LITTLE_ENDIAN,
}
ORIGINALS = [
    "CT_small.dcm",  # explicit VR little endian, 16-bit signed grayscale
    "MR_small.dcm",  # explicit VR little endian, 16-bit signed grayscale
    "SC_rgb.dcm",  # explicit VR little endian, 8-bit RGB
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline (lossy), YBR_FULL
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless, grayscale
    "US1_J2KR.dcm",  # JPEG 2000 lossless, YBR_RCT colour
]
#: Attributes that describe the pixel data's encoding and may change with it.
ENCODING_ATTRIBUTES = {
    "PixelData",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
}


def read_part10(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


async def fetch(client, instance: Instance, accept: str) -> tuple[str, bytes]:
    """(Content-Type, Part 10 bytes) of the one instance, from a single or multipart answer."""
    response = await client.get(instance.path, headers={"Accept": accept})
    body = await response.read()
    assert response.status == 200, (accept, response.status, body[:300])
    if accept.startswith("multipart/related"):
        parts = await multipart_parts(response)
        assert len(parts) == 1
        return parts[0]
    return response.headers["Content-Type"], body


def assert_is_original_in(served: Dataset, original: Dataset, syntax: str) -> None:
    """``served`` is ``original`` rewritten in ``syntax``: same identity, same pixels."""
    assert served.file_meta.TransferSyntaxUID == syntax
    assert served.SOPInstanceUID == original.SOPInstanceUID
    assert served.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    served_pixels = served.pixel_array
    np.testing.assert_array_equal(served_pixels, original.pixel_array)
    assert served_pixels.dtype == original.pixel_array.dtype


def assert_other_attributes_unchanged(served: Dataset, original: Dataset) -> None:
    """Every standard top-level attribute other than the pixel encoding is as it was."""
    for element in original:
        if element.tag.is_private or element.keyword in ENCODING_ATTRIBUTES:
            continue
        assert element.tag in served, f"{element.keyword or element.tag} is missing"
        assert served[element.tag].value == element.value, element.keyword or element.tag


@pytest.mark.parametrize("form", ["single", "multipart"])
@pytest.mark.parametrize("target", list(TARGETS.values()), ids=list(TARGETS))
@pytest.mark.parametrize("name", ORIGINALS)
async def test_instance_transcoded_to_each_syntax(
    client, name: str, target: str, form: str
) -> None:
    instance = await store(client, pydicom_file(name))
    original = instance.dataset
    accept = f"application/dicom; transfer-syntax={target}"
    if form == "multipart":
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={target}'

    content_type, data = await fetch(client, instance, accept)

    assert content_type.split(";")[0].strip() == "application/dicom"
    assert parameters(content_type).get("transfer-syntax") == target
    served = read_part10(data)
    assert_is_original_in(served, original, target)
    assert_other_attributes_unchanged(served, original)
    if original.PhotometricInterpretation.startswith("YBR") and target != JPEG_2000_LOSSLESS:
        # decoded to RGB, so it must say RGB (JPEG 2000 may re-apply its colour transform
        # and say YBR_RCT, which pydicom decodes back to the same RGB values)
        assert served.PhotometricInterpretation == "RGB"


@pytest.mark.parametrize(
    "accept", ['multipart/related; type="application/dicom"', "application/dicom", "*/*", None]
)
async def test_default_syntax_of_a_jpeg_2000_instance_is_explicit_little_endian(
    client, accept: str | None
) -> None:
    instance = await store(client, pydicom_file("MR_small_jp2klossless.dcm"))
    headers = {} if accept is None else {"Accept": accept}
    response = await client.get(instance.path, headers=headers)
    assert response.status == 200, await response.text()
    if response.headers["Content-Type"].startswith("multipart/related"):
        ((content_type, data),) = await multipart_parts(response)
    else:
        content_type, data = response.headers["Content-Type"], await response.read()

    assert parameters(content_type).get("transfer-syntax") == EXPLICIT_VR_LITTLE_ENDIAN
    assert_is_original_in(read_part10(data), instance.dataset, EXPLICIT_VR_LITTLE_ENDIAN)


async def test_jpeg_2000_instance_as_stored_is_the_stored_file(client) -> None:
    path = pydicom_file("MR_small_jp2klossless.dcm")
    instance = await store(client, path)
    content_type, data = await fetch(client, instance, "application/dicom; transfer-syntax=*")
    assert parameters(content_type)["transfer-syntax"] == JPEG_2000_LOSSLESS
    assert data == path.read_bytes()


async def test_series_of_mixed_syntaxes_transcoded_together(client) -> None:
    """A series whose instances are stored in different syntaxes, all asked for in one."""
    uncompressed = await store(client, pydicom_file("emri_small.dcm"))
    compressed_path = pydicom_file("emri_small_jpeg_2k_lossless.dcm")
    compressed = pydicom.dcmread(compressed_path)
    other_sop = uncompressed.sop[:-1] + ("8" if uncompressed.sop.endswith("9") else "9")
    compressed.SOPInstanceUID = compressed.file_meta.MediaStorageSOPInstanceUID = other_sop
    buffer = io.BytesIO()
    compressed.save_as(buffer, enforce_file_format=True)
    response = await client.post(
        "/studies", data=buffer.getvalue(), headers={"Content-Type": "application/dicom"}
    )
    assert response.status == 200, await response.text()

    accept = f'multipart/related; type="application/dicom"; transfer-syntax={RLE_LOSSLESS}'
    response = await client.get(uncompressed.series_path, headers={"Accept": accept})
    assert response.status == 200, await response.text()
    parts = await multipart_parts(response)

    served = sorted((read_part10(data) for _, data in parts), key=lambda ds: ds.SOPInstanceUID)
    assert [str(ds.SOPInstanceUID) for ds in served] == sorted([uncompressed.sop, other_sop])
    for (content_type, _), ds in zip(parts, served, strict=True):
        assert parameters(content_type)["transfer-syntax"] == RLE_LOSSLESS
        assert ds.file_meta.TransferSyntaxUID == RLE_LOSSLESS
        np.testing.assert_array_equal(ds.pixel_array, uncompressed.dataset.pixel_array)


async def test_unknown_target_syntax_is_406_listing_what_is_available(client) -> None:
    instance = await store(client, pydicom_file("CT_small.dcm"))
    accept = "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.100"  # MPEG2
    response = await client.get(instance.path, headers={"Accept": accept})
    assert response.status == 406
    text = await response.text()
    assert JPEG_LS_LOSSLESS in text and RLE_LOSSLESS in text, text


async def test_big_endian_instance_asked_for_explicit_little_endian(client) -> None:
    """Explicit VR Big Endian (retired, PS3.5 A.3) is transcoded, byte-swapped by VR;
    tests/test_pixel_corpus.py runs every big endian file of the corpus."""
    path = pydicom_file("MR_small_bigendian.dcm")
    instance = await store(client, path)
    accept = f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
    response = await client.get(instance.path, headers={"Accept": accept})
    body = await response.read()
    assert response.status == 200, (response.status, body[:300])
    assert parameters(response.headers["Content-Type"])["transfer-syntax"] == (
        EXPLICIT_VR_LITTLE_ENDIAN
    )
    served = read_part10(body)
    assert served.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert served.SOPInstanceUID == instance.dataset.SOPInstanceUID
    np.testing.assert_array_equal(served.pixel_array, instance.dataset.pixel_array)
    assert_other_attributes_unchanged(served, instance.dataset)
