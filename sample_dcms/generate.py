"""Generate the three sample DICOM files of Microsoft's Azure DICOM tutorial.

The Azure Health Data Services DICOM tutorial uploads, queries and retrieves
three tiny "Fake DICOM" instances: ``blue-circle.dcm``, ``green-square.dcm``
and ``red-triangle.dcm``.  localdicom uses the same instances as fixtures so
that the tutorial's requests and expected answers work against it unchanged.

Rather than committing opaque binaries of unknown provenance, this script
rebuilds them from the tutorial's published metadata (the attribute values,
including all UIDs, are written below as data).  The pixel data is a black
RGB image with the coloured shape drawn in the middle.  Output is fully
deterministic: no current dates, no random UIDs, and fixed File Meta
Information, so running the script twice gives byte-identical files.

Usage::

    python sample_dcms/generate.py [OUTPUT_DIR]

``OUTPUT_DIR`` defaults to the folder this script lives in.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

ROWS = 979
COLUMNS = 985

STUDY_INSTANCE_UID = "1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"

# Fixed so the files do not depend on the installed pydicom version.  Derived
# once with pydicom.uid.generate_uid(entropy_srcs=[
#     "localdicom sample_dcms/generate.py ImplementationClassUID"]).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.90943578056649298173792475900443057431"
IMPLEMENTATION_VERSION_NAME = "LOCALDICOM_1"

Mask = np.ndarray  # boolean array of shape (ROWS, COLUMNS)

# Shapes are centred on the image and span about half of its width.
CENTRE_Y = ROWS // 2
CENTRE_X = COLUMNS // 2
HALF_SIZE = COLUMNS // 4


@dataclass(frozen=True)
class Sample:
    """Per-file values; everything else is shared by the three instances."""

    filename: str
    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    instance_number: int
    image_comments: str
    color: tuple[int, int, int]
    shape: Callable[[np.ndarray, np.ndarray], Mask]


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Return row and column index arrays, each of shape (ROWS, COLUMNS)."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    return y, x


def circle(y: np.ndarray, x: np.ndarray) -> Mask:
    """Return the mask of a filled circle of radius HALF_SIZE."""
    return (y - CENTRE_Y) ** 2 + (x - CENTRE_X) ** 2 <= HALF_SIZE**2


def square(y: np.ndarray, x: np.ndarray) -> Mask:
    """Return the mask of a filled square with side 2 * HALF_SIZE."""
    return (np.abs(y - CENTRE_Y) <= HALF_SIZE) & (np.abs(x - CENTRE_X) <= HALF_SIZE)


def triangle(y: np.ndarray, x: np.ndarray) -> Mask:
    """Return the mask of an apex-up triangle, base and height 2 * HALF_SIZE."""
    top = CENTRE_Y - HALF_SIZE
    height = 2 * HALF_SIZE
    # Half-width grows linearly from 0 at the apex to HALF_SIZE at the base;
    # integer arithmetic keeps the edges exact and platform independent.
    inside_rows = (y >= top) & (y <= top + height)
    inside_cols = 2 * np.abs(x - CENTRE_X) <= (y - top)
    return inside_rows & inside_cols


SAMPLES = (
    Sample(
        filename="blue-circle.dcm",
        series_instance_uid="1.2.826.0.1.3680043.8.498.77033797676425927098669402985243398207",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.13273713909719068980354078852867170114",
        series_number=2,
        instance_number=1,
        image_comments="Fake DICOM - Blue Circle",
        color=(0, 0, 255),
        shape=circle,
    ),
    Sample(
        filename="green-square.dcm",
        series_instance_uid="1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.12714725698140337137334606354172323212",
        series_number=1,
        instance_number=2,
        image_comments="Fake DICOM - Green Square",
        color=(0, 255, 0),
        shape=square,
    ),
    Sample(
        filename="red-triangle.dcm",
        series_instance_uid="1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395",
        series_number=1,
        instance_number=1,
        image_comments="Fake DICOM - Red Triangle",
        color=(255, 0, 0),
        shape=triangle,
    ),
)


def render(sample: Sample) -> bytes:
    """Return interleaved 8-bit RGB pixel data, padded to an even length."""
    pixels = np.zeros((ROWS, COLUMNS, 3), dtype=np.uint8)
    pixels[sample.shape(*_grid())] = sample.color
    data = pixels.tobytes()
    return data + b"\x00" * (len(data) % 2)


def build_dataset(sample: Sample) -> Dataset:
    """Build the complete Part 10 dataset for one sample."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sample.sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128

    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = UID(sample.sop_instance_uid)
    ds.StudyDate = "20200922"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.ConversionType = "SYN"
    ds.ReferringPhysicianName = "Doctor Doc"
    ds.PatientName = "Anony Mous"
    ds.PatientID = "ID1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.PatientAge = "024Y"
    ds.StudyInstanceUID = UID(STUDY_INSTANCE_UID)
    ds.SeriesInstanceUID = UID(sample.series_instance_uid)
    ds.StudyID = "1"
    ds.SeriesNumber = sample.series_number
    ds.InstanceNumber = sample.instance_number
    ds.PatientOrientation = ""
    ds.Laterality = ""
    ds.ImageComments = sample.image_comments

    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.PixelSpacing = [1, 1]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    # Ambiguous "US or SS" in the dictionary; unsigned since PixelRepresentation 0.
    ds.add_new("SmallestImagePixelValue", "US", 0)
    ds.add_new("LargestImagePixelValue", "US", 255)
    ds.add_new("PixelData", "OB", render(sample))
    return ds


def generate(output_dir: Path) -> list[Path]:
    """Write the three sample files into ``output_dir`` and return their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for sample in SAMPLES:
        path = output_dir / sample.filename
        dcmwrite(path, build_dataset(sample), enforce_file_format=True)
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    """Command-line entry point; ``argv[0]`` may name the output folder."""
    if len(argv) > 1:
        print(f"usage: {Path(__file__).name} [OUTPUT_DIR]", file=sys.stderr)
        return 2
    output_dir = Path(argv[0]) if argv else Path(__file__).resolve().parent
    for path in generate(output_dir):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
