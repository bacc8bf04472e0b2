"""QIDO-RS on any attribute, at any level, and fuzzy person names, against pydicom's reading
of the stored files.

A key memory does not hold (SliceThickness, KVP, a private tag) is matched from the
sidecars; a key of a lower level (Modality at the study level) makes a study or series match
when one of its instances does, together with every other such key; ``--index-attribute``
gives the same answers from memory. What is expected is computed with pydicom from the
datasets sent, never from the server's answers.
"""

from __future__ import annotations

import copy
import io
from collections.abc import AsyncIterator, Callable
from fnmatch import fnmatchcase
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from localdicom.app import make_app
from localdicom.archive import Archive
from localdicom.catalog import Catalog
from localdicom.catalog.searching import matched_in_sidecars
from localdicom.dicom.qido import parse_condition
from tests.helpers import app_settings, prepare_here

CORPUS = ("CT_small.dcm", "MR_small.dcm", "MR2_J2KI.dcm", "JPEG2000.dcm", "US1_J2KR.dcm")
UID_KEYWORD = {"studies": "StudyInstanceUID", "series": "SeriesInstanceUID"}
UID_KEYWORD["instances"] = "SOPInstanceUID"
PROMOTED = ("SliceThickness", "KVP", "MagneticFieldStrength")


def derived(base: Dataset, **changes) -> Dataset:
    """Another instance of ``base``'s series (or of a new one), with ``changes``."""
    ds = copy.deepcopy(base)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def datasets() -> list[Dataset]:
    """The corpus files, and three more instances in the CT study: two in its series with
    other slice thicknesses, one in a new MR series."""
    read = [pydicom.dcmread(get_testdata_file(name)) for name in CORPUS]
    ct = read[0]
    return [
        *read,
        derived(ct, SliceThickness="2.5", InstanceNumber=2),
        derived(ct, SliceThickness="1.25", InstanceNumber=3),
        derived(
            ct, SeriesInstanceUID=generate_uid(), Modality="MR", SeriesNumber=2, SliceThickness="7"
        ),
    ]


DATASETS = datasets()


def encoded(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    return None if value in (None, "") else float(value)


@pytest.fixture(params=[(), PROMOTED], ids=["from-sidecars", "index-attribute"])
async def stocked(request, aiohttp_client, archive_dir: Path):
    """A server holding DATASETS, with or without attributes promoted into the index."""
    settings = app_settings(archive_dir, index_attributes=_tags(request.param))
    client = await aiohttp_client(make_app(settings))
    for ds in DATASETS:
        response = await client.post(
            "/studies", data=encoded(ds), headers={"Content-Type": "application/dicom"}
        )
        assert response.status == 200, await response.text()
    return client


def _tags(keywords: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{pydicom.datadict.tag_for_keyword(keyword):08X}" for keyword in keywords)


async def search(client, path: str) -> list[dict]:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return await response.json(content_type=None)


def uids(results: list[dict], resource: str) -> set[str]:
    tag = f"{pydicom.datadict.tag_for_keyword(UID_KEYWORD[resource]):08X}"
    return {result[tag]["Value"][0] for result in results}


def expected(resource: str, predicate: Callable[[Dataset], bool]) -> set[str]:
    """The UIDs at ``resource``'s level of the instances ``predicate`` holds for: a study or
    series matches when one of its instances meets every condition."""
    return {ds[UID_KEYWORD[resource]].value for ds in DATASETS if predicate(ds)}


SOP_MR2 = DATASETS[2].SOPInstanceUID
QUERIES = [
    ("instances", "SliceThickness=5", lambda ds: number(ds, "SliceThickness") == 5),
    ("studies", "SliceThickness=2.5", lambda ds: number(ds, "SliceThickness") == 2.5),
    ("series", "SliceThickness=1.25", lambda ds: number(ds, "SliceThickness") == 1.25),
    ("studies", "KVP=120", lambda ds: number(ds, "KVP") == 120),
    ("series", "MagneticFieldStrength=1.5", lambda ds: number(ds, "MagneticFieldStrength") == 1.5),
    ("studies", "Manufacturer=Philips", lambda ds: ds.get("Manufacturer") == "Philips"),
    (
        "studies",
        "BodyPartExamined=WHOLE%20BODY",
        lambda ds: ds.get("BodyPartExamined") == "WHOLE BODY",
    ),
    ("studies", "ProtocolName=T1W*", lambda ds: fnmatchcase(ds.get("ProtocolName", ""), "T1W*")),
    (
        "instances",
        "00091001=GE_GENESIS_FF",
        lambda ds: (
            ds.get((0x0009, 0x1001)) is not None and ds[0x0009, 0x1001].value == "GE_GENESIS_FF"
        ),
    ),
    ("studies", f"SOPInstanceUID={SOP_MR2}", lambda ds: ds.SOPInstanceUID == SOP_MR2),
    ("studies", "Modality=MR", lambda ds: ds.Modality == "MR"),
    (
        "series",
        "Modality=MR&SliceThickness=7",
        lambda ds: ds.Modality == "MR" and number(ds, "SliceThickness") == 7,
    ),
    # one instance must meet both: the CT study's MR series is 7 mm, its 2.5 mm slice is CT
    (
        "studies",
        "Modality=MR&SliceThickness=2.5",
        lambda ds: ds.Modality == "MR" and number(ds, "SliceThickness") == 2.5,
    ),
    (
        "studies",
        "Modality=CT&SliceThickness=2.5",
        lambda ds: ds.Modality == "CT" and number(ds, "SliceThickness") == 2.5,
    ),
    ("studies", "SliceThickness=3", lambda ds: number(ds, "SliceThickness") == 3),
]


@pytest.mark.parametrize(("resource", "query", "predicate"), QUERIES, ids=[q[1] for q in QUERIES])
async def test_any_attribute_at_any_level(stocked, resource: str, query: str, predicate) -> None:
    results = await search(stocked, f"/{resource}?{query}")
    assert uids(results, resource) == expected(resource, predicate)
    assert len(results) == len(uids(results, resource))


async def test_the_matched_value_is_returned_from_the_instance_that_matched(stocked) -> None:
    """The study matched through its 2.5 mm slice: its SliceThickness is that slice's."""
    (study,) = await search(stocked, "/studies?SliceThickness=2.5")
    assert study["00180050"] == {"vr": "DS", "Value": [2.5]}
    (series,) = await search(stocked, "/series?Manufacturer=Philips&MagneticFieldStrength=1.5")
    assert series["00080070"]["Value"] == ["Philips"]
    assert series["00180087"]["Value"] == [float(DATASETS[2].MagneticFieldStrength)]
    instances = await search(stocked, "/instances?00091001=GE_GENESIS_FF")
    assert {i["00091001"]["Value"][0] for i in instances} == {"GE_GENESIS_FF"}


async def test_the_witness_is_the_first_matching_instance_in_order(stocked) -> None:
    """Three slices of the CT series match *5 (5, 2.5, 1.25 mm): the series shows the first
    by instance number."""
    ct = DATASETS[0]
    (series,) = await search(stocked, f"/studies/{ct.StudyInstanceUID}/series?SliceThickness=*5")
    assert series["0020000E"]["Value"] == [ct.SeriesInstanceUID]
    assert series["00180050"]["Value"] == [float(ct.SliceThickness)]
    later = await search(stocked, "/series?SliceThickness=*5&InstanceNumber=2\\3")
    assert [s["00180050"]["Value"] for s in later] == [[2.5]]


async def test_limit_and_offset_over_sidecar_matches(stocked) -> None:
    everything = await search(stocked, "/instances?00091001=GE_GENESIS_FF")
    assert len(everything) == 4  # the CT slice and the three made from it
    response = await stocked.get("/instances?00091001=GE_GENESIS_FF&limit=2")
    assert "additional results" in response.headers["Warning"]
    assert await response.json() == everything[:2]
    response = await stocked.get("/instances?00091001=GE_GENESIS_FF&offset=2&limit=2")
    assert "Warning" not in response.headers
    assert await response.json() == everything[2:]


async def test_a_key_given_empty_is_returned_and_reads_no_sidecar_to_match(stocked) -> None:
    results = await search(stocked, "/studies?SliceThickness=")
    assert uids(results, "studies") == {ds.StudyInstanceUID for ds in DATASETS}
    assert all("00180050" in result for result in results)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("ReferencedSeriesSequence=x", "ReferencedSeriesSequence (SQ) cannot be matched"),
        ("PixelData=x", "PixelData (OB or OW) cannot be matched"),
    ],
)
async def test_sequences_and_binary_values_cannot_be_matched(stocked, query, words) -> None:
    response = await stocked.get(f"/studies?{query}")
    assert response.status == 400
    assert words in await response.text()


async def test_promoted_attributes_are_matched_from_memory(aiohttp_client, archive_dir) -> None:
    """With --index-attribute SliceThickness, a search on it needs no sidecar: with the
    sidecars gone it answers as before, where without it nothing is found."""
    for promoted, found in ((PROMOTED, 1), ((), 0)):
        settings = app_settings(archive_dir, index_attributes=_tags(promoted))
        client = await aiohttp_client(make_app(settings))
        for ds in DATASETS:
            await client.post(
                "/studies", data=encoded(ds), headers={"Content-Type": "application/dicom"}
            )
        saved = {path: path.read_bytes() for path in archive_dir.rglob("*.json")}
        for path in saved:
            path.unlink()
        results = await search(client, "/studies?SliceThickness=2.5")
        assert len(results) == found
        if found:
            assert results[0]["00180050"]["Value"] == [2.5]
        for path, data in saved.items():
            path.write_bytes(data)
        await client.close()


# through dicomweb-client, against a live server -------------------------------------------------


def _patient(name: str) -> Dataset:
    """CT_small as a study of its own for a patient called ``name``."""
    ds = derived(DATASETS[0], PatientName=name, PatientID=name.split("^")[0].upper())
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    return ds


def test_dicomweb_client_fuzzymatching_finds_a_name_by_a_word(live_server) -> None:
    """PS3.18 8.3.4.2: PatientName=john&fuzzymatching=true finds Doe^John; without it, a name
    matches whole (case aside), and nothing is found."""
    client = DICOMwebClient(live_server.url)
    john, jane = _patient("Doe^John"), _patient("Smith^Jane")
    client.store_instances([john, jane])
    found = client.search_for_studies(search_filters={"PatientName": "john"}, fuzzymatching=True)
    assert [study["00100010"]["Value"][0]["Alphabetic"] for study in found] == ["Doe^John"]
    assert client.search_for_studies(search_filters={"PatientName": "john"}) == []
    assert (
        client.search_for_studies(search_filters={"PatientName": "john"}, fuzzymatching=False) == []
    )
    both = client.search_for_studies(search_filters={"PatientName": "doe^JOHN"})
    assert [study["0020000D"]["Value"][0] for study in both] == [john.StudyInstanceUID]


def test_dicomweb_client_searches_an_attribute_memory_does_not_hold(live_server) -> None:
    client = DICOMwebClient(live_server.url)
    client.store_instances(DATASETS[:2])
    found = client.search_for_series(search_filters={"SliceThickness": "0.8"})
    assert [series["0020000E"]["Value"][0] for series in found] == [DATASETS[1].SeriesInstanceUID]
    assert found[0]["00180050"]["Value"] == [float(DATASETS[1].SliceThickness)]


# the index snapshot: made with the attributes the index held ---------------------------------


async def _opened(root: Path, promoted: tuple[str, ...]) -> tuple[Catalog, int]:
    """A Catalog on ``root`` and how many instances its start took from the snapshot."""
    catalog = Catalog(
        Archive(root, fsync=False), prepare=prepare_here, index_attributes=_tags(promoted)
    )
    report = await catalog.open()
    return catalog, report.scan.from_snapshot


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _promoted_values(catalog: Catalog, keyword: str) -> dict[str, list]:
    tag = _tags((keyword,))[0]
    return {
        sop: catalog.attributes(record, (tag,))[tag].get("Value", [])
        for sop, record in catalog.index.instances.items()
    }


def _pydicom_values(keyword: str) -> dict[str, list]:
    return {
        ds.SOPInstanceUID: [] if ds.get(keyword) in (None, "") else [float(ds.get(keyword))]
        for ds in DATASETS
    }


async def test_a_snapshot_is_restored_only_into_an_index_of_the_same_attributes(tmp_path):
    root = tmp_path / "archive"
    catalog, _ = await _opened(root, ("SliceThickness",))
    for ds in DATASETS:
        await catalog.store(_chunks(encoded(ds)))
    catalog.save_snapshot()
    same, restored = await _opened(root, ("SliceThickness",))
    assert restored == len(DATASETS)
    assert _promoted_values(same, "SliceThickness") == _pydicom_values("SliceThickness")
    other, restored = await _opened(root, ("KVP",))
    assert restored == 0  # read from the sidecars, and the snapshot written again
    assert _promoted_values(other, "KVP") == _pydicom_values("KVP")
    plain, restored = await _opened(root, ())
    assert restored == 0
    assert not plain.index.promoted
    _, restored = await _opened(root, ())
    assert restored == len(DATASETS)


def test_an_instance_deleted_during_the_sidecar_search_does_not_match() -> None:
    """The candidates are chosen on the loop and read in a thread: a sidecar gone meanwhile
    (read gives None) is no match, and the next instance of the record is tried."""
    condition = parse_condition("00180050", "2.5")
    first, second = object(), object()
    sidecars = {first: None, second: {"00180050": {"vr": "DS", "Value": [2.5]}}}
    found = matched_in_sidecars(
        sidecars.get, [("study", [first, second])], [("00180050", condition)], None
    )
    assert [(match.record, match.witness) for match in found] == [("study", second)]
    assert (
        matched_in_sidecars(sidecars.get, [("study", [first])], [("00180050", condition)], None)
        == []
    )
