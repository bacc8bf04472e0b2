"""The tutorial's flows through dicomweb-client, the Python DICOMweb client.

Store, search, retrieve, read metadata and frames, then delete, all with
``dicomweb_client.api.DICOMwebClient`` against a live server under ``/dicom-web``, comparing
what comes back with pydicom's own reading of the sample files. The main sequence shares one
server and runs in file order; the prefix test at the end starts its own servers.

dicomweb-client sends ``Host`` without the port, so URLs the server writes into its answers
lack the port when asked through it: only their paths are checked here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from requests import HTTPError

from tests.helpers import (
    SAMPLES,
    SERIES_CIRCLE,
    SERIES_SQUARE_TRIANGLE,
    SOP_BLUE_CIRCLE,
    SOP_GREEN_SQUARE,
    SOP_RED_TRIANGLE,
    STUDY_UID,
    free_port,
)
from tests.helpers.live import LiveServer

SAMPLE_FILES = {
    SOP_RED_TRIANGLE: "red-triangle.dcm",
    SOP_GREEN_SQUARE: "green-square.dcm",
    SOP_BLUE_CIRCLE: "blue-circle.dcm",
}
ALL_SOPS = set(SAMPLE_FILES)
FRAME_SIZE = 979 * 985 * 3
DUPLICATE_SOP_INSTANCE = 0x0111


def read_sample(sop: str) -> Dataset:
    return pydicom.dcmread(SAMPLES / SAMPLE_FILES[sop])


def read_samples() -> list[Dataset]:
    return [read_sample(sop) for sop in SAMPLE_FILES]


def values(results: list[dict[str, Any]], tag: str) -> list[Any]:
    """The first value of ``tag`` in each QIDO result, in order."""
    return [result[tag]["Value"][0] for result in results]


def archived_files(archive: Path) -> list[Path]:
    """The instances and sidecars stored: not those DELETE moved to the trash (README, "Undo
    a delete")."""
    stored = (p for p in archive.rglob("*") if ".trash" not in p.relative_to(archive).parts)
    return sorted(p for p in stored if p.suffix in (".dcm", ".json"))


def assert_same_instance(retrieved: Dataset, original: Dataset) -> None:
    assert retrieved.SOPInstanceUID == original.SOPInstanceUID
    assert retrieved.SeriesInstanceUID == original.SeriesInstanceUID
    assert retrieved.StudyInstanceUID == original.StudyInstanceUID
    assert retrieved.SOPClassUID == original.SOPClassUID
    assert retrieved.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert retrieved.PixelData == original.PixelData
    assert retrieved.pixel_array.shape == (979, 985, 3)
    assert retrieved == original  # every other element too


def assert_metadata_matches(metadata: dict[str, Any], original: Dataset) -> None:
    """DICOM JSON from the server equals pydicom's, except values sent as BulkDataURI."""
    expected = original.to_json_dict()
    bulk = {tag for tag, element in metadata.items() if "BulkDataURI" in element}
    assert bulk <= {"7FE00010"}, f"unexpected bulk data elements: {bulk}"
    assert {t: e for t, e in metadata.items() if t not in bulk} == {
        t: e for t, e in expected.items() if t not in bulk
    }


def assert_http_error(error: pytest.ExceptionInfo[HTTPError], status: int) -> None:
    assert error.value.response is not None
    assert error.value.response.status_code == status


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("dicomweb-client") / "archive", free_port())
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> DICOMwebClient:
    return DICOMwebClient(url=f"{server.url}/dicom-web")


# STOW-RS -------------------------------------------------------------------------------------


def test_store_instances(client: DICOMwebClient, server: LiveServer) -> None:
    client.store_instances(read_samples())

    assert set(values(client.search_for_instances(STUDY_UID), "00080018")) == ALL_SOPS
    assert len([p for p in archived_files(server.archive) if p.suffix == ".dcm"]) == 3


def test_store_response_references_the_stored_instances(client: DICOMwebClient) -> None:
    response = client.store_instances(read_samples())

    assert "ReferencedSOPSequence" in response
    referenced = {item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence}
    assert referenced == ALL_SOPS
    assert "FailedSOPSequence" not in response


def test_store_the_same_instance_twice_is_idempotent(client: DICOMwebClient) -> None:
    client.store_instances([read_sample(SOP_RED_TRIANGLE)])
    client.store_instances([read_sample(SOP_RED_TRIANGLE)])

    found = client.search_for_instances(STUDY_UID)
    assert sorted(values(found, "00080018")) == sorted(ALL_SOPS)
    retrieved = client.retrieve_instance(STUDY_UID, SERIES_SQUARE_TRIANGLE, SOP_RED_TRIANGLE)
    assert_same_instance(retrieved, read_sample(SOP_RED_TRIANGLE))


def test_store_a_different_instance_with_an_existing_uid_is_409(
    client: DICOMwebClient,
) -> None:
    changed = read_sample(SOP_BLUE_CIRCLE)
    changed.PatientName = "Someone^Else"

    with pytest.raises(HTTPError) as error:
        client.store_instances([changed])

    assert_http_error(error, 409)
    failed = error.value.response.json()["00081198"]["Value"]
    assert [item["00081155"]["Value"][0] for item in failed] == [SOP_BLUE_CIRCLE]
    assert [item["00081197"]["Value"][0] for item in failed] == [DUPLICATE_SOP_INSTANCE]
    kept = client.retrieve_instance_metadata(STUDY_UID, SERIES_CIRCLE, SOP_BLUE_CIRCLE)
    assert kept["00100010"]["Value"] == [{"Alphabetic": "Anony Mous"}]


# QIDO-RS -------------------------------------------------------------------------------------


def test_search_for_studies_by_patient_name(client: DICOMwebClient) -> None:
    found = client.search_for_studies(search_filters={"PatientName": "Anony*"})

    assert values(found, "0020000D") == [STUDY_UID]
    assert values(found, "00201208") == [3]  # NumberOfStudyRelatedInstances
    assert values(found, "00201206") == [2]  # NumberOfStudyRelatedSeries
    assert found[0]["00080061"]["Value"] == ["OT"]  # ModalitiesInStudy
    assert urlparse(values(found, "00081190")[0]).path == f"/dicom-web/studies/{STUDY_UID}"
    assert client.search_for_studies(search_filters={"PatientName": "Nobody*"}) == []


def test_search_for_studies_by_date_range(client: DICOMwebClient) -> None:
    found = client.search_for_studies(search_filters={"StudyDate": "20200101-20201231"})

    assert values(found, "0020000D") == [STUDY_UID]
    assert client.search_for_studies(search_filters={"StudyDate": "20210101-20211231"}) == []


def test_search_for_studies_with_an_included_field(client: DICOMwebClient) -> None:
    found = client.search_for_studies(fields=["StudyDescription"])

    assert values(found, "0020000D") == [STUDY_UID]
    # the samples have no StudyDescription: it is returned empty (PS3.18 F.2.5)
    assert found[0]["00081030"] == {"vr": "LO"}


def test_search_for_series(client: DICOMwebClient) -> None:
    everywhere = client.search_for_series()
    in_study = client.search_for_series(STUDY_UID, search_filters={"Modality": "OT"})
    circle = client.search_for_series(search_filters={"SeriesInstanceUID": SERIES_CIRCLE})

    assert set(values(everywhere, "0020000E")) == {SERIES_SQUARE_TRIANGLE, SERIES_CIRCLE}
    assert values(in_study, "0020000E") == values(everywhere, "0020000E")
    assert values(circle, "0020000E") == [SERIES_CIRCLE]
    assert values(circle, "00201209") == [1]  # NumberOfSeriesRelatedInstances
    assert client.search_for_series(search_filters={"Modality": "CT"}) == []


def test_search_for_instances(client: DICOMwebClient) -> None:
    in_study = client.search_for_instances(STUDY_UID)
    in_series = client.search_for_instances(STUDY_UID, SERIES_SQUARE_TRIANGLE)
    by_uid = client.search_for_instances(search_filters={"SOPInstanceUID": SOP_BLUE_CIRCLE})

    assert set(values(in_study, "00080018")) == ALL_SOPS
    assert set(values(in_series, "00080018")) == {SOP_RED_TRIANGLE, SOP_GREEN_SQUARE}
    assert values(by_uid, "00080018") == [SOP_BLUE_CIRCLE]
    assert values(by_uid, "00280010") == [979]  # Rows
    assert values(by_uid, "00280011") == [985]  # Columns


def test_search_includes_attributes_kept_only_in_the_sidecars(client: DICOMwebClient) -> None:
    """PhotometricInterpretation and PixelSpacing are not in the in-memory index: they come
    from each match's own sidecar, and must be that instance's values."""
    found = client.search_for_instances(
        STUDY_UID, fields=["PhotometricInterpretation", "PixelSpacing", "ConversionType"]
    )

    assert set(values(found, "00080018")) == ALL_SOPS
    for result in found:
        original = read_sample(result["00080018"]["Value"][0])
        assert result["00280004"]["Value"] == [original.PhotometricInterpretation]
        assert result["00280030"]["Value"] == [float(v) for v in original.PixelSpacing]
        assert result["00080064"]["Value"] == [original.ConversionType]


def test_search_with_limit_and_offset(client: DICOMwebClient) -> None:
    everything = values(client.search_for_instances(), "00080018")
    first_page = values(client.search_for_instances(limit=2), "00080018")
    second_page = values(client.search_for_instances(limit=2, offset=2), "00080018")

    assert len(everything) == 3
    assert len(first_page) == 2
    assert first_page + second_page == everything
    assert client.search_for_instances(offset=3) == []
    remaining = client.search_for_instances(limit=1, get_remaining=True)
    assert values(remaining, "00080018") == everything


# WADO-RS -------------------------------------------------------------------------------------


def test_retrieve_study(client: DICOMwebClient) -> None:
    retrieved = client.retrieve_study(STUDY_UID)

    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(ALL_SOPS)
    for ds in retrieved:
        assert_same_instance(ds, read_sample(ds.SOPInstanceUID))


def test_retrieve_series(client: DICOMwebClient) -> None:
    retrieved = client.retrieve_series(STUDY_UID, SERIES_SQUARE_TRIANGLE)

    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(
        [SOP_RED_TRIANGLE, SOP_GREEN_SQUARE]
    )
    for ds in retrieved:
        assert_same_instance(ds, read_sample(ds.SOPInstanceUID))


def test_retrieve_instance(client: DICOMwebClient) -> None:
    retrieved = client.retrieve_instance(STUDY_UID, SERIES_CIRCLE, SOP_BLUE_CIRCLE)

    assert_same_instance(retrieved, read_sample(SOP_BLUE_CIRCLE))


def test_retrieve_study_metadata(client: DICOMwebClient) -> None:
    metadata = client.retrieve_study_metadata(STUDY_UID)

    assert sorted(m["00080018"]["Value"][0] for m in metadata) == sorted(ALL_SOPS)
    for instance in metadata:
        assert_metadata_matches(instance, read_sample(instance["00080018"]["Value"][0]))


def test_retrieve_series_metadata(client: DICOMwebClient) -> None:
    metadata = client.retrieve_series_metadata(STUDY_UID, SERIES_CIRCLE)

    assert len(metadata) == 1
    assert_metadata_matches(metadata[0], read_sample(SOP_BLUE_CIRCLE))


def test_retrieve_instance_metadata(client: DICOMwebClient) -> None:
    metadata = client.retrieve_instance_metadata(
        STUDY_UID, SERIES_SQUARE_TRIANGLE, SOP_GREEN_SQUARE
    )

    assert_metadata_matches(metadata, read_sample(SOP_GREEN_SQUARE))
    bulk = urlparse(metadata["7FE00010"]["BulkDataURI"]).path
    series = f"/dicom-web/studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}"
    assert bulk.startswith(f"{series}/instances/{SOP_GREEN_SQUARE}/")


@pytest.mark.parametrize(
    "media_types",
    [
        pytest.param(
            None,
            id="client-default",
        ),
        pytest.param(("application/octet-stream",), id="octet-stream"),
        pytest.param(
            (("application/octet-stream", ExplicitVRLittleEndian),),
            id="octet-stream-explicit-vr-little-endian",
        ),
    ],
)
def test_retrieve_instance_frames(
    client: DICOMwebClient, media_types: tuple[Any, ...] | None
) -> None:
    frames = client.retrieve_instance_frames(
        STUDY_UID, SERIES_SQUARE_TRIANGLE, SOP_RED_TRIANGLE, [1], media_types=media_types
    )

    pixel_data = read_sample(SOP_RED_TRIANGLE).PixelData
    assert len(frames) == 1
    assert len(frames[0]) == FRAME_SIZE
    assert frames[0] == pixel_data[:-1]  # without the pad byte


# DELETE --------------------------------------------------------------------------------------


def test_delete_instance(client: DICOMwebClient) -> None:
    client.delete_instance(STUDY_UID, SERIES_SQUARE_TRIANGLE, SOP_RED_TRIANGLE)

    with pytest.raises(HTTPError) as error:
        client.retrieve_instance(STUDY_UID, SERIES_SQUARE_TRIANGLE, SOP_RED_TRIANGLE)
    assert_http_error(error, 404)
    left = values(client.search_for_instances(STUDY_UID), "00080018")
    assert sorted(left) == sorted([SOP_GREEN_SQUARE, SOP_BLUE_CIRCLE])


def test_delete_series(client: DICOMwebClient) -> None:
    client.delete_series(STUDY_UID, SERIES_SQUARE_TRIANGLE)

    with pytest.raises(HTTPError) as error:
        client.retrieve_series(STUDY_UID, SERIES_SQUARE_TRIANGLE)
    assert_http_error(error, 404)
    assert values(client.search_for_series(STUDY_UID), "0020000E") == [SERIES_CIRCLE]


def test_delete_study(client: DICOMwebClient, server: LiveServer) -> None:
    client.delete_study(STUDY_UID)

    assert client.search_for_studies() == []
    assert archived_files(server.archive) == []


def test_retrieve_after_delete_is_404(client: DICOMwebClient) -> None:
    with pytest.raises(HTTPError) as error:
        client.retrieve_study(STUDY_UID)

    assert_http_error(error, 404)


# Other prefixes ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["", "/v2"], ids=["root", "v2"])
def test_round_trip_under_another_prefix(live_server: LiveServer, prefix: str) -> None:
    client = DICOMwebClient(url=f"{live_server.url}{prefix}")

    client.store_instances(read_samples())

    studies = client.search_for_studies(search_filters={"PatientName": "Anony*"})
    assert values(studies, "0020000D") == [STUDY_UID]
    assert urlparse(values(studies, "00081190")[0]).path == f"{prefix}/studies/{STUDY_UID}"
    retrieved = client.retrieve_instance(STUDY_UID, SERIES_CIRCLE, SOP_BLUE_CIRCLE)
    assert_same_instance(retrieved, read_sample(SOP_BLUE_CIRCLE))
    metadata = client.retrieve_series_metadata(STUDY_UID, SERIES_SQUARE_TRIANGLE)
    assert sorted(m["00080018"]["Value"][0] for m in metadata) == sorted(
        [SOP_RED_TRIANGLE, SOP_GREEN_SQUARE]
    )
    client.delete_study(STUDY_UID)
    with pytest.raises(HTTPError) as error:
        client.retrieve_study(STUDY_UID)
    assert_http_error(error, 404)
    assert archived_files(live_server.archive) == []
