"""WADO-RS frames in any transfer syntax (PS3.18 8.7.3, 10.4.1.1.3).

Part (a) runs the whole pydicom corpus through one module-scoped server: every frame asked
for uncompressed (``multipart/related; type="application/octet-stream"``, no transfer-syntax
parameter, which means Explicit VR Little Endian) must be what pydicom decodes. Part (b)
checks the lossless re-encodings (RLE, JPEG-LS, JPEG 2000) by decoding what the server sent
with pydicom's own decoders, baseline JPEG with Pillow, and the order of frame lists.

One server serves the whole module: its worker pool starts once. Several corpus files share
a SOP Instance UID (19 files carry SC_rgb's), so the server runs with ``--overwrite`` and
each test stores its file right before asking for it: a later file with the same UID
replaces the earlier one, which no test needs any more. Expected values come from pydicom
reading the original file, never from localdicom.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import gdcm
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, pixel_array

from tests.helpers.corpus import (
    CORPUS,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    LITTLE_ENDIAN_NATIVE,
    assert_same_frame,
    encapsulated_frames,
    expected_frames,
    frame_count,
    pixel_data_tag,
    pydicom_file,
)
from tests.helpers.http import parameters
from tests.helpers.live import LiveServer, Reply, request, serve_module, store_file

#: Frames asked for per corpus file: the first few are enough and keep big files quick.
MAX_FRAMES = 3
UNCOMPRESSED = 'multipart/related; type="application/octet-stream"'
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

#: Media type asked for -> the transfer syntax that is its default (PS3.18 Table 8.7.3-5).
LOSSLESS_MEDIA_TYPES = {
    "image/dicom-rle": RLE_LOSSLESS,
    "image/jls": JPEG_LS_LOSSLESS,
    "image/jp2": JPEG_2000_LOSSLESS,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve_module(tmp_path_factory, "frames")


# helpers ---------------------------------------------------------------------------------


def frames_url(server: LiveServer, ds: pydicom.Dataset, frame_list: str) -> str:
    return (
        f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/{frame_list}"
    )


def get_frames(server: LiveServer, ds: pydicom.Dataset, frame_list: str, accept: str) -> Reply:
    reply = request(frames_url(server, ds, frame_list), accept=accept)
    assert reply.status == 200, (accept, reply.status, reply.text)
    return reply


def assert_part_types(parts: list[tuple[str, bytes]], media_type: str, syntax: str) -> None:
    for content_type, _ in parts:
        assert content_type.split(";")[0].strip() == media_type, content_type
        assert parameters(content_type).get("transfer-syntax") == syntax, content_type


def little_endian_bytes(array: np.ndarray) -> bytes:
    """What an uncompressed frame of ``array`` is: its cells in little endian, row by row."""
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def decode_with_pydicom(frame: bytes, syntax: str, ds: pydicom.Dataset) -> np.ndarray:
    """One encoded frame decoded by pydicom's decoder for ``syntax`` (not localdicom's code)."""
    samples = int(ds.SamplesPerPixel)
    array, _ = get_decoder(syntax).as_array(
        encapsulate([frame]),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=samples,
        bits_allocated=int(ds.BitsAllocated),
        bits_stored=int(ds.BitsStored),
        pixel_representation=int(ds.PixelRepresentation),
        photometric_interpretation="RGB" if samples == 3 else str(ds.PhotometricInterpretation),
        number_of_frames=1,
        planar_configuration=0,
    )
    return array


# (a) the corpus, uncompressed --------------------------------------------------------------


def stored_syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def is_native(syntax: str) -> bool:
    return syntax in LITTLE_ENDIAN_NATIVE or syntax == EXPLICIT_VR_BIG_ENDIAN


def decoded_by_pydicom(path: Path, count: int) -> list[np.ndarray] | None:
    """The first frames as ``pixel_array`` decodes them, or None if pydicom cannot.

    Reading the file (``pixel_array(path)``) is tried first, then the dataset's own
    ``pixel_array``, which is more lenient (e.g. with a damaged Basic Offset Table item).
    """
    try:
        return [pixel_array(path, index=index) for index in range(count)]
    except Exception:
        pass
    try:
        array = pydicom.dcmread(path).pixel_array
    except Exception:
        return None
    return [array] if frame_count(pydicom.dcmread(path)) == 1 else list(array[:count])


def decoded_by_gdcm(path: Path) -> bool:
    """True when GDCM (python-gdcm, the other decoder of the field) decodes the file."""
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    return bool(reader.Read() and reader.GetImage().GetBuffer())


CORPUS_CASES = [
    pytest.param(entry.path, id=entry.path.name) for entry in CORPUS if entry.refusal is None
]


def test_corpus_has_compressed_and_native_files() -> None:
    syntaxes = [stored_syntax(param.values[0]) for param in CORPUS_CASES]
    assert sum(is_native(s) for s in syntaxes) >= 40
    assert sum(not is_native(s) for s in syntaxes) >= 40


@pytest.mark.parametrize("path", CORPUS_CASES)
def test_uncompressed_frames_equal_pydicom(server: LiveServer, path: Path) -> None:
    """Frames asked for without a transfer syntax are Explicit VR Little Endian.

    Compressed files: the server decodes, so each frame is ``pixel_array(path, index=i)`` in
    little endian (colour as RGB, as pydicom gives it). Native files: the server does not
    decode but serves the stored cells in little endian (big endian swapped, bit-packed
    1-bit data left packed, YBR_FULL_422 left subsampled), so they are compared with the raw
    stored frames as tests/test_pydicom_data_roundtrip.py does.
    """
    ds = store_file(server, path)
    if pixel_data_tag(ds) is None:
        pytest.skip("no pixel data")
    count = min(frame_count(ds), MAX_FRAMES)
    frame_list = ",".join(str(n) for n in range(1, count + 1))
    syntax = str(ds.file_meta.TransferSyntaxUID)

    if is_native(syntax):
        expected: list = expected_frames(ds, True, frame_count(ds))[:count]
    else:
        decoded = decoded_by_pydicom(path, count)
        if decoded is None:
            pytest.skip(
                "pydicom cannot decode it: tests/test_pixel_corpus.py and the "
                "test_undecodable_frames_* tests cover it"
            )
        expected = [little_endian_bytes(array) for array in decoded]

    parts = get_frames(server, ds, frame_list, UNCOMPRESSED).parts()
    assert len(parts) == count
    assert_part_types(parts, "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN)
    for number, ((_, body), frame) in enumerate(zip(parts, expected, strict=True), start=1):
        assert_same_frame(number, body, frame)


UNDECODABLE = [
    param
    for param in CORPUS_CASES
    if not is_native(stored_syntax(param.values[0]))
    and decoded_by_pydicom(param.values[0], 1) is None
    and not decoded_by_gdcm(param.values[0])
]


def test_the_corpus_has_files_no_decoder_decodes() -> None:
    assert UNDECODABLE, "every compressed corpus file decodes: the 406 path goes untested"


@pytest.mark.parametrize("path", UNDECODABLE)
def test_undecodable_frames_are_406_with_a_message(server: LiveServer, path: Path) -> None:
    ds = store_file(server, path)
    refused = request(frames_url(server, ds, "1"), accept=UNCOMPRESSED)
    assert refused.status == 406, (refused.status, refused.text)
    assert "transfer-syntax=*" in refused.text, refused.text  # what it is available as


@pytest.mark.parametrize("path", UNDECODABLE)
def test_undecodable_frames_are_served_as_stored(server: LiveServer, path: Path) -> None:
    ds = store_file(server, path)
    count = min(frame_count(ds), MAX_FRAMES)
    frame_list = ",".join(str(n) for n in range(1, count + 1))

    parts = get_frames(server, ds, frame_list, AS_STORED).parts()

    assert_part_types(parts, "application/octet-stream", str(ds.file_meta.TransferSyntaxUID))
    assert [body for _, body in parts] == encapsulated_frames(ds, frame_count(ds))[:count]


# (b) lossless transcodes, JPEG, frame lists ---------------------------------------------------


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "emri_small_jpeg_2k_lossless.dcm"])
def test_jpeg_2000_frames_decoded_to_uncompressed(server: LiveServer, name: str) -> None:
    path = pydicom_file(name)
    ds = store_file(server, path)
    count = frame_count(ds)
    frame_list = ",".join(str(n) for n in range(1, count + 1))

    parts = get_frames(server, ds, frame_list, UNCOMPRESSED).parts()

    assert_part_types(parts, "application/octet-stream", EXPLICIT_VR_LITTLE_ENDIAN)
    expected = pixel_array(path)
    expected = expected.reshape(count, *expected.shape[-2:])
    assert [body for _, body in parts] == [little_endian_bytes(frame) for frame in expected]


@pytest.mark.parametrize("media_type", list(LOSSLESS_MEDIA_TYPES))
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm"])
def test_lossless_frame_encodings_decode_to_the_original(
    server: LiveServer, name: str, media_type: str
) -> None:
    path = pydicom_file(name)
    ds = store_file(server, path)
    syntax = LOSSLESS_MEDIA_TYPES[media_type]

    parts = get_frames(server, ds, "1", f'multipart/related; type="{media_type}"').parts()

    assert len(parts) == 1
    assert_part_types(parts, media_type, syntax)
    np.testing.assert_array_equal(decode_with_pydicom(parts[0][1], syntax, ds), ds.pixel_array)


@pytest.mark.parametrize("media_type", list(LOSSLESS_MEDIA_TYPES))
def test_one_frame_as_a_single_part_image(server: LiveServer, media_type: str) -> None:
    path = pydicom_file("CT_small.dcm")
    ds = store_file(server, path)
    syntax = LOSSLESS_MEDIA_TYPES[media_type]

    reply = get_frames(server, ds, "1", media_type)

    assert reply.content_type.split(";")[0].strip() == media_type
    assert parameters(reply.content_type).get("transfer-syntax") == syntax
    np.testing.assert_array_equal(decode_with_pydicom(reply.body, syntax, ds), ds.pixel_array)


def test_several_frames_cannot_be_one_single_part_image(server: LiveServer) -> None:
    ds = store_file(server, pydicom_file("emri_small.dcm"))
    reply = request(frames_url(server, ds, "1,2"), accept="image/jls")
    assert reply.status == 406, (reply.status, reply.text)
    assert "multipart/related" in reply.text  # what is available instead


@pytest.mark.parametrize("accept", ['multipart/related; type="image/jpeg"', "image/jpeg"])
def test_baseline_jpeg_of_eight_bit_data(server: LiveServer, accept: str) -> None:
    path = pydicom_file("SC_rgb.dcm")
    ds = store_file(server, path)

    reply = get_frames(server, ds, "1", accept)

    if accept.startswith("multipart"):
        ((content_type, body),) = reply.parts()
    else:
        content_type, body = reply.content_type, reply.body
    assert content_type.split(";")[0].strip() == "image/jpeg"
    assert parameters(content_type).get("transfer-syntax") == JPEG_BASELINE
    image = Image.open(io.BytesIO(body))
    assert image.format == "JPEG"
    decoded = np.asarray(image.convert("RGB")).astype(int)
    original = ds.pixel_array.astype(int)
    assert decoded.shape == original.shape
    assert np.abs(decoded - original).mean() < 3


def test_baseline_jpeg_of_sixteen_bit_data_is_406(server: LiveServer) -> None:
    ds = store_file(server, pydicom_file("CT_small.dcm"))
    reply = request(frames_url(server, ds, "1"), accept='multipart/related; type="image/jpeg"')
    assert reply.status == 406, (reply.status, reply.text)
    assert "image/jp2" in reply.text  # the 406 lists what the frame is available as


@pytest.mark.parametrize(
    ("name", "accept"),
    [
        ("emri_small.dcm", UNCOMPRESSED),  # native: positioned reads
        ("emri_small_jpeg_2k_lossless.dcm", UNCOMPRESSED),  # decoded in the worker pool
        ("emri_small_jpeg_2k_lossless.dcm", AS_STORED),  # encapsulated, as stored
    ],
)
def test_frames_come_back_in_the_order_asked(server: LiveServer, name: str, accept: str) -> None:
    path = pydicom_file(name)
    ds = store_file(server, path)
    one, two, three = (get_frames(server, ds, str(n), accept).parts()[0][1] for n in (1, 2, 3))
    assert len({one, two, three}) == 3, "the first three frames should differ"

    shuffled = get_frames(server, ds, "3,1,2", accept).parts()
    assert [body for _, body in shuffled] == [three, one, two]

    twice = get_frames(server, ds, "1,1", accept).parts()
    assert [body for _, body in twice] == [one, one]


def test_frames_beyond_the_last_are_404(server: LiveServer) -> None:
    ds = store_file(server, pydicom_file("emri_small_jpeg_2k_lossless.dcm"))
    reply = request(frames_url(server, ds, "1,11"), accept=UNCOMPRESSED)
    assert reply.status == 404, (reply.status, reply.text)
    assert "11" in reply.text
