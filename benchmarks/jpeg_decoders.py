"""JPEG-family decoders side by side: pylibjpeg-libjpeg (GPL-3.0) and GDCM (BSD).

    python -m benchmarks.jpeg_decoders [--repeat 5] [--folder /tmp/jpeg-bench]

Decodes every frame of every JPEG baseline, extended, lossless, JPEG-LS and JPEG 2000 file of
pydicom's test corpus (pydicom-data), and of 512x512 images written here by GDCM's encoders
(8-bit baseline grey and colour, 12-bit extended, 16-bit lossless, JPEG-LS and JPEG 2000),
with:

- ``pylibjpeg``: pydicom's pylibjpeg plugin (pylibjpeg-libjpeg for JPEG and JPEG-LS,
  pylibjpeg-openjpeg for JPEG 2000: pydicom asks GDCM first for both once it is installed);
- ``gdcm``: pydicom's GDCM plugin (python-gdcm), frame by frame;
- ``gdcm file``: GDCM reading the whole file (localdicom's last fallback).

For each file: milliseconds per frame (median of ``--repeat`` runs), or why it failed, and
the largest difference of a pixel value between each GDCM decode and pylibjpeg's (lossy JPEG
leaves the inverse DCT's precision and the chroma upsampling to the decoder, ISO 10918-1
A.3.3, so small differences there are conformant).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pydicom.data.download
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from localdicom.dicom.decoding import decode_with_gdcm, gdcm

JPEG_FAMILY = {
    "1.2.840.10008.1.2.4.50": "baseline",
    "1.2.840.10008.1.2.4.51": "extended",
    "1.2.840.10008.1.2.4.57": "lossless",
    "1.2.840.10008.1.2.4.70": "lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near",
    "1.2.840.10008.1.2.4.90": "J2K lossless",
    "1.2.840.10008.1.2.4.91": "J2K",
}
#: Generated images: (bits stored, samples, GDCM transfer syntax name).
GENERATED = [
    (8, 1, "JPEGBaselineProcess1"),
    (8, 3, "JPEGBaselineProcess1"),
    (12, 1, "JPEGExtendedProcess2_4"),
    (16, 1, "JPEGLosslessProcess14_1"),
    (16, 1, "JPEGLSLossless"),
    (16, 1, "JPEG2000Lossless"),
]


def generate(folder: Path) -> list[Path]:
    """512x512 images (smooth gradients plus noise) encoded by GDCM, cached in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for bits, samples, syntax in GENERATED:
        path = folder / f"gdcm-{syntax}-{bits}bit-{samples}.dcm"
        if not path.exists():
            source = folder / "source.dcm"
            _native(bits, samples).save_as(source, enforce_file_format=True)
            _gdcm_encode(source, path, syntax)
        paths.append(path)
    return paths


def _native(bits: int, samples: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, keyword, generate_uid())
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    allocated = 8 if bits <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        allocated,
        bits,
        bits - 1,
        0,
    )
    y, x = np.mgrid[0:512, 0:512]
    image = (np.sin(x / 40) + np.cos(y / 30) + 2) / 4 * (2**bits - 1)
    image = image + np.random.default_rng(0).integers(0, 2 ** (bits - 4), image.shape)
    image = np.clip(image, 0, 2**bits - 1).astype(np.uint8 if allocated == 8 else "<u2")
    if samples == 3:
        image = np.stack([image, image[::-1], image[:, ::-1]], axis=-1)
    ds.PixelData = image.tobytes()
    return ds


def _gdcm_encode(source: Path, target: Path, syntax: str) -> None:
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {source}")
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM cannot encode {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"GDCM cannot write {target}")


def decoders(count: int) -> dict[str, Callable[[Path], np.ndarray]]:
    def whole_file(path: Path) -> np.ndarray:
        frames = decode_with_gdcm(path, list(range(1, count + 1)))
        stacked = np.stack([frames[n] for n in range(1, count + 1)])
        return stacked[0] if count == 1 else stacked

    return {
        "pylibjpeg": lambda path: pixel_array(path, decoding_plugin="pylibjpeg"),
        "gdcm": lambda path: pixel_array(path, decoding_plugin="gdcm"),
        "gdcm file": whole_file,
    }


def measure(path: Path, repeat: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """Cells of one row: ms per frame of each decoder, or its failure; the arrays decoded."""
    count = int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames") or 1)
    cells, arrays = [], {}
    for name, decode in decoders(count).items():
        try:
            arrays[name] = decode(path)
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                decode(path)
                times.append(time.perf_counter() - start)
            cells.append(f"{statistics.median(times) * 1000 / count:9.2f}")
        except Exception as exc:
            cells.append(f"{'fails':>9} ({_reason(exc)})")
    return cells, arrays


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    text = text.split("plugins: ")[-1]
    return text[:50]


def difference(arrays: dict[str, np.ndarray], name: str) -> str:
    """The largest difference of a pixel value between decoder ``name`` and pylibjpeg."""
    if "pylibjpeg" not in arrays or name not in arrays:
        return "-"
    mine, theirs = arrays[name].astype(np.int64), arrays["pylibjpeg"].astype(np.int64)
    if mine.shape != theirs.shape:
        return f"shape {mine.shape} vs {theirs.shape}"
    return str(int(np.abs(mine - theirs).max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "jpeg-bench")
    args = parser.parse_args()
    if gdcm is None:
        raise SystemExit("python-gdcm is not installed: pip install python-gdcm")
    warnings.simplefilter("ignore")
    files = [path for path in corpus_files() if _syntax(path) in JPEG_FAMILY] + generate(
        args.folder
    )
    print(
        f"{'file':<42} {'syntax':<13} {'bits':>4} {'frames':>6} "
        f"{'pylibjpeg':>9} {'gdcm':>9} {'gdcm file':>9}  max |Δ| gdcm, gdcm file"
    )
    decoded = dict.fromkeys(decoders(1), 0)
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        cells, arrays = measure(path, args.repeat)
        for name in arrays:
            decoded[name] += 1
        frames = int(ds.get("NumberOfFrames") or 1)
        deltas = f"{difference(arrays, 'gdcm')}, {difference(arrays, 'gdcm file')}"
        print(
            f"{path.name[:42]:<42} {JPEG_FAMILY[_syntax(path)]:<13} {ds.get('BitsStored', '?'):>4} "
            f"{frames:>6} {' '.join(cells)}  {deltas}"
        )
    print()
    print("files decoded: " + ", ".join(f"{name} {n}/{len(files)}" for name, n in decoded.items()))


def corpus_files() -> list[Path]:
    """pydicom's test files and pydicom-data's, without pydicom trying to download them."""
    pydicom.data.download._SIMULATE_NETWORK_OUTAGE = True
    return sorted((Path(p) for p in pydicom.data.get_testdata_files("*.dcm")), key=lambda p: p.name)


def _syntax(path: Path) -> str:
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    except Exception:
        return ""


if __name__ == "__main__":
    main()
