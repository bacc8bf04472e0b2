"""pydicom's test corpus, sorted out with pydicom alone, and what pydicom reads from it.

The corpus is ``pydicom.data.get_testdata_files("*.dcm")``: pydicom's own test files plus the
pydicom-data package. :data:`CORPUS` says for each file whether it is a Part 10 instance with
four valid identifying UIDs (storable) or why the server must refuse it; the frame helpers
give each frame as pydicom reads it, to compare with what the server sends.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pydicom.data.download
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

from tests.helpers.http import stow

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


# the corpus ------------------------------------------------------------------------------


def corpus_files(*, charsets: bool = False) -> list[Path]:
    """The test corpus (with pydicom's character set files if ``charsets``), sorted by name;
    nothing is downloaded.

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
            if charsets:
                paths += pydicom.data.get_charset_files("*.dcm")
    finally:
        download._SIMULATE_NETWORK_OUTAGE = saved
    return sorted({Path(p) for p in paths}, key=lambda p: p.name)


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


# storing ---------------------------------------------------------------------------------


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


# frames as pydicom reads them ------------------------------------------------------------


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


def pydicom_file(name: str) -> Path:
    """One file of pydicom's test corpus; the test is skipped where pydicom-data lacks it."""
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return Path(path)
