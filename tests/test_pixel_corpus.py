"""Pixel data of every stored file: bulk data, rendered images and odd files (PS3.18 8.7.3).

Part (a) runs pydicom's whole corpus through one module-scoped server: the BulkDataURI of
Pixel Data and the rendered, frame-rendered and thumbnail resources never answer 5xx, and
what they decode equals pydicom's ``pixel_array`` (or GDCM's decode, for the file pydicom
cannot decode and Orthanc can). Part (b) takes the files issue 17 named one by one: big
endian transcoding and bulk data, a JPEG with a damaged encapsulation, a deflated file, a
bad IS value, a multi-frame instance without Pixel Representation whose frames carry their
own rescale and window, and a transcoding failure after the answer has started.

Expected values come from pydicom (or GDCM) reading the original file, never from localdicom.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import gdcm
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from tests.conftest import LiveServer, free_port
from tests.live_http import Reply, request, stow_file
from tests.test_pydicom_data_roundtrip import (
    CORPUS,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    encapsulated_frames,
    frame_count,
    parameters,
)

UNCOMPRESSED = 'multipart/related; type="application/octet-stream"'
AS_STORED = UNCOMPRESSED + "; transfer-syntax=*"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
#: Frames compared per file: enough to see each is the right one, and big files stay quick.
MAX_FRAMES = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; ``--overwrite`` as several corpus files share UIDs."""
    archive = tmp_path_factory.mktemp("pixels") / "archive"
    live = LiveServer(archive, free_port(), extra_args=("--overwrite",))
    live.start()
    yield live
    live.stop()


# helpers ---------------------------------------------------------------------------------


def sample(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return Path(path)


def store(server: LiveServer, path: Path) -> pydicom.Dataset:
    reply = stow_file(server.url, path)
    assert reply.status == 200, (reply.status, reply.headers.get("Warning"), reply.text)
    return pydicom.dcmread(path)


def store_bytes(server: LiveServer, ds: Dataset, folder: Path) -> None:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    store(server, path)


def url(server: LiveServer, ds: Dataset, tail: str = "") -> str:
    return (
        f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}{tail}"
    )


def get(address: str, accept: str | None = None) -> Reply:
    reply = request(address, accept=accept)
    assert reply.status == 200, (address, accept, reply.status, reply.text[:300])
    return reply


def little_endian(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def gdcm_frames(path: Path) -> list[np.ndarray] | None:
    """Every frame as GDCM decodes the file (grayscale only: what the corpus needs)."""
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        return None
    image = reader.GetImage()
    buffer = image.GetBuffer()
    if not buffer or image.GetPixelFormat().GetSamplesPerPixel() != 1:
        return None
    kind = {"UINT8": "u1", "INT8": "i1", "UINT16": "<u2", "INT16": "<i2"}
    dtype = kind.get(image.GetPixelFormat().GetScalarTypeAsString())
    if dtype is None:
        return None
    rows, columns = image.GetDimension(1), image.GetDimension(0)
    array = np.frombuffer(buffer.encode("utf-8", "surrogateescape"), dtype)
    return list(array.reshape(-1, rows, columns))


def expected_frames(path: Path, count: int) -> list[np.ndarray] | None:
    """The first ``count`` frames decoded by pydicom (reading the file, else its dataset's
    pixel_array), else by GDCM; None when nothing decodes them."""
    try:
        return [pixel_array(path, index=index) for index in range(count)]
    except Exception:
        pass
    try:
        ds = pydicom.dcmread(path)
        array = ds.pixel_array
        return [array] if frame_count(ds) == 1 else list(array[:count])
    except Exception:
        pass
    frames = gdcm_frames(path) if is_encapsulated(path) else None
    return None if frames is None else frames[:count]


def image_of(reply: Reply) -> np.ndarray:
    image = Image.open(io.BytesIO(reply.body))
    image.load()
    return np.asarray(image)


# (a) the corpus ----------------------------------------------------------------------------


def has_pixel_data(path: Path) -> bool:
    ds = pydicom.dcmread(path, stop_before_pixels=False, defer_size=64)
    return any(tag in ds for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009))


def is_encapsulated(path: Path) -> bool:
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    return syntax.is_compressed and not syntax.is_deflated


IMAGES = [
    pytest.param(entry.path, id=entry.path.name)
    for entry in CORPUS
    if entry.refusal is None and has_pixel_data(entry.path)
]


def test_the_corpus_has_images_of_every_kind() -> None:
    paths = [param.values[0] for param in IMAGES]
    assert len(paths) >= 100
    assert sum(is_encapsulated(path) for path in paths) >= 40


@pytest.mark.parametrize("path", [p for p in IMAGES if is_encapsulated(p.values[0])])
def test_compressed_pixel_data_bulk_is_one_part_per_frame(server: LiveServer, path: Path) -> None:
    """PS3.18 8.7.3.3.2: octet-stream (the default) is every frame decoded to Explicit VR
    Little Endian; ``transfer-syntax=*`` every frame as stored; never the encapsulated
    value with its item tags."""
    ds = store(server, path)
    count = frame_count(ds)
    bulk = url(server, ds, "/bulk/7FE00010")

    stored = get(bulk, AS_STORED).parts()
    assert [body for _, body in stored] == encapsulated_frames(ds, count)
    for content_type, _ in stored:
        assert parameters(content_type)["transfer-syntax"] == ds.file_meta.TransferSyntaxUID

    expected = expected_frames(path, count)
    reply = request(bulk, accept=UNCOMPRESSED)
    if expected is None:
        assert reply.status == 406, (reply.status, reply.text)
        return
    assert reply.status == 200, (reply.status, reply.text)
    parts = reply.parts()
    assert len(parts) == count
    for content_type, _ in parts:
        assert parameters(content_type)["transfer-syntax"] == EXPLICIT_VR_LITTLE_ENDIAN
    shown = min(count, MAX_FRAMES)
    assert [body for _, body in parts[:shown]] == [little_endian(f) for f in expected[:shown]]


@pytest.mark.parametrize("path", IMAGES)
def test_rendered_frames_and_thumbnail_never_5xx(server: LiveServer, path: Path) -> None:
    """Whatever a stored file holds, rendering answers an image, or a 406 when no decoder
    can decode its pixel data (PS3.18 8.3.5); frames likewise (8.7.3)."""
    ds = store(server, path)
    decodable = _needs_repair(ds) or expected_frames(path, 1) is not None
    for tail, accept in (
        ("/rendered", "image/jpeg"),
        ("/frames/1/rendered", "image/png"),
        ("/thumbnail", "image/jpeg"),
        ("/frames/1", UNCOMPRESSED),
    ):
        reply = request(url(server, ds, tail), accept=accept)
        assert reply.status < 500, (tail, reply.status, reply.text)
        assert reply.status == (200 if decodable else 406), (tail, reply.status, reply.text)


def _needs_repair(ds: Dataset) -> bool:
    """Files pydicom refuses only for a missing or unreadable description attribute, which
    the server replaces by the standard's default (tests in part (b))."""
    try:
        return "PixelRepresentation" not in ds or int(ds.get("NumberOfFrames") or 1) < 1
    except ValueError:
        return True


# (b) big endian --------------------------------------------------------------------------

BIG_ENDIAN = [
    pytest.param(entry.path, id=entry.path.name)
    for entry in CORPUS
    if entry.refusal is None
    and pydicom.dcmread(entry.path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    == EXPLICIT_VR_BIG_ENDIAN
]


def test_the_corpus_has_big_endian_files() -> None:
    assert len(BIG_ENDIAN) >= 10


@pytest.mark.parametrize("path", BIG_ENDIAN)
def test_big_endian_instance_transcoded_to_little_endian(server: LiveServer, path: Path) -> None:
    """PS3.18 8.7.3.5.2: without a transfer syntax an instance comes in Explicit VR Little
    Endian; a big endian one is byte-swapped by VR (PS3.5 7.3), pixel data and OW values
    (LUT Data) included, and every value reads as it did."""
    original = store(server, path)
    reply = get(url(server, original), "application/dicom")
    assert parameters(reply.content_type)["transfer-syntax"] == EXPLICIT_VR_LITTLE_ENDIAN
    served = pydicom.dcmread(io.BytesIO(reply.body))
    assert served.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert_same_values(served, original)
    if "PixelData" in original:
        np.testing.assert_array_equal(served.pixel_array, original.pixel_array)


def assert_same_values(served: Dataset, original: Dataset, where: str = "") -> None:
    """Every element has the value it had; values kept as bytes compared as numbers. Group
    lengths (retired, PS3.5 7.2) change with the encoding and are left out."""
    for element in original:
        here = f"{where}{element.tag}"
        if element.tag.element == 0:
            continue
        assert element.tag in served, f"{here} is missing"
        mine = served[element.tag]
        if element.VR == "SQ":
            assert len(mine.value) == len(element.value), here
            for index, (a, b) in enumerate(zip(mine.value, element.value, strict=True)):
                assert_same_values(a, b, f"{here}/{index}/")
        elif isinstance(element.value, bytes) and element.VR in ("OW", "OF", "OL", "OD", "OV"):
            if element.tag == 0x7FE00010:
                continue  # compared through pixel_array
            size = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}[element.VR]
            kind = "f" if element.VR in ("OF", "OD") else "u"
            np.testing.assert_array_equal(
                np.frombuffer(mine.value, f"<{kind}{size}"),
                np.frombuffer(element.value, f">{kind}{size}"),
                here,
            )
        else:
            assert mine.value == element.value, here


def test_big_endian_lut_data_bulk_comes_in_little_endian(server: LiveServer) -> None:
    """gdcm-US-ALOKA-16_big.dcm's Segmented Palette Color LUT Data (OW, PS3.3 C.7.9.2):
    octet-stream without a transfer syntax is little endian; ``transfer-syntax=*`` the bytes
    as stored."""
    path = sample("gdcm-US-ALOKA-16_big.dcm")
    original = store(server, path)
    metadata = json.loads(get(url(server, original, "/metadata"), "application/dicom+json").body)
    keys = ("00281221", "00281222", "00281223")
    uris = [uri for key in keys for uri in bulk_uris(metadata[0], key)]
    assert len(uris) == 3, "the palette LUT Data are not given as BulkDataURIs"
    for uri in uris:
        stored = value_at(original, uri.split("/bulk/")[1])
        address = server.url + urlsplit(uri).path
        little = get(address, "application/octet-stream").body
        np.testing.assert_array_equal(np.frombuffer(little, "<u2"), np.frombuffer(stored, ">u2"))
        assert get(address, "application/octet-stream; transfer-syntax=*").body == stored
        parts = get(address, UNCOMPRESSED).parts()
        assert [body for _, body in parts] == [little]


def bulk_uris(document: dict, key: str) -> Iterator[str]:
    """The BulkDataURIs of element ``key`` anywhere in a DICOM JSON document."""
    for tag, attribute in document.items():
        if tag == key and "BulkDataURI" in attribute:
            yield attribute["BulkDataURI"]
        for item in attribute.get("Value", []) if attribute.get("vr") == "SQ" else []:
            yield from bulk_uris(item, key)


def value_at(ds: Dataset, bulk_path: str) -> bytes:
    """The value pydicom reads at a bulk data path: tag, item index, tag, ..."""
    steps = bulk_path.split("/")
    for tag, index in zip(steps[:-1:2], steps[1::2], strict=True):
        ds = ds[int(tag, 16)].value[int(index)]
    return ds[int(steps[-1], 16)].value
