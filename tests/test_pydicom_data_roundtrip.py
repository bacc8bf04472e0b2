"""Every file of pydicom's test corpus goes in through STOW-RS and comes back out unchanged.

The corpus is ``pydicom.data.get_testdata_files("*.dcm")``: pydicom's own test files plus the
pydicom-data package. Each file pydicom reads as a Part 10 instance with four valid
identifying UIDs is stored on a fresh, empty archive (several files share SOP Instance UIDs)
and then read back as bytes, metadata, bulk data and frames. What the server answers is
compared with what pydicom reads from the original file, never with localdicom's own code.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pydicom
import pydicom.data
import pydicom.data.download
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
LITTLE_ENDIAN_NATIVE = {
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
}
IDENTIFYING_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
#: Pixel Data, Float Pixel Data, Double Float Pixel Data and their bits per sample.
PIXEL_DATA_BITS = {0x7FE00010: None, 0x7FE00008: 32, 0x7FE00009: 64}
CANNOT_UNDERSTAND = 0xC000

AS_STORED_INSTANCE = "application/dicom; transfer-syntax=*"
AS_STORED_MULTIPART = 'multipart/related; type="application/dicom"; transfer-syntax=*'
NATIVE_FRAMES = (
    'multipart/related; type="application/octet-stream"; '
    f"transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
)
AS_STORED_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


# the corpus ------------------------------------------------------------------------------


def corpus_files() -> list[Path]:
    """The test corpus, sorted by name; nothing is downloaded.

    pydicom would also try to fetch the pydicom-data files from GitHub into its cache (15 s of
    time-outs without a network); the pydicom-data package already holds them.
    """
    download = pydicom.data.download
    saved = download._SIMULATE_NETWORK_OUTAGE
    download._SIMULATE_NETWORK_OUTAGE = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paths = pydicom.data.get_testdata_files("*.dcm")
    finally:
        download._SIMULATE_NETWORK_OUTAGE = saved
    return sorted((Path(p) for p in paths), key=lambda p: p.name)


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    #: Why the server must refuse the file, or None if it is a storable instance.
    refusal: str | None
    #: The refusal is a missing identifying UID (as opposed to an invalid one / no Part 10).
    lacks_uid: bool = False


def classify(path: Path) -> CorpusFile:
    """Decide with pydicom alone whether ``path`` is a Part 10 instance with valid UIDs."""
    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except (InvalidDicomError, EOFError, ValueError) as exc:
        return CorpusFile(path, f"not a Part 10 file: {exc}")
    if "TransferSyntaxUID" not in ds.file_meta:
        return CorpusFile(path, "no Transfer Syntax UID in the File Meta Information")
    missing = [name for name in IDENTIFYING_UIDS if not ds.get(name)]
    if missing:
        return CorpusFile(path, f"lacks {', '.join(missing)}", lacks_uid=True)
    invalid = [name for name in IDENTIFYING_UIDS if not UID(str(ds[name].value)).is_valid]
    if invalid:
        return CorpusFile(path, f"invalid {', '.join(invalid)}")
    if is_truncated(path):
        return CorpusFile(path, "truncated: a value runs past the end of the file")
    return CorpusFile(path, None)


def is_truncated(path: Path) -> bool:
    """True when pydicom's element headers promise more bytes than the file holds."""
    ds = pydicom.dcmread(path, defer_size=0)
    if ds.file_meta.TransferSyntaxUID.is_deflated:
        return False  # positions are in the inflated stream: nothing to compare with
    size = path.stat().st_size
    for tag in sorted(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        length = getattr(raw, "length", 0)
        if length != 0xFFFFFFFF and getattr(raw, "value_tell", 0) + length > size:
            return True
    return False


CORPUS = [classify(path) for path in corpus_files()]
REFUSAL = {entry.path: entry.refusal for entry in CORPUS}


def is_encapsulated(path: Path) -> bool:
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    return syntax.is_compressed and not syntax.is_deflated


def cases(test: str) -> list[Any]:
    """One pytest.param per corpus file, xfailed where a known server bug fails ``test``."""
    params = []
    for entry in CORPUS:
        params.append(pytest.param(entry.path, id=entry.path.name))
    return params


def test_corpus_is_there() -> None:
    assert len(CORPUS) >= 140, "pydicom-data is not installed?"
    assert sum(entry.refusal is None for entry in CORPUS) >= 120
    assert sum(entry.lacks_uid for entry in CORPUS) >= 5


# HTTP helpers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    dataset: Dataset
    data: bytes
    study: str
    series: str
    sop: str

    @property
    def series_path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}"

    @property
    def path(self) -> str:
        return f"{self.series_path}/instances/{self.sop}"

    @property
    def transfer_syntax(self) -> str:
        return str(self.dataset.file_meta.TransferSyntaxUID)


async def stow(client, data: bytes) -> aiohttp.ClientResponse:
    response = await client.post(
        "/studies",
        data=data,
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
    )
    await response.read()
    return response


async def store(client, path: Path) -> Instance:
    """STOW one file and return what identifies it; the dataset is read by pydicom."""
    if REFUSAL[path] is not None:
        pytest.skip(f"not a storable instance: {REFUSAL[path]}")
    data = path.read_bytes()
    response = await stow(client, data)
    body = await response.json(content_type=None)
    assert response.status == 200, (response.status, response.headers.get("Warning"), body)
    ds = pydicom.dcmread(path)
    study, series, sop = (str(ds[name].value) for name in IDENTIFYING_UIDS[:3])
    return Instance(ds, data, study, series, sop)


async def get(client, url: str, accept: str) -> aiohttp.ClientResponse:
    response = await client.get(url, headers={"Accept": accept})
    await response.read()
    assert response.status == 200, (url, accept, response.status, await response.text())
    return response


async def multipart_parts(response: aiohttp.ClientResponse) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response (RFC 2046 5.1.1)."""
    content_type = response.headers["Content-Type"]
    assert content_type.split(";")[0].strip() == "multipart/related", content_type
    delimiter = b"\r\n--" + parameters(content_type)["boundary"].encode("latin-1")
    _preamble, *sections = (b"\r\n" + await response.read()).split(delimiter)
    assert sections and sections[-1].startswith(b"--"), "no close delimiter"
    parts = []
    for section in sections[:-1]:
        head, separator, body = section.partition(b"\r\n\r\n")
        assert separator, "a part without a header/body separator"
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in head.decode().split("\r\n"))
        )
        parts.append((headers.get("content-type", ""), body))
    return parts


def parameters(content_type: str) -> dict[str, str]:
    """The parameters of a media type, names lower-cased, quotes removed."""
    result = {}
    for item in content_type.split(";")[1:]:
        name, _, value = item.partition("=")
        result[name.strip().lower()] = value.strip().strip('"')
    return result


def url_path(uri: str) -> str:
    """The path of an absolute BulkDataURI: the test server's host is not the client's."""
    parts = urlsplit(uri)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# what pydicom reads ----------------------------------------------------------------------


def without_bulk_and_group_lengths(
    expected: dict[str, Any], served: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both documents minus what the comparison leaves out, recursing into sequences.

    Left out: elements the server gave as BulkDataURI (pydicom inlines them) and group length
    elements, which PS3.18 F.2 excludes from DICOM JSON (from ``expected`` only, so the server
    including one still fails).
    """
    bulk = {key for key, attribute in served.items() if "BulkDataURI" in attribute}
    for key in bulk:
        assert key in expected, f"BulkDataURI for {key}, which the file lacks"
        assert served[key]["vr"] == expected[key]["vr"], f"{key}: VR of the BulkDataURI element"
        # PS3.18 F.2.5: an empty element has no Value, BulkDataURI or InlineBinary
        assert expected[key].keys() - {"vr"}, f"BulkDataURI for {key}, which is empty"
    served_out = {key: value for key, value in served.items() if key not in bulk}
    expected_out = {
        key: value
        for key, value in expected.items()
        if key not in bulk and not key.endswith("0000")
    }
    for key in expected_out.keys() & served_out.keys():
        mine, theirs = expected_out[key], served_out[key]
        my_items, their_items = mine.get("Value", []), theirs.get("Value", [])
        if mine["vr"] == theirs.get("vr") == "SQ" and len(my_items) == len(their_items):
            pairs = [
                without_bulk_and_group_lengths(a, b)
                for a, b in zip(my_items, their_items, strict=True)
            ]
            expected_out[key] = {**mine, "Value": [a for a, _ in pairs]}
            served_out[key] = {**theirs, "Value": [b for _, b in pairs]}
    return expected_out, served_out


def bulk_references(served: dict[str, Any], dataset: Dataset) -> Iterator[tuple[str, str, bytes]]:
    """(where, BulkDataURI, value bytes pydicom reads) for every BulkDataURI in ``served``."""
    for key, attribute in served.items():
        tag = int(key, 16)
        if "BulkDataURI" in attribute:
            yield key, attribute["BulkDataURI"], value_bytes(dataset, tag)
        elif attribute.get("vr") == "SQ":
            items = zip(attribute.get("Value", []), dataset[tag].value, strict=True)
            for index, (item_json, item) in enumerate(items):
                for where, uri, value in bulk_references(item_json, item):
                    yield f"{key}/{index}/{where}", uri, value


def value_bytes(dataset: Dataset, tag: int) -> bytes:
    """The value of a binary element as pydicom reads it; an empty value is no bytes."""
    value = dataset.get_item(tag).value  # raw bytes where pydicom has not converted them
    if value in (None, "", b""):
        return b""
    assert isinstance(value, bytes), f"{tag:08X} is not binary: {value!r}"
    return value


def pixel_data_tag(ds: Dataset) -> int | None:
    return next((tag for tag in PIXEL_DATA_BITS if tag in ds), None)


def frame_count(ds: Dataset) -> int:
    value = ds.get("NumberOfFrames")
    if value in (None, ""):
        return 1
    try:
        return int(value)
    except ValueError:
        pytest.skip(f"pydicom reads NumberOfFrames {value!r}, not a number of frames")


def native_frames_little_endian(ds: Dataset, count: int) -> list[bytes]:
    """Each frame's pixel cells in little endian, cut from pixel data pydicom read."""
    tag = pixel_data_tag(ds)
    bits = PIXEL_DATA_BITS[tag] or int(ds.BitsAllocated)
    samples = int(ds.get("SamplesPerPixel", 1))
    if ds.file_meta.TransferSyntaxUID in LITTLE_ENDIAN_NATIVE:
        size = get_expected_length(ds, "bytes") // count  # knows YBR_FULL_422's 2 samples
        data = ds[tag].value
        return [data[index * size : (index + 1) * size] for index in range(count)]
    array = ds.pixel_array
    pixels = array.reshape(count, *array.shape[-2:] if samples == 1 else array.shape[-3:])
    if samples > 1 and ds.get("PlanarConfiguration", 0) == 1:
        pixels = np.moveaxis(pixels, -1, 1)  # pixel_array interleaves; the file has planes
    little = pixels.astype(pixels.dtype.newbyteorder("<"))
    assert little.dtype.itemsize * 8 == bits, (little.dtype, bits)
    return [frame.tobytes() for frame in little]


def frame_bits(ds: Dataset, count: int) -> list[np.ndarray]:
    """BitsAllocated 1: each frame's pixel values, one per pixel, as pydicom decodes them."""
    return list(ds.pixel_array.reshape(count, -1))


def encapsulated_frames(ds: Dataset, count: int) -> list[bytes]:
    """Each frame as the concatenated fragments, trailing padding byte and all (PS3.5 A.4)."""
    extended = None
    if "ExtendedOffsetTable" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return list(generate_frames(ds.PixelData, number_of_frames=count, extended_offsets=extended))


def expected_frames(ds: Dataset, native: bool, count: int) -> list[bytes] | list[np.ndarray]:
    if not native:
        return encapsulated_frames(ds, count)
    if int(ds.get("BitsAllocated", 0)) == 1:
        return frame_bits(ds, count)
    return native_frames_little_endian(ds, count)


def assert_same_frame(number: int, served: bytes, expected: bytes | np.ndarray) -> None:
    if isinstance(expected, np.ndarray):  # bit-packed: compare the pixel values
        assert len(served) == (expected.size + 7) // 8, f"frame {number}: length"
        bits = np.unpackbits(np.frombuffer(served, np.uint8), bitorder="little")
        np.testing.assert_array_equal(bits[: expected.size], expected, f"frame {number}")
        return
    assert len(served) == len(expected), f"frame {number}: {len(served)} bytes, not {len(expected)}"
    assert served == expected, f"frame {number}: same length, different bytes"


# tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", cases("bytes"))
async def test_stored_bytes_come_back_identical(client, path: Path) -> None:
    instance = await store(client, path)

    single = await get(client, instance.path, AS_STORED_INSTANCE)
    assert await single.read() == instance.data
    assert parameters(single.headers["Content-Type"])["transfer-syntax"] == (
        instance.transfer_syntax
    )

    series = await get(client, instance.series_path, AS_STORED_MULTIPART)
    parts = await multipart_parts(series)
    assert len(parts) == 1
    content_type, body = parts[0]
    assert body == instance.data
    assert content_type.split(";")[0].strip() == "application/dicom"
    assert parameters(content_type)["transfer-syntax"] == instance.transfer_syntax


@pytest.mark.parametrize("path", cases("metadata"))
async def test_metadata_equals_pydicom_json(client, path: Path) -> None:
    instance = await store(client, path)
    try:
        expected = json.loads(json.dumps(instance.dataset.to_json_dict()))
    except Exception as exc:
        pytest.skip(f"pydicom cannot write this dataset as JSON: {exc!r}")

    response = await get(client, f"{instance.path}/metadata", "application/dicom+json")
    documents = await response.json(content_type=None)
    assert len(documents) == 1
    expected, served = without_bulk_and_group_lengths(expected, documents[0])
    assert served == expected


@pytest.mark.parametrize("path", cases("bulk"))
async def test_every_bulk_data_uri_resolves_to_the_value(client, path: Path) -> None:
    instance = await store(client, path)
    response = await get(client, f"{instance.path}/metadata", "application/dicom+json")
    served = (await response.json(content_type=None))[0]

    for where, uri, value in bulk_references(served, instance.dataset):
        if where == "7FE00010" and is_encapsulated(path):
            # PS3.18 8.7.3.3.2: compressed pixel data as stored is one part per frame
            bulk = await get(client, url_path(uri), AS_STORED_FRAMES)
            parts = await multipart_parts(bulk)
            expected = encapsulated_frames(instance.dataset, frame_count(instance.dataset))
            assert [body for _, body in parts] == expected, f"{where}: not the stored frames"
            continue
        bulk = await get(client, url_path(uri), "application/octet-stream; transfer-syntax=*")
        data = await bulk.read()
        assert len(data) == len(value), f"{where}: {len(data)} bytes, expected {len(value)}"
        assert data == value, f"{where}: same length, different bytes"


@pytest.mark.parametrize("path", cases("frames"))
async def test_frames_equal_pydicom_pixel_data(client, path: Path) -> None:
    instance = await store(client, path)
    ds = instance.dataset
    if pixel_data_tag(ds) is None:
        pytest.skip("no pixel data")
    count = frame_count(ds)
    syntax = instance.transfer_syntax
    native = syntax in LITTLE_ENDIAN_NATIVE or syntax == EXPLICIT_VR_BIG_ENDIAN
    lists = ["1"] + ([",".join(str(n) for n in range(1, count + 1))] if count > 1 else [])
    expected = expected_frames(ds, native, count)

    for frame_list in lists:
        numbers = [int(n) for n in frame_list.split(",")]
        accept = NATIVE_FRAMES if native else AS_STORED_FRAMES
        response = await get(client, f"{instance.path}/frames/{frame_list}", accept)
        parts = await multipart_parts(response)
        assert len(parts) == len(numbers)
        label = EXPLICIT_VR_LITTLE_ENDIAN if native else syntax
        for content_type, _ in parts:
            assert content_type.split(";")[0].strip() == "application/octet-stream"
            assert parameters(content_type).get("transfer-syntax") == label, content_type
        for number, (_, body) in zip(numbers, parts, strict=True):
            assert_same_frame(number, body, expected[number - 1])


REFUSED = [entry for entry in CORPUS if entry.refusal is not None]


async def assert_refused(client, archive_dir: Path, path: Path) -> None:
    response = await stow(client, path.read_bytes())
    body = await response.json(content_type=None)
    assert response.status == 409, (response.status, body)
    failed = body["00081198"]["Value"]
    assert [item["00081197"]["Value"] for item in failed] == [[CANNOT_UNDERSTAND]]
    assert "00081199" not in body
    listed = await get(client, "/instances", "application/dicom+json")
    assert await listed.json(content_type=None) == []
    assert [p for p in archive_dir.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    "path", [pytest.param(e.path, id=e.path.name) for e in REFUSED if e.lacks_uid]
)
async def test_file_lacking_uids_is_refused(client, archive_dir: Path, path: Path) -> None:
    await assert_refused(client, archive_dir, path)


@pytest.mark.parametrize(
    "path", [pytest.param(e.path, id=e.path.name) for e in REFUSED if not e.lacks_uid]
)
async def test_non_part10_or_invalid_uid_file_is_refused(
    client, archive_dir: Path, path: Path
) -> None:
    await assert_refused(client, archive_dir, path)
