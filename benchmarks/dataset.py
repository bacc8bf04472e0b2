"""Deterministic synthetic DICOM data for the benchmarks.

CT-like 512x512 16-bit slices (a smooth body-shaped phantom plus seeded noise, so that
compression ratios are realistic), grouped in studies and series with stable UIDs derived
from names, and optionally compressed (JPEG 2000 or JPEG-LS lossless) with pydicom.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

PREFIX = "1.2.826.0.1.3680043.8.498."
SYNTAXES = {"native": ExplicitVRLittleEndian, "j2k": JPEG2000Lossless, "jls": JPEGLSLossless}
SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}


def uid(name: str) -> str:
    """A stable UID for a name, so that every run produces the same dataset."""
    return generate_uid(PREFIX, entropy_srcs=[name])


def phantom(index: int, size: int = 512) -> np.ndarray:
    """A slice: an ellipse of soft tissue with a bright 'spine' and seeded noise, in HU+1024."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    image = np.where(body, 1064, 24).astype(np.int32)
    spine = (x**2 + (y - 0.35 - 0.002 * (index % 50)) ** 2) < 0.01
    image[spine] = 2000
    image += rng.normal(0, 12, image.shape).astype(np.int32)
    return np.clip(image, 0, 4095).astype(np.uint16)


def ct_slice(
    study: str,
    series: str,
    index: int,
    *,
    patient: str = "BENCH^PATIENT",
    date: str = "20240101",
    modality: str = "CT",
    size: int = 512,
    syntax: str = "native",
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    ds.file_meta.MediaStorageSOPInstanceUID = uid(f"{series}/{index}")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(study)
    ds.SeriesInstanceUID = uid(series)
    ds.PatientName = patient
    ds.PatientID = patient.split("^")[0]
    ds.StudyDate = ds.SeriesDate = date
    ds.StudyTime = "120000"
    ds.AccessionNumber = study[-16:]
    ds.StudyDescription = f"Benchmark {study}"
    ds.SeriesDescription = f"Series {series}"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0, 0, float(index)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = phantom(index, size).tobytes()
    if syntax != "native":
        ds.compress(SYNTAXES[syntax], generate_instance_uid=False)
    return ds


def write_series(folder: Path, study: str, series: str, count: int, **options) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{series.replace('/', '_')}-{index:04d}.dcm"
        if not path.exists():
            ct_slice(study, series, index, **options).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--syntax", choices=sorted(SYNTAXES), default="native")
    args = parser.parse_args()
    paths = write_series(
        args.folder, "study-0", f"series-{args.syntax}", args.count, syntax=args.syntax
    )
    print(f"{len(paths)} files in {args.folder}")


if __name__ == "__main__":
    main()
