"""Every file of pydicom's test corpus goes in through STOW-RS and comes back out unchanged.

The corpus is ``pydicom.data.get_testdata_files("*.dcm")``: pydicom's own test files plus the
pydicom-data package. Each file pydicom reads as a Part 10 instance with four valid
identifying UIDs is stored on a fresh, empty archive (several files share SOP Instance UIDs)
and then read back as bytes, metadata, bulk data and frames. What the server answers is
compared with what pydicom reads from the original file, never with localdicom's own code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
import pytest
from pydicom.dataset import Dataset

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
    store,
)
from tests.helpers.http import multipart_parts, parameters, stow, url_path

CANNOT_UNDERSTAND = 0xC000

AS_STORED_INSTANCE = "application/dicom; transfer-syntax=*"
AS_STORED_MULTIPART = 'multipart/related; type="application/dicom"; transfer-syntax=*'
NATIVE_FRAMES = (
    'multipart/related; type="application/octet-stream"; '
    f"transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
)
AS_STORED_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


# the corpus ------------------------------------------------------------------------------


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


async def get(client, url: str, accept: str) -> aiohttp.ClientResponse:
    response = await client.get(url, headers={"Accept": accept})
    await response.read()
    assert response.status == 200, (url, accept, response.status, await response.text())
    return response


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
