"""STOW-RS failure items name the refused instance whenever its file does (PS3.18 Table
I.1-1, Failed SOP Sequence: Referenced SOP Class UID and Referenced SOP Instance UID), over
pydicom's whole test corpus and on files made to be refused; what is expected is read from
the files with pydicom, never taken from the server."""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import pydicom
import pydicom.data
import pydicom.data.download
import pytest
from pydicom.errors import InvalidDicomError

from localdicom.dicom.describing import describe
from localdicom.dicom.header import NotDicom
from tests.helpers.corpus import corpus_files

CANNOT_UNDERSTAND = 0xC000
FAILED_SOP_SEQUENCE, FAILURE_REASON = "00081198", "00081197"
REFERENCED_CLASS, REFERENCED_INSTANCE = "00081150", "00081155"


def refused_by_the_server(path: Path) -> bool:
    with path.open("rb") as fp:
        try:
            describe(fp)
        except NotDicom:
            return True
    return False


REFUSED = [path for path in corpus_files() if refused_by_the_server(path)]


def expected_identity(data: bytes) -> dict[str, str]:
    """What pydicom reads as the file's SOP Class and Instance UIDs: the dataset's, else the
    File Meta Information's; nothing for a file pydicom does not read as Part 10, nor for a
    value longer than a UID can be."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        return {}
    found = {}
    for tag, keyword, meta_keyword in (
        (REFERENCED_CLASS, "SOPClassUID", "MediaStorageSOPClassUID"),
        (REFERENCED_INSTANCE, "SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        value = str(ds.get(keyword) or ds.file_meta.get(meta_keyword) or "").strip("\0 ")
        if value and len(value) <= 64:
            found[tag] = value
    return found


async def stow(client, data: bytes) -> tuple[int, dict, str]:
    response = await client.post(
        "/studies", data=data, headers={"Content-Type": "application/dicom"}
    )
    return response.status, await response.json(content_type=None), response.headers["Warning"]


def assert_failed_item(body: dict, identity: dict[str, str]) -> None:
    (item,) = body[FAILED_SOP_SEQUENCE]["Value"]
    assert item[FAILURE_REASON]["Value"] == [CANNOT_UNDERSTAND]
    named = {
        tag: item[tag]["Value"][0] for tag in (REFERENCED_CLASS, REFERENCED_INSTANCE) if tag in item
    }
    assert named == identity
    for tag in named:
        assert item[tag]["vr"] == "UI"


def test_the_corpus_has_refused_files_that_name_their_instance():
    """The corpus-wide test below meets both kinds of refusal."""
    named = [path for path in REFUSED if expected_identity(path.read_bytes())]
    assert len(named) >= 5 and len(REFUSED) - len(named) >= 3


@pytest.mark.parametrize("path", REFUSED, ids=[path.name for path in REFUSED])
async def test_a_refused_corpus_file_is_named_in_its_failure_item(client, path: Path):
    data = path.read_bytes()
    status, body, warning = await stow(client, data)
    assert status == 409
    assert_failed_item(body, expected_identity(data))
    assert warning.startswith('299 localdicom "not stored: ')


def _ct(**changes) -> pydicom.Dataset:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "missing",
    [("StudyInstanceUID",), ("SeriesInstanceUID",), ("StudyInstanceUID", "SeriesInstanceUID")],
)
async def test_a_file_without_study_or_series_uid_is_named(client, missing):
    ds = _ct(**dict.fromkeys(missing))
    status, body, warning = await stow(client, _bytes(ds))
    assert status == 409
    assert_failed_item(
        body, {REFERENCED_CLASS: ds.SOPClassUID, REFERENCED_INSTANCE: ds.SOPInstanceUID}
    )
    assert ", ".join(missing) in warning


async def test_pixel_data_shorter_than_its_frames_need_is_refused_and_named(client):
    """Rows x Columns x Samples x BitsAllocated/8 x frames bytes are needed (PS3.5 8.1.1)."""
    ds = _ct()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    status, body, warning = await stow(client, _bytes(ds))
    assert status == 409
    assert_failed_item(
        body, {REFERENCED_CLASS: ds.SOPClassUID, REFERENCED_INSTANCE: ds.SOPInstanceUID}
    )
    need = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    assert f"holds {need // 2} bytes, 1 frame(s) need {need}" in warning


async def test_a_uid_longer_than_a_uid_can_be_is_left_out(client):
    ds = _ct(StudyInstanceUID=None, SOPInstanceUID="1." + "2" * 70)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    status, body, _ = await stow(client, _bytes(ds))
    assert status == 409
    assert_failed_item(body, {REFERENCED_CLASS: ds.SOPClassUID})


def test_the_named_uids_cross_from_a_worker_process():
    """Uploads are parsed in worker processes: the refusal comes back pickled."""
    refusal = NotDicom("the dataset lacks StudyInstanceUID", "1.2.3", "4.5.6")
    back = pickle.loads(pickle.dumps(refusal))
    assert (str(back), back.sop_class_uid, back.sop_uid) == (str(refusal), "1.2.3", "4.5.6")


async def test_every_refused_corpus_file_in_one_request_is_named_in_order(client):
    """Parts checked while others stream in are parsed in the worker processes: the UIDs
    come back from there too."""
    boundary = "refused-corpus-files"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + b"\r\n"
        for path in REFUSED
    )
    response = await client.post(
        "/studies",
        data=body + f"--{boundary}--\r\n".encode(),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
    )
    assert response.status == 409
    items = (await response.json(content_type=None))[FAILED_SOP_SEQUENCE]["Value"]
    assert len(items) == len(REFUSED)
    for item, path in zip(items, REFUSED, strict=True):
        assert_failed_item(
            {FAILED_SOP_SEQUENCE: {"Value": [item]}}, expected_identity(path.read_bytes())
        )
