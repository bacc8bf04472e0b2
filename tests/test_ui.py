"""The pages' server side: the viewing order of frames and their windows (dicom/slices), the
header as table rows (dicom/tagtable), QIDO-RS ``orderby`` and ``X-Total-Count``, the page
routes and /ui/api answers. Expected values come from pydicom's reading of the files; the
pages themselves in a browser are tests/test_ui_browser.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import keyword_for_tag

from localdicom.app import make_app
from localdicom.dicom.slices import full_range, ordered_frames, window
from localdicom.dicom.tagtable import tag_rows
from tests.helpers import (
    SAMPLES,
    SERIES_SQUARE_TRIANGLE,
    STUDY_UID,
    app_settings,
    ct_slice,
)
from tests.helpers.corpus import pydicom_file
from tests.helpers.http import stow
from tests.helpers.stocked import UNKNOWN

STORED = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm")


def as_json(ds: pydicom.Dataset) -> dict:
    return ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda _: "x")


def instance(ds: pydicom.Dataset) -> tuple[str, dict, int]:
    frames = int(ds.get("NumberOfFrames", 1) or 1) if "PixelData" in ds else 0
    return (ds.SOPInstanceUID, as_json(ds), frames)


# viewing order (PS3.3 C.7.6.1, C.7.6.2.1.1) ---------------------------------------------------


def oblique_slices(count: int, numbered: bool) -> list[pydicom.Dataset]:
    """Slices of an oblique stack along ``normal``, positions 2.5 mm apart."""
    row, column = np.array([1, 0, 0]), np.array([0, np.cos(0.3), np.sin(0.3)])
    normal = np.cross(row, column)
    slices = []
    for index in range(count):
        ds = ct_slice("order", "order-series", index, size=8)
        ds.ImageOrientationPatient = [*row.tolist(), *column.tolist()]
        ds.ImagePositionPatient = (np.array([10.0, -5.0, 3.0]) + normal * 2.5 * index).tolist()
        if not numbered:
            del ds.InstanceNumber
        slices.append(ds)
    return slices


def test_slices_without_numbers_come_in_space_order() -> None:
    slices = oblique_slices(12, numbered=False)
    shuffled = slices[:]
    random.Random(3).shuffle(shuffled)
    order = [frame.instance for frame in ordered_frames([instance(ds) for ds in shuffled])]
    # pydicom's values: the position along row x column cosines grows along the list
    normal = np.cross(*np.reshape(slices[0].ImageOrientationPatient, (2, 3)))
    expected = sorted(shuffled, key=lambda ds: float(np.dot(ds.ImagePositionPatient, normal)))
    assert order == [ds.SOPInstanceUID for ds in expected] == [ds.SOPInstanceUID for ds in slices]


def test_instance_number_first_then_position() -> None:
    """Two acquisitions numbered 1..3 each: by number, and within a number by place."""
    slices = oblique_slices(6, numbered=True)
    for index, ds in enumerate(slices):
        ds.InstanceNumber = index % 3 + 1
    shuffled = slices[::-1]
    order = [frame.instance for frame in ordered_frames([instance(ds) for ds in shuffled])]
    expected = [slices[i].SOPInstanceUID for i in (0, 3, 1, 4, 2, 5)]
    assert order == expected


def test_frames_of_a_multi_frame_instance_follow_each_other() -> None:
    ds = pydicom.dcmread(pydicom_file("emri_small.dcm"))
    report = ct_slice("order", "order-series", 0, size=8)
    del report.PixelData
    frames = ordered_frames([instance(ds), instance(report)])
    assert [(f.instance, f.number) for f in frames] == [
        (ds.SOPInstanceUID, n) for n in range(1, int(ds.NumberOfFrames) + 1)
    ]


def test_window_of_an_instance_and_of_functional_groups() -> None:
    ct = pydicom.dcmread(pydicom_file("CT_small.dcm"))

    def first(value) -> float:
        return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)

    if "WindowCenter" in ct:
        assert window(as_json(ct)) == (first(ct.WindowCenter), first(ct.WindowWidth))
    enhanced = pydicom.dcmread(pydicom_file("eCT_Supplemental.dcm"))
    voi = enhanced.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    assert window(as_json(enhanced), 2) == (first(voi.WindowCenter), first(voi.WindowWidth))
    assert window(as_json(pydicom.dcmread(SAMPLES / "red-triangle.dcm"))) is None


def test_full_range_goes_through_the_modality_lut() -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    signed = ds.PixelRepresentation == 1
    low = -(2 ** (ds.BitsStored - 1)) if signed else 0
    high = 2 ** (ds.BitsStored - 1) - 1 if signed else 2**ds.BitsStored - 1
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    center, width = full_range(as_json(ds))
    assert width == pytest.approx((high - low) * slope)
    assert center == pytest.approx((low + high) / 2 * slope + intercept)


# the header as rows -------------------------------------------------------------------------


def test_tag_rows_expand_sequences_with_keywords() -> None:
    ds = pydicom.dcmread(pydicom_file("rtplan.dcm"))
    rows = tag_rows(as_json(ds))
    top = [row for row in rows if row["depth"] == 0]
    assert [row["keyword"] for row in top] == [element.keyword for element in ds]
    assert [row["vr"] for row in top] == [element.VR for element in ds]
    beams = ds.BeamSequence
    place = next(i for i, row in enumerate(rows) if row["keyword"] == "BeamSequence")
    items = [row for row in rows[place + 1 :] if row["depth"] == 1]
    assert [row["keyword"] for row in items][: len(beams)] == [
        f"Item {n}" for n in range(1, len(beams) + 1)
    ]
    name = next(row for row in rows if row["keyword"] == "BeamName")
    assert name["depth"] == 2 and name["value"] == beams[0].BeamName
    patient = next(row for row in rows if row["keyword"] == "PatientName")
    assert patient["value"] == str(ds.PatientName)


def test_tag_rows_say_what_a_private_creator_is() -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    rows = {row["tag"]: row for row in tag_rows(as_json(ds))}
    for element in ds:
        tag = f"({element.tag.group:04X},{element.tag.element:04X})"
        if element.tag.is_private_creator:
            assert rows[tag]["keyword"] == "PrivateCreator"
        elif not element.tag.is_private:
            assert rows[tag]["keyword"] == keyword_for_tag(element.tag)


# over HTTP --------------------------------------------------------------------------------


@pytest.fixture
async def stocked(aiohttp_client, archive_dir: Path):
    client = await aiohttp_client(make_app(app_settings(archive_dir, samples=True)))
    for name in STORED:
        assert (await stow(client, pydicom_file(name).read_bytes())).status == 200
    return client


def names(body: list[dict]) -> list[str]:
    return [study.get("00100010", {}).get("Value", [{}])[0].get("Alphabetic", "") for study in body]


async def test_orderby_sorts_before_paging(stocked) -> None:
    files = [pydicom_file(name) for name in STORED] + [SAMPLES / "red-triangle.dcm"]
    by_study = {
        (ds := pydicom.dcmread(path)).StudyInstanceUID: str(ds.PatientName) for path in files
    }
    present = sorted((name for name in by_study.values() if name), key=str.casefold)
    expected = present + [""] * (len(by_study) - len(present))  # no name: last either way
    response = await stocked.get("/studies?orderby=PatientName")
    assert names(await response.json()) == expected
    assert response.headers["X-Total-Count"] == str(len(expected))
    backwards = await stocked.get("/studies?orderby=-PatientName&limit=2&offset=1")
    assert names(await backwards.json()) == (present[::-1] + expected[len(present) :])[1:3]
    assert backwards.headers["X-Total-Count"] == str(len(expected))
    assert "additional results" in backwards.headers["Warning"]


async def test_orderby_numbers_by_value_and_several_keys(stocked) -> None:
    response = await stocked.get("/studies?orderby=-NumberOfStudyRelatedInstances,PatientID")
    counts = [s["00201208"]["Value"][0] for s in await response.json()]
    assert counts == sorted(counts, reverse=True)


async def test_orderby_a_key_memory_does_not_hold(stocked) -> None:
    """SliceThickness is read from the sidecars; instances without it come last."""
    response = await stocked.get("/instances?orderby=SliceThickness&includefield=SliceThickness")
    values = [i.get("00180050", {}).get("Value", [None])[0] for i in await response.json()]
    present = [v for v in values if v is not None]
    assert present and values == sorted(present) + [None] * (len(values) - len(present))


async def test_orderby_refuses_what_has_no_order(stocked) -> None:
    for value in ("NoSuchKeyword", "ReferencedSeriesSequence"):
        response = await stocked.get(f"/studies?orderby={value}")
        assert response.status == 400
        assert value in await response.text()


async def test_total_count_is_left_out_when_a_page_stopped_a_sidecar_search(stocked) -> None:
    """PhotometricInterpretation is read from each sidecar until the page is full."""
    total = await stocked.get("/instances?limit=1")
    assert int(total.headers["X-Total-Count"]) == len(
        await (await stocked.get("/instances")).json()
    )
    monochrome = [pydicom_file(name) for name in STORED]
    assert all(pydicom.dcmread(p).PhotometricInterpretation.startswith("MONO") for p in monochrome)
    stopped = await stocked.get("/instances?PhotometricInterpretation=MONO*&limit=1")
    assert "X-Total-Count" not in stopped.headers
    whole = await stocked.get("/instances?PhotometricInterpretation=MONO*&limit=10")
    assert whole.headers["X-Total-Count"] == str(len(monochrome))


async def test_pages_name_the_site_root_and_404_what_is_not_stored(stocked) -> None:
    home = await (await stocked.get("/")).text()
    assert '<base href="./">' in home
    study = await stocked.get(f"/ui/studies/{STUDY_UID}")
    assert study.status == 200 and '<base href="../../">' in await study.text()
    series = await stocked.get(f"/ui/studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}")
    assert '<base href="../../../../">' in await series.text()
    assert "{{" not in home + await study.text() + await series.text()
    for path in (f"/ui/studies/{UNKNOWN}", f"/ui/studies/{STUDY_UID}/series/{UNKNOWN}"):
        missing = await stocked.get(path)
        assert missing.status == 404
        assert UNKNOWN in await missing.text()
    for name in ("common.js", "home.js", "upload.js", "study.js", "viewer.js", "ui.css"):
        assert (await stocked.get(f"/static/{name}")).status == 200


async def test_frames_of_a_series_in_instance_number_order(stocked) -> None:
    files = [SAMPLES / "green-square.dcm", SAMPLES / "red-triangle.dcm"]
    read = sorted((pydicom.dcmread(path) for path in files), key=lambda ds: ds.InstanceNumber)
    url = f"/ui/api/studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}/frames"
    body = await (await stocked.get(url)).json()
    assert [(f["instance"], f["frame"]) for f in body["frames"]] == [
        (ds.SOPInstanceUID, 1) for ds in read
    ]
    assert body["range"] == list(full_range(as_json(read[0])))
    missing = await stocked.get(f"/ui/api/studies/{STUDY_UID}/series/{UNKNOWN}/frames")
    assert missing.status == 404


async def test_series_page_carries_its_frames_and_preloads_the_first_shown(stocked) -> None:
    series = f"studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}"
    frames = await (await stocked.get(f"/ui/api/{series}/frames")).json()
    page = await (await stocked.get(f"/ui/{series}?slice=2")).text()
    embedded = page.split('<script id="frames-data" type="application/json">')[1]
    assert json.loads(embedded.split("</script>")[0]) == frames
    second = frames["frames"][1]
    preload = f"{series}/instances/{second['instance']}/frames/1/rendered"
    assert f'<link rel="preload" as="fetch" crossorigin href="{preload}">' in page
    windowed = await (await stocked.get(f"/ui/{series}?window=40,400")).text()
    assert 'rel="preload"' not in windowed


async def test_tags_of_an_instance(stocked) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    path = f"{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    body = await (await stocked.get(f"/ui/api/studies/{path}/tags")).json()
    rows = {row["keyword"]: row for row in body["rows"]}
    assert rows["PatientName"]["value"] == str(ds.PatientName)
    assert rows["PixelData"]["value"] == "(bulk data)"
    assert json.dumps(body)  # plain JSON all through


async def test_orderby_date_and_time_in_either_direction(stocked) -> None:
    """The studies page's default order (the index's own, reversed): by pydicom's dates."""
    files = [pydicom_file(name) for name in STORED] + [SAMPLES / "red-triangle.dcm"]
    read = {(ds := pydicom.dcmread(path)).StudyInstanceUID: ds for path in files}
    dated = [ds for ds in read.values() if ds.get("StudyDate")]
    undated = [ds.StudyInstanceUID for ds in read.values() if not ds.get("StudyDate")]
    key = lambda ds: (ds.StudyDate, ds.get("StudyTime", ""))  # noqa: E731
    for query, reverse in (("StudyDate,StudyTime", False), ("-StudyDate,-StudyTime", True)):
        response = await stocked.get(f"/studies?orderby={query}")
        shown = [study["0020000D"]["Value"][0] for study in await response.json()]
        expected = [ds.StudyInstanceUID for ds in sorted(dated, key=key, reverse=reverse)]
        assert shown[: len(expected)] == expected
        assert sorted(shown[len(expected) :]) == sorted(undated)


async def test_orderby_an_attribute_of_a_higher_level(stocked) -> None:
    """Series sorted by their study's patient name (the parent's value), then number."""
    response = await stocked.get("/series?orderby=PatientName,-SeriesNumber")
    rows = [
        (
            s.get("00100010", {}).get("Value", [{}])[0].get("Alphabetic", ""),
            s.get("00200011", {}).get("Value", [None])[0],
        )
        for s in await response.json()
    ]
    named = [row for row in rows if row[0]]
    assert [name for name, _ in named] == sorted((name for name, _ in named), key=str.casefold)
    for name in {name for name, _ in named}:
        numbers = [number for each, number in named if each == name and number is not None]
        assert numbers == sorted(numbers, reverse=True)
    assert all(not name for name, _ in rows[len(named) :])
