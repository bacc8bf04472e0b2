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
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import gdcm
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from tests.helpers.corpus import (
    CORPUS,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    encapsulated_frames,
    frame_count,
    pydicom_file,
)
from tests.helpers.http import parameters
from tests.helpers.live import LiveServer, Reply, request, serve_module, store_file

#: Every pixel resource of every file of the corpus: seconds of decoding, so not inner loop.
pytestmark = pytest.mark.slow

UNCOMPRESSED = 'multipart/related; type="application/octet-stream"'
AS_STORED = UNCOMPRESSED + "; transfer-syntax=*"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
#: Frames compared per file: enough to see each is the right one, and big files stay quick.
MAX_FRAMES = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve_module(tmp_path_factory, "pixels")


# helpers ---------------------------------------------------------------------------------


def store_bytes(server: LiveServer, ds: Dataset, folder: Path) -> None:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    store_file(server, path)


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
    ds = store_file(server, path)
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
    ds = store_file(server, path)
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
    original = store_file(server, path)
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
    path = pydicom_file("gdcm-US-ALOKA-16_big.dcm")
    original = store_file(server, path)
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


# (b) odd files ---------------------------------------------------------------------------


def test_jpeg_with_damaged_offset_table_item_transcoded(server: LiveServer) -> None:
    """SC_rgb_jpeg.dcm: pydicom reads its encapsulation leniently ("Found unexpected tag
    (0000,0000)") and its dataset decodes: so does the server, as an instance, frames and
    rendered images."""
    path = pydicom_file("SC_rgb_jpeg.dcm")
    original = store_file(server, path)
    expected = original.pixel_array
    for accept in ("application/dicom", 'multipart/related; type="application/dicom"'):
        reply = get(url(server, original), accept)
        body = reply.parts()[0][1] if accept.startswith("multipart") else reply.body
        served = pydicom.dcmread(io.BytesIO(body))
        assert served.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
        np.testing.assert_array_equal(served.pixel_array, expected)
    ((_, frame),) = get(url(server, original, "/frames/1"), UNCOMPRESSED).parts()
    assert frame == little_endian(expected)
    png = image_of(get(url(server, original, "/rendered"), "image/png"))
    np.testing.assert_array_equal(png, expected)  # 8-bit RGB: rendered as it is


@pytest.mark.parametrize("media_type", ["image/jpeg", "image/png"])
def test_deflated_instance_rendered(server: LiveServer, media_type: str) -> None:
    """image_dfl.dcm (Deflated Explicit VR Little Endian, PS3.5 A.5) renders."""
    original = store_file(server, pydicom_file("image_dfl.dcm"))
    image = image_of(get(url(server, original, "/rendered"), media_type))
    assert image.shape == original.pixel_array.shape
    if media_type == "image/png":  # 8-bit, no VOI: the stored values stretched to 0..255
        values = original.pixel_array.astype(float)
        stretched = (values - values.min()) / (values.max() - values.min()) * 255
        assert np.abs(image - np.rint(stretched)).max() <= 1


def test_bad_is_value_rendered(server: LiveServer) -> None:
    """badVR.dcm's Number of Frames is "1A": not a number, so one frame (PS3.3 C.7.6.6, as
    the sidecar counts it); pydicom decodes it when told so."""
    path = pydicom_file("badVR.dcm")
    original = store_file(server, path)
    fixed = pydicom.dcmread(path)
    fixed.NumberOfFrames = 1
    expected = pixel_array(fixed, index=0)
    png = image_of(get(url(server, original, "/frames/1/rendered"), "image/png"))
    assert png.shape == expected.shape
    assert get(url(server, original, "/rendered"), "image/jpeg").body[:2] == b"\xff\xd8"
    ((_, frame),) = get(url(server, original, "/frames/1"), UNCOMPRESSED).parts()
    assert frame == little_endian(expected)


ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
#: Per frame: (Window Center, Window Width) of its Frame VOI LUT (PS3.3 C.7.6.16.2.10).
WINDOWS = [(300 + 100 * n, 400 + 50 * n) for n in range(10)]
SLOPE, INTERCEPT = 2.0, -100.0


def enhanced_without_pixel_representation() -> Dataset:
    """emri_small.dcm (10 frames, 16 bits) as an enhanced multi-frame instance without Pixel
    Representation: rescale shared by all frames, a window per frame (PS3.3 C.7.6.16)."""
    ds = pydicom.dcmread(pydicom_file("emri_small.dcm"))
    del ds.PixelRepresentation
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        ds.pop(keyword, None)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, pydicom.uid.generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    transformation = Dataset()
    transformation.RescaleSlope, transformation.RescaleIntercept = SLOPE, INTERCEPT
    transformation.RescaleType = "US"
    shared = Dataset()
    shared.PixelValueTransformationSequence = [transformation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for center, width in WINDOWS:
        voi, group = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        group.FrameVOILUTSequence = [voi]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    return ds


def windowed(stored: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (linear) on the rescaled values, to 0..255."""
    x = stored.astype(float) * SLOPE + INTERCEPT
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.rint(np.clip(y, 0, 255))


def test_multi_frame_without_pixel_representation_rendered(
    server: LiveServer, tmp_path: Path
) -> None:
    """Pixel Representation absent: unsigned, the Enumerated Value readers assume; each
    frame with the shared rescale and its own window; rendered, frame rendered, thumbnail."""
    ds = enhanced_without_pixel_representation()
    store_bytes(server, ds, tmp_path)
    stored = pydicom.dcmread(pydicom_file("emri_small.dcm")).pixel_array  # unsigned, as assumed
    for number in (1, 4, 10):
        png = image_of(get(url(server, ds, f"/frames/{number}/rendered"), "image/png"))
        expected = windowed(stored[number - 1], *WINDOWS[number - 1])
        assert np.abs(png.astype(float) - expected).max() <= 1, f"frame {number}"
    first = image_of(get(url(server, ds, "/rendered"), "image/png"))
    np.testing.assert_array_equal(
        first, image_of(get(url(server, ds, "/frames/1/rendered"), "image/png"))
    )
    thumbnail = image_of(get(url(server, ds, "/thumbnail"), "image/png"))
    np.testing.assert_array_equal(thumbnail, first)  # 64x64: a thumbnail is never enlarged


def new_series() -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    return ds


def in_one_series(name: str, like: Dataset, number: int) -> Dataset:
    """The file ``name`` with a new SOP Instance UID, in the study and series of ``like``."""
    ds = pydicom.dcmread(pydicom_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = like.StudyInstanceUID, like.SeriesInstanceUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.InstanceNumber = number
    return ds


def raw_get(server: LiveServer, path: str, accept: str) -> tuple[bytes, bytes]:
    """(head, body) of a GET read off the socket until the server closes it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


def test_transcoding_failure_after_the_first_part_ends_the_body_cleanly(
    server: LiveServer, tmp_path: Path
) -> None:
    """A series as RLE whose second instance (32-bit colour, which RLE's encoder refuses)
    fails once the answer has started: the connection is closed before the close delimiter
    and the chunked body's last chunk (RFC 2046 5.1.1, RFC 9112 7.1), and no status line is
    written into the body."""
    first = in_one_series("CT_small.dcm", new_series(), 1)
    second = in_one_series("SC_rgb_expb_32bit.dcm", first, 2)
    for ds in (first, second):
        store_bytes(server, ds, tmp_path)
    series = f"/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={RLE_LOSSLESS}'

    head, body = raw_get(server, series, accept)

    assert head.startswith(b"HTTP/1.1 200"), head
    boundary = parameters(
        next(
            line for line in head.decode().split("\r\n") if line.lower().startswith("content-type")
        )
    )["boundary"]
    assert b"HTTP/1." not in body
    assert f"--{boundary}--".encode() not in body
    assert not body.endswith(b"0\r\n\r\n")
    assert body.count(f"--{boundary}\r\n".encode()) == 1  # the first instance's part began


def test_transcoding_failure_of_the_first_part_is_a_406(server: LiveServer, tmp_path: Path) -> None:
    """Decided before the answer starts: the only instance cannot be encoded as asked."""
    ds = in_one_series("SC_rgb_expb_32bit.dcm", new_series(), 1)
    store_bytes(server, ds, tmp_path)
    for accept in (
        f"application/dicom; transfer-syntax={RLE_LOSSLESS}",
        f'multipart/related; type="application/dicom"; transfer-syntax={RLE_LOSSLESS}',
    ):
        reply = request(url(server, ds), accept=accept)
        assert reply.status == 406, (accept, reply.status, reply.text)
        assert "transfer-syntax=*" in reply.text
