"""Azure's DICOMweb curl tutorial, replayed command by command with the real ``curl``.

The commands below are copied from the seed tutorial ("Uso de las API estándar de DICOMweb con
cURL", Spanish) with its placeholders left in. Only its obvious typos are fixed: the missing
slash after ``studies`` in the series metadata URL, the missing closing quote on the
Content-Type of "store instances for a specific study", and the truncated final DELETE (which
also lacked the space after ``curl``). ``{Service URL}/v{version}`` becomes the server's
``/v1``, ``{path-to-dicoms}`` the repository's sample_dcms folder. curl runs in a temporary
folder, so the tutorial's ``--trace-ascii "trace.txt"`` and ``--output "suppressWarnings.txt"``
land there.

The tests run in tutorial order against one server: STOW, WADO, QIDO, DELETE.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

import pydicom
import pytest

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

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
FRAME_SIZE = 979 * 985 * 3  # rows x columns x samples per pixel, 8 bits each

#: SOP Instance UID -> (sample file, Series Instance UID)
SAMPLE_FILES = {
    SOP_RED_TRIANGLE: ("red-triangle.dcm", SERIES_SQUARE_TRIANGLE),
    SOP_GREEN_SQUARE: ("green-square.dcm", SERIES_SQUARE_TRIANGLE),
    SOP_BLUE_CIRCLE: ("blue-circle.dcm", SERIES_CIRCLE),
}

# The tutorial's commands -----------------------------------------------------------------

STORE_MULTIPART = """
curl --location --request POST "{Service URL}/v{version}/studies"
--header "Accept: application/dicom+json"
--header "Content-Type: multipart/related; type=\\"application/dicom\\""
--header "Authorization: Bearer {token value}"
--form "file1=@{path-to-dicoms}/red-triangle.dcm;type=application/dicom"
--trace-ascii "trace.txt"
"""

# Fixed: the closing quote of the Content-Type header was missing.
STORE_FOR_STUDY = """
curl --request POST "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
--header "Accept: application/dicom+json"
--header "Content-Type: multipart/related; type=\\"application/dicom\\""
--header "Authorization: Bearer {token value}"
--form "file1=@{path-to-dicoms}/blue-circle.dcm;type=application/dicom"
"""  # noqa: E501

STORE_SINGLE = """
curl --location --request POST "{Service URL}/v{version}/studies"
--header "Accept: application/dicom+json"
--header "Content-Type: application/dicom"
--header "Authorization: Bearer {token value}"
--data-binary "@{path-to-dicoms}/green-square.dcm"
"""

RETRIEVE_STUDY = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
--header "Accept: multipart/related; type=\\"application/dicom\\"; transfer-syntax=*"
--header "Authorization: Bearer {token value}"
--output "suppressWarnings.txt"
"""  # noqa: E501

RETRIEVE_STUDY_METADATA = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/metadata"
--header "Accept: application/dicom+json"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

RETRIEVE_SERIES = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/series/1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
--header "Accept: multipart/related; type=\\"application/dicom\\"; transfer-syntax=*"
--header "Authorization: Bearer {token value}"
--output "suppressWarnings.txt"
"""  # noqa: E501

# Fixed: the tutorial has "studies1.2.826..." (no slash after "studies").
RETRIEVE_SERIES_METADATA = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/series/1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652/metadata"
--header "Accept: application/dicom+json"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

RETRIEVE_INSTANCE = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/series/1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652/instances/1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395"
--header "Accept: application/dicom; transfer-syntax=*"
--header "Authorization: Bearer {token value}"
--output "suppressWarnings.txt"
"""  # noqa: E501

RETRIEVE_INSTANCE_METADATA = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/series/1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652/instances/1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395/metadata"
--header "Accept: application/dicom+json"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

RETRIEVE_FRAMES = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/series/1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652/instances/1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395/frames/1"
--header "Accept: multipart/related; type=\\"application/octet-stream\\"; transfer-syntax=1.2.840.10008.1.2.1"
--header "Authorization: Bearer {token value}"
--output "suppressWarnings.txt"
"""  # noqa: E501

#: The three Accept headers the tutorial lists for frames, the first being the command's own.
FRAME_ACCEPTS = [
    'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1',
    'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    'multipart/related; type="application/octet-stream";',
]

SEARCH_STUDIES = """
curl --request GET "{Service URL}/v{version}/studies?StudyInstanceUID=1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
--header "Accept: application/dicom+json"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

SEARCH_SERIES = """
curl --request GET "{Service URL}/v{version}/series?SeriesInstanceUID=1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
--header "Accept: application/dicom+json"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

SEARCH_SERIES_IN_STUDY = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/series?SeriesInstanceUID=1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
--header "Accept: application/dicom+json"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

SEARCH_INSTANCES = """
curl --request GET "{Service URL}/v{version}/instances?SOPInstanceUID=1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395"
--header "Accept: application/dicom+json"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

SEARCH_INSTANCES_IN_STUDY = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/instances?SOPInstanceUID=1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395"
--header "Accept: application/dicom+json"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

SEARCH_INSTANCES_IN_SERIES = """
curl --request GET "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/series/1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652/instances?SOPInstanceUID=1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395"
--header "Accept: application/dicom+json"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

DELETE_INSTANCE = """
curl --request DELETE "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/series/1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652/instances/1.2.826.0.1.3680043.8.498.47359123102728459884412887463296905395"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

DELETE_SERIES = """
curl --request DELETE "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420/series/1.2.826.0.1.3680043.8.498.45787841905473114233124723359129632652"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501

# Fixed: the tutorial has
#   curl--request DELETE "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498
# (no space after curl, the URL cut short, no closing quote).
DELETE_STUDY = """
curl --request DELETE "{Service URL}/v{version}/studies/1.2.826.0.1.3680043.8.498.13230779778012324449356534479549187420"
--header "Authorization: Bearer {token value}"
"""  # noqa: E501


# Running curl ----------------------------------------------------------------------------


@dataclass
class Curl:
    """Runs tutorial commands against one server, in one working folder."""

    server: LiveServer
    workdir: Path

    @property
    def base(self) -> str:
        """What ``{Service URL}/v{version}`` stands for."""
        return f"{self.server.url}/v1"

    def run(self, command: str, *extra: str) -> tuple[int, bytes]:
        """Run a tutorial command (placeholders filled in, lines joined) plus ``extra`` options.

        Returns the HTTP status and what curl wrote to stdout (nothing with ``--output``).
        """
        text = (
            command.replace("{Service URL}", self.server.url)
            .replace("{version}", "1")
            .replace("{path-to-dicoms}", str(SAMPLES))
            .replace("{token value}", "tutorial-token")
        )
        args = shlex.split(" ".join(text.split("\n")))
        assert args[0] == "curl"
        return self.run_args(*args, *extra)

    def run_args(self, *args: str) -> tuple[int, bytes]:
        completed = subprocess.run(
            [*args, "--silent", "--show-error", "--write-out", "%{http_code}"],
            cwd=self.workdir,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr.decode(errors="replace")
        return int(completed.stdout[-3:]), completed.stdout[:-3]

    def output(self) -> bytes:
        """What the last command wrote to the tutorial's ``--output`` file."""
        return (self.workdir / "suppressWarnings.txt").read_bytes()

    def headers(self) -> Message:
        """The final response headers of the last command run with ``--dump-header``."""
        text = (self.workdir / "headers.txt").read_bytes().decode("latin-1")
        blocks = text.strip().split("\r\n\r\n")
        _status_line, _, fields = blocks[-1].partition("\r\n")
        return HeaderParser().parsestr(fields)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server on an empty archive for the whole tutorial."""
    live = LiveServer(tmp_path_factory.mktemp("tutorial") / "archive", free_port())
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def curl(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Curl:
    return Curl(server, tmp_path_factory.mktemp("curl"))


# Helpers ---------------------------------------------------------------------------------


def sample_bytes(sop: str) -> bytes:
    return (SAMPLES / SAMPLE_FILES[sop][0]).read_bytes()


def instance_url(base: str, sop: str) -> str:
    return f"{base}/studies/{STUDY_UID}/series/{SAMPLE_FILES[sop][1]}/instances/{sop}"


def archived_files(archive: Path) -> list[Path]:
    """The instances and sidecars stored: not those DELETE moved to the trash (README, "Undo
    a delete")."""
    stored = (p for p in archive.rglob("*") if ".trash" not in p.relative_to(archive).parts)
    return sorted(p for p in stored if p.suffix in (".dcm", ".json"))


def value(element: dict[str, Any] | None) -> list[Any] | None:
    return None if element is None else element.get("Value")


def assert_stored(body: bytes, base: str, sops: set[str]) -> None:
    """A STOW-RS response that references exactly ``sops``, with their RetrieveURLs."""
    response = json.loads(body)
    assert "00081198" not in response, f"failed SOP sequence: {response['00081198']}"
    items = response["00081199"]["Value"]
    assert {value(item["00081155"])[0] for item in items} == sops
    for item in items:
        sop = value(item["00081155"])[0]
        assert value(item["00081150"]) == [SECONDARY_CAPTURE]
        assert value(item["00081190"]) == [instance_url(base, sop)]
    assert value(response["00081190"]) == [f"{base}/studies/{STUDY_UID}"]


def multipart_parts(body: bytes, content_type: Message) -> list[tuple[Message, bytes]]:
    """The parts of a multipart body, split on the boundary its Content-Type names."""
    boundary = content_type.get_param("boundary")
    assert boundary, f"no boundary in {content_type['Content-Type']!r}"
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    sections = (b"\r\n" + body).split(delimiter)
    assert sections[0] == b"", "unexpected preamble"
    assert sections[-1].startswith(b"--"), "no close delimiter"
    parts = []
    for section in sections[1:-1]:
        head, separator, data = section.partition(b"\r\n\r\n")
        assert separator, "a part without a header/body separator"
        parts.append((HeaderParser().parsestr(head.decode("latin-1").strip()), data))
    return parts


def read_pixel_data(sop: str) -> bytes:
    return pydicom.dcmread(SAMPLES / SAMPLE_FILES[sop][0]).PixelData


def check_metadata(body: bytes, base: str, sops: set[str]) -> None:
    instances = json.loads(body)
    assert len(instances) == len(sops)
    assert {value(instance["00080018"])[0] for instance in instances} == sops
    for instance in instances:
        sop = value(instance["00080018"])[0]
        assert value(instance["0020000D"]) == [STUDY_UID]
        assert value(instance["0020000E"]) == [SAMPLE_FILES[sop][1]]
        assert value(instance["00100010"]) == [{"Alphabetic": "Anony Mous"}]
        assert value(instance["00280010"]) == [979]
        assert value(instance["00280011"]) == [985]
        bulk = instance["7FE00010"]["BulkDataURI"]
        assert bulk.startswith(instance_url(base, sop) + "/"), bulk


def search(curl: Curl, command: str) -> list[dict[str, Any]]:
    status, body = curl.run(command)
    assert status == 200, body
    return json.loads(body)


def check_study_result(result: dict[str, Any], base: str) -> None:
    assert value(result["0020000D"]) == [STUDY_UID]
    assert value(result["00081190"]) == [f"{base}/studies/{STUDY_UID}"]
    assert value(result["00201206"]) == [2]  # NumberOfStudyRelatedSeries
    assert value(result["00201208"]) == [3]  # NumberOfStudyRelatedInstances
    assert value(result["00080061"]) == ["OT"]  # ModalitiesInStudy
    assert value(result["00100010"]) == [{"Alphabetic": "Anony Mous"}]
    assert value(result["00100020"]) == ["ID1"]
    assert value(result["00080020"]) == ["20200922"]
    assert value(result["00080056"]) == ["ONLINE"]


def check_series_result(result: dict[str, Any], base: str) -> None:
    assert value(result["0020000E"]) == [SERIES_SQUARE_TRIANGLE]
    assert value(result["0020000D"]) == [STUDY_UID]
    assert value(result["00080060"]) == ["OT"]  # Modality
    assert value(result["00200011"]) == [1]  # SeriesNumber
    assert value(result["00201209"]) == [2]  # NumberOfSeriesRelatedInstances
    assert value(result["00081190"]) == [
        f"{base}/studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}"
    ]


def check_instance_result(result: dict[str, Any], base: str) -> None:
    assert value(result["00080018"]) == [SOP_RED_TRIANGLE]
    assert value(result["00080016"]) == [SECONDARY_CAPTURE]
    assert value(result["0020000D"]) == [STUDY_UID]
    assert value(result["0020000E"]) == [SERIES_SQUARE_TRIANGLE]
    assert value(result["00200013"]) == [1]  # InstanceNumber
    assert value(result["00280010"]) == [979]
    assert value(result["00280011"]) == [985]
    assert value(result["00280100"]) == [8]
    assert value(result["00081190"]) == [instance_url(base, SOP_RED_TRIANGLE)]


# Carga de instancias DICOM (STOW) ---------------------------------------------------------


@pytest.mark.external
def test_store_instances_using_multipart_related(curl: Curl) -> None:
    status, body = curl.run(STORE_MULTIPART)

    assert status == 200, body
    assert_stored(body, curl.base, {SOP_RED_TRIANGLE})
    trace = (curl.workdir / "trace.txt").read_text("latin-1")
    assert "POST /v1/studies HTTP/1.1" in trace
    assert 'Content-Type: multipart/related; type="application/dicom"' in trace
    stored = curl.server.archive / STUDY_UID / SERIES_SQUARE_TRIANGLE / f"{SOP_RED_TRIANGLE}.dcm"
    assert stored.read_bytes() == sample_bytes(SOP_RED_TRIANGLE)


@pytest.mark.external
def test_store_instances_for_a_specific_study(curl: Curl) -> None:
    status, body = curl.run(STORE_FOR_STUDY)

    assert status == 200, body
    assert_stored(body, curl.base, {SOP_BLUE_CIRCLE})
    stored = curl.server.archive / STUDY_UID / SERIES_CIRCLE / f"{SOP_BLUE_CIRCLE}.dcm"
    assert stored.read_bytes() == sample_bytes(SOP_BLUE_CIRCLE)


@pytest.mark.external
def test_store_single_instance(curl: Curl) -> None:
    status, body = curl.run(STORE_SINGLE)

    assert status == 200, body
    assert_stored(body, curl.base, {SOP_GREEN_SQUARE})
    stored = curl.server.archive / STUDY_UID / SERIES_SQUARE_TRIANGLE / f"{SOP_GREEN_SQUARE}.dcm"
    assert stored.read_bytes() == sample_bytes(SOP_GREEN_SQUARE)


# Recuperación de DICOM (WADO) --------------------------------------------------------------


@pytest.mark.external
def test_retrieve_all_instances_within_a_study(curl: Curl) -> None:
    status, _ = curl.run(RETRIEVE_STUDY, "--dump-header", "headers.txt")

    assert status == 200
    headers = curl.headers()
    assert headers.get_content_type() == "multipart/related"
    assert headers.get_param("type") == "application/dicom"
    parts = multipart_parts(curl.output(), headers)
    assert len(parts) == 3
    for part_headers, _ in parts:
        assert part_headers.get_content_type() == "application/dicom"
    assert sorted(data for _, data in parts) == sorted(map(sample_bytes, SAMPLE_FILES))


@pytest.mark.external
def test_retrieve_metadata_of_all_instances_in_study(curl: Curl) -> None:
    status, body = curl.run(RETRIEVE_STUDY_METADATA)

    assert status == 200, body
    check_metadata(body, curl.base, {SOP_RED_TRIANGLE, SOP_GREEN_SQUARE, SOP_BLUE_CIRCLE})


@pytest.mark.external
def test_retrieve_all_instances_within_a_series(curl: Curl) -> None:
    status, _ = curl.run(RETRIEVE_SERIES, "--dump-header", "headers.txt")

    assert status == 200
    parts = multipart_parts(curl.output(), curl.headers())
    assert sorted(data for _, data in parts) == sorted(
        [sample_bytes(SOP_RED_TRIANGLE), sample_bytes(SOP_GREEN_SQUARE)]
    )


@pytest.mark.external
def test_retrieve_metadata_of_all_instances_within_a_series(curl: Curl) -> None:
    status, body = curl.run(RETRIEVE_SERIES_METADATA)

    assert status == 200, body
    check_metadata(body, curl.base, {SOP_RED_TRIANGLE, SOP_GREEN_SQUARE})


@pytest.mark.external
def test_retrieve_a_single_instance(curl: Curl) -> None:
    status, _ = curl.run(RETRIEVE_INSTANCE, "--dump-header", "headers.txt")

    assert status == 200
    assert curl.headers().get_content_type() == "application/dicom"
    assert curl.output() == sample_bytes(SOP_RED_TRIANGLE)


@pytest.mark.external
def test_retrieve_metadata_of_a_single_instance(curl: Curl) -> None:
    status, body = curl.run(RETRIEVE_INSTANCE_METADATA)

    assert status == 200, body
    check_metadata(body, curl.base, {SOP_RED_TRIANGLE})


@pytest.mark.external
@pytest.mark.parametrize("accept", FRAME_ACCEPTS)
def test_retrieve_one_frame(curl: Curl, accept: str) -> None:
    command = RETRIEVE_FRAMES.replace(FRAME_ACCEPTS[0], accept.replace('"', '\\"'))
    status, _ = curl.run(command, "--dump-header", "headers.txt")

    assert status == 200
    headers = curl.headers()
    assert headers.get_content_type() == "multipart/related"
    assert headers.get_param("type") == "application/octet-stream"
    parts = multipart_parts(curl.output(), headers)
    assert len(parts) == 1
    part_headers, frame = parts[0]
    assert part_headers.get_content_type() == "application/octet-stream"
    assert part_headers.get_param("transfer-syntax") == EXPLICIT_VR_LITTLE_ENDIAN
    pixel_data = read_pixel_data(SOP_RED_TRIANGLE)
    assert len(pixel_data) == FRAME_SIZE + 1  # padded to an even length
    assert len(frame) == FRAME_SIZE
    assert frame == pixel_data[:FRAME_SIZE]


def test_frame_command_keeps_the_tutorial_accept_header() -> None:
    """The parametrized frame test substitutes into the command text: make sure it does."""
    assert FRAME_ACCEPTS[0].replace('"', '\\"') in RETRIEVE_FRAMES


# Consultar DICOM (QIDO) --------------------------------------------------------------------


@pytest.mark.external
def test_search_for_studies(curl: Curl) -> None:
    results = search(curl, SEARCH_STUDIES)

    assert len(results) == 1
    check_study_result(results[0], curl.base)


@pytest.mark.external
def test_search_for_series(curl: Curl) -> None:
    results = search(curl, SEARCH_SERIES)

    assert len(results) == 1
    check_series_result(results[0], curl.base)
    # searching all studies returns the study's attributes too (PS3.18 Table 10.6.3-2)
    assert value(results[0]["00201206"]) == [2]
    assert value(results[0]["00201208"]) == [3]


@pytest.mark.external
def test_search_for_series_within_a_study(curl: Curl) -> None:
    results = search(curl, SEARCH_SERIES_IN_STUDY)

    assert len(results) == 1
    check_series_result(results[0], curl.base)


@pytest.mark.external
def test_search_for_instances(curl: Curl) -> None:
    results = search(curl, SEARCH_INSTANCES)

    assert len(results) == 1
    check_instance_result(results[0], curl.base)
    assert value(results[0]["00201208"]) == [3]


@pytest.mark.external
def test_search_for_instances_within_a_study(curl: Curl) -> None:
    results = search(curl, SEARCH_INSTANCES_IN_STUDY)

    assert len(results) == 1
    check_instance_result(results[0], curl.base)


@pytest.mark.external
def test_search_for_instances_within_a_study_and_series(curl: Curl) -> None:
    results = search(curl, SEARCH_INSTANCES_IN_SERIES)

    assert len(results) == 1
    check_instance_result(results[0], curl.base)


@pytest.mark.external
@pytest.mark.parametrize("command", [SEARCH_INSTANCES, SEARCH_INSTANCES_IN_STUDY])
def test_instance_search_returns_number_of_series_related_instances(
    curl: Curl, command: str
) -> None:
    """/instances and /studies/{study}/instances return the Series' default attributes
    (PS3.18 Table 10.6.3-2), which include Number of Series Related Instances."""
    results = search(curl, command)

    assert len(results) == 1
    assert value(results[0].get("00201209")) == [2]


# Eliminación de DICOM -------------------------------------------------------------------------


@pytest.mark.external
def test_delete_a_specific_instance(curl: Curl) -> None:
    status, body = curl.run(DELETE_INSTANCE)

    assert status == 204, body
    series = curl.server.archive / STUDY_UID / SERIES_SQUARE_TRIANGLE
    assert not (series / f"{SOP_RED_TRIANGLE}.dcm").exists()
    assert not (series / f"{SOP_RED_TRIANGLE}.json").exists()
    assert (series / f"{SOP_GREEN_SQUARE}.dcm").read_bytes() == sample_bytes(SOP_GREEN_SQUARE)
    assert search(curl, SEARCH_INSTANCES) == []


@pytest.mark.external
def test_delete_a_specific_series(curl: Curl) -> None:
    status, body = curl.run(DELETE_SERIES)

    assert status == 204, body
    assert not (curl.server.archive / STUDY_UID / SERIES_SQUARE_TRIANGLE).exists()
    names = [path.name for path in archived_files(curl.server.archive)]
    assert names == [f"{SOP_BLUE_CIRCLE}.dcm", f"{SOP_BLUE_CIRCLE}.json"]
    assert search(curl, SEARCH_SERIES) == []


@pytest.mark.external
def test_delete_a_specific_study(curl: Curl) -> None:
    status, body = curl.run(DELETE_STUDY)

    assert status == 204, body
    assert archived_files(curl.server.archive) == []
    assert search(curl, SEARCH_STUDIES) == []


@pytest.mark.external
def test_retrieve_after_delete_is_404(curl: Curl) -> None:
    status, _ = curl.run(RETRIEVE_STUDY)

    assert status == 404
    assert archived_files(curl.server.archive) == []


# The Content-Type variants the tutorial says work for STOW --------------------------------

BOUNDARY = "ABCD1234"
STOW_CONTENT_TYPES = [
    f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
    f"multipart/related; boundary={BOUNDARY}",
    "multipart/related",  # the server must take the boundary from the body's first line
]


def multipart_body(files: list[Path]) -> bytes:
    body = b""
    for file in files:
        body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += file.read_bytes() + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.external
@pytest.mark.parametrize("content_type", STOW_CONTENT_TYPES)
def test_store_with_each_listed_content_type(
    live_server: LiveServer, tmp_path: Path, content_type: str
) -> None:
    """curl --form picks its own boundary, so the body is built here and sent as a file."""
    (tmp_path / "body.mime").write_bytes(
        multipart_body([SAMPLES / name for name, _ in SAMPLE_FILES.values()])
    )
    runner = Curl(live_server, tmp_path)

    status, body = runner.run_args(
        "curl",
        "--location",
        "--request",
        "POST",
        f"{runner.base}/studies",
        "--header",
        "Accept: application/dicom+json",
        "--header",
        f"Content-Type: {content_type}",
        "--data-binary",
        "@body.mime",
    )

    assert status == 200, body
    assert_stored(body, runner.base, set(SAMPLE_FILES))
    for sop, (name, series) in SAMPLE_FILES.items():
        stored = live_server.archive / STUDY_UID / series / f"{sop}.dcm"
        assert stored.read_bytes() == (SAMPLES / name).read_bytes()
    results = search(runner, SEARCH_STUDIES)
    assert value(results[0]["00201208"]) == [3]
