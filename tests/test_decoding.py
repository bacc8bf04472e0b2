"""Unit tests of the pixel description repairs and the per-frame header (no server).

tests/test_pixel_corpus.py checks the same behaviour through HTTP on real files; these pin
the rules themselves: PS3.3 C.7.6.3.1 (Pixel Representation), C.7.6.6 (Number of Frames),
C.7.6.16 (functional groups).
"""

from __future__ import annotations

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from localdicom.dicom.decoding import repair
from localdicom.dicom.render import frame_header


def header(name: str = "emri_small.dcm") -> Dataset:
    return pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)


def test_a_complete_header_is_left_alone() -> None:
    ds = header()
    before = {element.tag: element.value for element in ds}
    assert repair(ds) is False
    assert {element.tag: element.value for element in ds} == before


def test_missing_pixel_representation_is_unsigned() -> None:
    ds = header()
    del ds.PixelRepresentation
    assert repair(ds) is True
    assert ds.PixelRepresentation == 0


def test_number_of_frames_that_is_not_a_number_is_one_frame() -> None:
    ds = header("badVR.dcm")  # Number of Frames "1A"
    assert repair(ds) is True
    assert ds.NumberOfFrames == 1


def test_absent_number_of_frames_stays_absent() -> None:
    ds = header("CT_small.dcm")
    assert "NumberOfFrames" not in ds
    repair(ds)
    assert "NumberOfFrames" not in ds


def test_missing_samples_and_photometric_follow_each_other() -> None:
    ds = header("SC_rgb.dcm")
    del ds.SamplesPerPixel
    assert repair(ds) is True
    assert ds.SamplesPerPixel == 3
    grey = header()
    del grey.PhotometricInterpretation
    assert repair(grey) is True
    assert grey.PhotometricInterpretation == "MONOCHROME2"


def with_groups(shared: dict | None, per_frame: list[dict | None]) -> Dataset:
    ds = header()
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 1, 0, 50, 100
    if shared is not None:
        ds.SharedFunctionalGroupsSequence = [group(shared)]
    ds.PerFrameFunctionalGroupsSequence = [group(values or {}) for values in per_frame]
    return ds


def group(values: dict) -> Dataset:
    transformation, voi, item = Dataset(), Dataset(), Dataset()
    for keyword, value in values.items():
        target = voi if keyword.startswith("Window") else transformation
        setattr(target, keyword, value)
    if len(transformation):
        item.PixelValueTransformationSequence = [transformation]
    if len(voi):
        item.FrameVOILUTSequence = [voi]
    return item


def test_frame_values_win_over_shared_ones_which_win_over_top_level() -> None:
    ds = with_groups(
        {"RescaleSlope": 2, "RescaleIntercept": -10, "WindowCenter": 300},
        [{"WindowCenter": 700, "WindowWidth": 900}, None],
    )
    first, second = frame_header(ds, 1), frame_header(ds, 2)
    assert (first.RescaleSlope, first.RescaleIntercept) == (2, -10)
    assert (first.WindowCenter, first.WindowWidth) == (700, 900)
    assert (second.WindowCenter, second.WindowWidth) == (300, 100)
    assert (ds.RescaleSlope, ds.WindowCenter) == (1, 50), "the instance's header changed"


def test_an_instance_without_functional_groups_is_its_own_frame_header() -> None:
    ds = header()
    assert frame_header(ds, 3) is ds
