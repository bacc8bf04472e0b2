"""Header parsing (``localdicom.dicom.describing.describe``) against pydicom's own reading.

Converted values are shared between instances whose bytes are the same; these tests check that
what the sharing keys on is enough: the same bytes under another character set or byte order
must still read as pydicom reads them.
"""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from localdicom.dicom.describing import describe
from tests.helpers import SAMPLES

#: Bytes that are "Ã¼" in ISO 8859-1 and "ü" in UTF-8.
AMBIGUOUS_NAME = b"M\xc3\xbcller^Hans"


def _part10(charset: str, syntax: str = ExplicitVRLittleEndian, rows: int | None = None) -> bytes:
    ds = pydicom.dcmread(SAMPLES / "blue-circle.dcm")
    ds.SpecificCharacterSet = charset
    ds["PatientName"].value = AMBIGUOUS_NAME
    if rows is not None:
        ds.Rows = rows
    ds.file_meta.TransferSyntaxUID = syntax
    del ds.PixelData  # big endian would need the pixels swapped; not what is tested here
    buffer = io.BytesIO()
    little = syntax == ExplicitVRLittleEndian
    dcmwrite(buffer, ds, implicit_vr=False, little_endian=little, force_encoding=True)
    return buffer.getvalue()


def _as_pydicom_reads(data: bytes, keyword: str) -> dict:
    ds = pydicom.dcmread(io.BytesIO(data))
    return ds[keyword].to_json_dict(None, 1024)


@pytest.mark.parametrize("order", [["ISO_IR 100", "ISO_IR 192"], ["ISO_IR 192", "ISO_IR 100"]])
def test_the_same_bytes_in_another_character_set_read_as_that_set(order: list[str]) -> None:
    for charset in order:
        data = _part10(charset)
        header = describe(io.BytesIO(data))
        assert header.metadata["00100010"] == _as_pydicom_reads(data, "PatientName"), charset


def test_the_same_number_in_another_byte_order_reads_the_same() -> None:
    little = _part10("ISO_IR 100", rows=300)
    big = _part10("ISO_IR 100", ExplicitVRBigEndian, rows=300)
    for data in (little, big, little):
        header = describe(io.BytesIO(data))
        assert (
            header.metadata["00280010"]
            == _as_pydicom_reads(data, "Rows")
            == {
                "vr": "US",
                "Value": [300],
            }
        )
