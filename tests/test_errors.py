"""Every error the HTTP API answers: the status code, a message a person can read, and an
archive left exactly as it was.

The tests share one app on an archive holding the three samples. A snapshot of it (every
file's relative path, size and SHA-256, except the ``.incoming`` upload area, plus the answers
of the three QIDO searches) is taken once, and each test compares the archive with it after
its bad request; the few tests that store something have an archive of their own.

Bad path segments are sent byte for byte (``yarl.URL(..., encoded=True)``): the client would
otherwise resolve ``..`` and ``%2e%2e`` itself and the server would never see them. aiohttp's
router matches ``[^/]+`` on the path with ``%2F`` kept encoded and decodes the segment only
afterwards, so every malformed UID below reaches the handler and is answered 400 by
``check_uid``; none ends in the router's 404.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pydicom
import pytest
import pytest_asyncio
from aiohttp import ClientPayloadError, MultipartReader
from pydicom.uid import generate_uid

from localdicom.trashbin import empty
from tests.helpers import (
    SERIES_CIRCLE,
    SERIES_SQUARE_TRIANGLE,
    SOP_BLUE_CIRCLE,
    SOP_GREEN_SQUARE,
    STUDY_UID,
    app_client,
)
from tests.helpers.stocked import (
    ATTRIBUTE,
    BLUE,
    BLUE_PATH,
    BOUNDARY,
    INSTANCE,
    SAMPLE_FILES,
    STOW_TYPE,
    UNKNOWN,
    Stocked,
    assert_error,
    assert_readable,
    assert_store_failure,
    derived,
    failure_reasons,
    files_of,
    multipart,
    new_instance,
    request,
    sample,
    stock,
    stow,
)

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


#: Every test runs on the module's event loop, which the shared app below lives on.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stocked(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stocked]:
    """One app on an archive holding the samples, for every test that leaves the archive as
    it was (each checks that it did); a test that changes it takes ``own_stocked``."""
    archive = tmp_path_factory.mktemp("errors") / "archive"
    async with app_client(archive) as client:
        yield await stock(client, archive)


@pytest_asyncio.fixture(loop_scope="module")
async def own_stocked(archive_dir: Path) -> AsyncIterator[Stocked]:
    """An app on an archive of its own holding the samples, for a test that changes it."""
    async with app_client(archive_dir) as client:
        yield await stock(client, archive_dir)


# malformed UIDs in every position ----------------------------------------------------------

ROUTES = [
    ("GET", "/studies/{study}"),
    ("GET", "/studies/{study}/metadata"),
    ("GET", "/studies/{study}/series"),
    ("GET", "/studies/{study}/instances"),
    ("GET", "/studies/{study}/series/{series}"),
    ("GET", "/studies/{study}/series/{series}/metadata"),
    ("GET", "/studies/{study}/series/{series}/instances"),
    ("GET", INSTANCE),
    ("GET", INSTANCE + "/metadata"),
    ("GET", INSTANCE + "/frames/1"),
    ("GET", INSTANCE + "/bulk/7FE00010"),
    ("DELETE", "/studies/{study}"),
    ("DELETE", "/studies/{study}/series/{series}"),
    ("DELETE", INSTANCE),
    ("POST", "/studies/{study}"),
]
BAD_UIDS = [
    pytest.param("1.2.abc", id="letters"),
    pytest.param("..", id="dot-dot"),
    pytest.param(".", id="dot"),
    pytest.param("1." + "2" * 63, id="65-characters"),
    pytest.param("1.02.3", id="leading-zero"),
    pytest.param("1..2", id="empty-component"),
    pytest.param("%2e%2e", id="encoded-dot-dot"),
    pytest.param("1.2.3%2F..%2F..", id="encoded-slashes"),
    pytest.param("1.2.3%00", id="encoded-nul"),
    pytest.param("1.2.3%0A", id="encoded-newline"),
]
POSITIONS = [
    pytest.param(method, route, name, id=f"{method} {route} [{name}]")
    for method, route in ROUTES
    for name in ATTRIBUTE
    if "{" + name + "}" in route
]


@pytest.mark.parametrize("bad", BAD_UIDS)
@pytest.mark.parametrize(("method", "route", "position"), POSITIONS)
async def test_malformed_uid_is_400(stocked: Stocked, method, route, position, bad):
    path = route.format(**{**BLUE, position: bad})
    _, body = new_instance()  # a POST that stored anything would change the archive
    kwargs = {"data": body, "headers": {"Content-Type": "application/dicom"}}
    answer = await request(stocked.client, method, path, **(kwargs if method == "POST" else {}))
    assert_error(answer, 400, ATTRIBUTE[position], "not a valid DICOM UID")
    await stocked.assert_unchanged()


@pytest.mark.parametrize("prefix", ["/v1", "/v2", "/dicom-web"])
async def test_malformed_uid_is_400_under_every_prefix(stocked: Stocked, prefix):
    answer = await request(stocked.client, "GET", f"{prefix}/studies/%2e%2e/metadata")
    assert_error(answer, 400, "StudyInstanceUID")
    answer = await request(stocked.client, "DELETE", f"{prefix}/studies/1.2.3%2F..%2F..")
    assert_error(answer, 400, "StudyInstanceUID")
    await stocked.assert_unchanged()


# valid UIDs of nothing in the archive -------------------------------------------------------

#: (what is changed in the blue instance's URL, the level of the routes it applies to)
UNKNOWN_RESOURCES = [
    pytest.param({"study": UNKNOWN}, "study", id="unknown-study"),
    pytest.param({"series": UNKNOWN}, "series", id="unknown-series"),
    pytest.param({"instance": UNKNOWN}, "instance", id="unknown-instance"),
    pytest.param({"study": UNKNOWN}, "series", id="series-under-unknown-study"),
    pytest.param({"study": UNKNOWN}, "instance", id="instance-under-unknown-study"),
    pytest.param({"series": SERIES_SQUARE_TRIANGLE}, "instance", id="instance-under-other-series"),
    pytest.param({"instance": SOP_GREEN_SQUARE}, "instance", id="instance-of-other-series"),
]
NOT_FOUND_ROUTES = [
    ("GET", "/studies/{study}"),
    ("GET", "/studies/{study}/metadata"),
    ("DELETE", "/studies/{study}"),
    ("GET", "/studies/{study}/series/{series}"),
    ("GET", "/studies/{study}/series/{series}/metadata"),
    ("DELETE", "/studies/{study}/series/{series}"),
    ("GET", INSTANCE),
    ("GET", INSTANCE + "/metadata"),
    ("GET", INSTANCE + "/frames/1"),
    ("GET", INSTANCE + "/bulk/7FE00010"),
    ("DELETE", INSTANCE),
]


def _not_found_cases():
    for case in UNKNOWN_RESOURCES:
        changes, level = case.values
        for method, route in NOT_FOUND_ROUTES:
            deepest = [name for name in ATTRIBUTE if "{" + name + "}" in route][-1]
            if deepest == level:
                path = route.format(**{**BLUE, **changes})
                yield pytest.param(method, path, id=f"{case.id} {method} {route}")


@pytest.mark.parametrize(("method", "path"), list(_not_found_cases()))
async def test_unknown_resource_is_404(stocked: Stocked, method, path):
    answer = await request(stocked.client, method, path)
    assert_error(answer, 404, "is not in the archive")
    await stocked.assert_unchanged()


async def test_unknown_bulk_data_path_is_404(stocked: Stocked):
    answer = await request(stocked.client, "GET", BLUE_PATH + "/bulk/00091010")
    assert_error(answer, 404, "no bulk data")
    await stocked.assert_unchanged()


@pytest.mark.parametrize("path", ["/nothing", "/studies/1.2.3/nothing", "/v3/studies"])
async def test_unknown_path_is_404(stocked: Stocked, path):
    assert_error(await request(stocked.client, "GET", path), 404)
    await stocked.assert_unchanged()


async def test_unsupported_method_is_405(stocked: Stocked):
    assert_error(await request(stocked.client, "PUT", "/studies"), 405)
    assert_error(await request(stocked.client, "DELETE", "/studies"), 405)
    await stocked.assert_unchanged()


@pytest.mark.parametrize("level", ["study", "series", "instance"])
async def test_delete_of_unknown_uid_is_404(stocked: Stocked, level):
    route = {
        "study": "/studies/{study}",
        "series": "/studies/{study}/series/{series}",
        "instance": INSTANCE,
    }[level]
    answer = await request(stocked.client, "DELETE", route.format(**{**BLUE, level: UNKNOWN}))
    assert_error(answer, 404, UNKNOWN, "is not in the archive")
    await stocked.assert_unchanged()


# representations that cannot be served --------------------------------------------------

STUDY_PATH = f"/studies/{STUDY_UID}"
SERIES_PATH = f"{STUDY_PATH}/series/{SERIES_CIRCLE}"
JPEG_INSTANCES = f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}'
JPEG_FRAMES = f'multipart/related; type="application/octet-stream"; transfer-syntax={JPEG_BASELINE}'


@pytest.mark.parametrize(
    ("path", "accept", "available"),
    [
        pytest.param(
            STUDY_PATH + "/metadata", "application/dicom+xml", ["application/dicom+json"], id="xml"
        ),
        pytest.param(
            SERIES_PATH + "/metadata", "application/dicom+xml", ["application/json"], id="xml"
        ),
        pytest.param(
            BLUE_PATH + "/metadata",
            "application/dicom+json;q=0",
            ["application/dicom+json"],
            id="refused-by-q0",
        ),
        pytest.param(
            STUDY_PATH, "image/png", ['multipart/related; type="application/dicom"'], id="png"
        ),
        pytest.param(
            BLUE_PATH,
            JPEG_INSTANCES,
            [f"transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}", "transfer-syntax=*"],
            id="jpeg-of-uncompressed-instance",
        ),
        pytest.param(
            f"{STUDY_PATH}/series/{SERIES_SQUARE_TRIANGLE}",
            "application/dicom",
            ['multipart/related; type="application/dicom"'],
            id="single-part-of-two-instances",
        ),
        pytest.param(
            BLUE_PATH + "/frames/1",
            JPEG_FRAMES,
            [f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"],
            id="jpeg-frames-of-uncompressed-instance",
        ),
        pytest.param("/studies", "application/dicom+xml", ["application/dicom+json"], id="qido"),
    ],
)
async def test_unservable_accept_is_406_listing_representations(
    stocked: Stocked, path, accept, available
):
    answer = await request(stocked.client, "GET", path, headers={"Accept": accept})
    assert_error(answer, 406, "available as", *available)
    await stocked.assert_unchanged()


async def test_stow_with_unservable_accept_stores_and_answers_json_with_the_reason(
    stocked: Stocked,
):
    """An Accept the STOW-RS answer cannot honour does not refuse the upload (issue 17 item
    7): the instance is stored and the answer is JSON, with the reason in a Warning."""
    sop, body = new_instance()
    answer = await stow(stocked.client, multipart(body), headers={"Accept": "text/html"})
    assert answer.status == 200, answer.text
    assert answer.content_type == "application/dicom+json"
    stored = answer.json()["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in stored] == [sop]
    warning = answer.headers["Warning"]
    assert warning.startswith("299 ") and "text/html" in warning
    assert "application/dicom+json" in warning
    path = INSTANCE.format(**{**BLUE, "instance": sop})
    assert (await request(stocked.client, "DELETE", path)).status == 204
    assert [len(entry.instances) for entry in empty(stocked.archive, None)] == [1]  # the trash
    await stocked.assert_unchanged()


# STOW-RS: bodies that cannot be stored ----------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/json",
        "application/octet-stream",
        f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
        f"multipart/related; type=application/dicom+xml; boundary={BOUNDARY}",
        f"multipart/form-data; boundary={BOUNDARY}",
    ],
)
async def test_stow_of_unsupported_media_type_is_415(stocked: Stocked, content_type):
    _, body = new_instance()
    payload = multipart(body) if content_type.startswith("multipart/") else body
    answer = await stow(stocked.client, payload, content_type)
    assert_error(answer, 415, "application/dicom")
    await stocked.assert_unchanged()


def _truncated_bodies():
    _, first = new_instance()
    _, second = new_instance()
    one_part = multipart(first, close=False)
    yield pytest.param(one_part, id="complete-part-without-close-delimiter")
    yield pytest.param(one_part[:-2], id="complete-part-without-final-crlf")
    yield pytest.param(one_part + b"--" + BOUNDARY.encode(), id="delimiter-without-close-dashes")
    yield pytest.param(multipart(first, second)[:-500_000], id="second-part-cut-short")
    yield pytest.param(multipart(first)[: len(first) // 2], id="first-part-cut-short")
    yield pytest.param(
        multipart(first, close=False) + b"--" + BOUNDARY.encode() + b"\r\nContent-Ty",
        id="cut-inside-part-headers",
    )


@pytest.mark.parametrize("body", list(_truncated_bodies()))
async def test_stow_of_truncated_multipart_is_400_and_stores_nothing(stocked: Stocked, body):
    answer = await stow(stocked.client, body)
    assert_error(answer, 400, "nothing stored")
    await stocked.assert_unchanged()


async def test_stow_of_truncated_multipart_keeps_resent_instances(stocked: Stocked):
    """A sample re-sent in a broken body was already stored: the undo must not delete it."""
    answer = await stow(stocked.client, multipart(sample(), close=False))
    assert_error(answer, 400, "nothing stored")
    await stocked.assert_unchanged()


async def test_stow_of_truncated_multipart_with_overwrite_keeps_the_original(
    tmp_path: Path,
):
    archive = tmp_path / "overwrite-archive"
    async with app_client(archive, overwrite=True) as client:
        stocked = await stock(client, archive)
        replacement = derived(SeriesDescription="a replacement")
        cut_short = b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\nDI"
        answer = await stow(client, multipart(replacement, close=False) + cut_short)
        assert_error(answer, 400, "nothing stored")
        await stocked.assert_unchanged()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"--" + BOUNDARY.encode() + b"--\r\n", id="close-delimiter-only"),
        pytest.param(b"preamble\r\n--" + BOUNDARY.encode() + b"--\r\nepilogue", id="preamble"),
    ],
)
async def test_stow_of_multipart_without_parts_is_400(stocked: Stocked, body):
    assert_error(await stow(stocked.client, body), 400, "no parts")
    await stocked.assert_unchanged()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"just some bytes\r\nwithout a delimiter", id="no-delimiter"),
        pytest.param(b"--another-boundary\r\n\r\nxx\r\n--another-boundary--\r\n", id="other"),
    ],
)
async def test_stow_of_body_without_its_boundary_is_400(stocked: Stocked, body):
    assert_error(await stow(stocked.client, body), 400, "malformed multipart/related body")
    await stocked.assert_unchanged()


async def test_stow_with_non_latin1_boundary_is_400(stocked: Stocked):
    boundary = "b\u20ac"
    content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
    body = multipart(new_instance()[1], boundary="b-ascii")
    assert_error(await stow(stocked.client, body, content_type), 400)
    await stocked.assert_unchanged()


@pytest.mark.parametrize("accept", [";", "application/dicom+xml,;"])
async def test_accept_of_only_semicolons_is_a_client_error(stocked: Stocked, accept):
    answer = await request(stocked.client, "GET", "/studies", headers={"Accept": accept})
    assert answer.status in (400, 406), answer.text
    assert_readable(answer.text)
    await stocked.assert_unchanged()


async def test_stow_with_content_type_of_only_semicolons_is_415(stocked: Stocked):
    _, body = new_instance()
    assert_error(await stow(stocked.client, body, ";"), 415)
    await stocked.assert_unchanged()


async def test_stow_part_with_content_type_of_only_semicolons_is_not_a_500(own_stocked: Stocked):
    """The good first part must not stay stored behind a 500 either."""
    _, good = new_instance()
    body = multipart(good, close=False) + (
        f"--{BOUNDARY}\r\nContent-Type: ;\r\n\r\ngarbage\r\n--{BOUNDARY}--\r\n".encode()
    )
    answer = await stow(own_stocked.client, body)
    assert answer.status == 202, answer.text
    assert failure_reasons(answer) == [0xC000]


# STOW-RS: instances that cannot be stored --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(multipart(b"this is not DICOM"), STOW_TYPE, id="multipart"),
        pytest.param(multipart(b""), STOW_TYPE, id="empty-part"),
        pytest.param(b"this is not DICOM", "application/dicom", id="single-instance-body"),
        pytest.param(b"", "application/dicom", id="empty-single-instance-body"),
    ],
)
async def test_stow_of_non_dicom_is_409_cannot_understand(stocked: Stocked, body, content_type):
    answer = await stow(stocked.client, body, content_type)
    assert_store_failure(answer, 409, 0xC000, "not stored")
    assert "00081199" not in answer.json()
    await stocked.assert_unchanged()


@pytest.mark.parametrize("kept", [4000, 2_000_000])
async def test_stow_of_instance_cut_short_is_409(stocked: Stocked, kept):
    _, body = new_instance()
    answer = await stow(stocked.client, multipart(body[:kept]))
    assert answer.status == 409, answer.text[:300]
    assert failure_reasons(answer)[0] in (0xC000, 0x0110)
    await stocked.assert_unchanged()


async def test_stow_of_part_with_other_media_type_is_409_cannot_understand(stocked: Stocked):
    _, instance = new_instance()
    body = multipart(instance, headers="Content-Type: image/jpeg")
    answer = await stow(stocked.client, body)
    assert_store_failure(answer, 409, 0xC000, "image/jpeg")
    await stocked.assert_unchanged()


@pytest.mark.parametrize(
    "missing", ["SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"]
)
async def test_stow_of_instance_without_identifying_uid_is_409(stocked: Stocked, missing):
    changes = {} if missing == "SOPInstanceUID" else {"SOPInstanceUID": generate_uid()}
    body = derived(remove=(missing,), **changes)
    answer = await stow(stocked.client, multipart(body))
    assert_store_failure(answer, 409, 0xC000, missing)
    await stocked.assert_unchanged()


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SOPInstanceUID", "../../../escaped"),
        ("SeriesInstanceUID", "../.."),
        ("StudyInstanceUID", "/tmp/escaped"),
        ("SOPInstanceUID", "1." + "2" * 70),
    ],
)
async def test_stow_of_instance_with_malformed_uid_is_409(stocked: Stocked, keyword, value):
    changes = {keyword: value}
    if keyword != "SOPInstanceUID":
        changes["SOPInstanceUID"] = generate_uid()
    answer = await stow(stocked.client, multipart(derived(**changes)))
    assert_store_failure(answer, 409, 0xC000, keyword, "not a valid DICOM UID")
    await stocked.assert_unchanged()
    escaped = stocked.archive.parent / "escaped"
    assert not escaped.exists() and not Path("/tmp/escaped").exists()


async def test_stow_of_one_good_and_one_garbage_part_is_202(own_stocked: Stocked):
    sop, body = new_instance()
    answer = await stow(own_stocked.client, multipart(body, b"garbage"))
    assert answer.status == 202, answer.text
    assert failure_reasons(answer) == [0xC000]
    referenced = answer.json()["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in referenced] == [sop]
    assert_readable(answer.headers["Warning"])
    new_files = {
        f"{STUDY_UID}/{SERIES_CIRCLE}/{sop}.dcm",
        f"{STUDY_UID}/{SERIES_CIRCLE}/{sop}.json",
    }
    after = files_of(own_stocked.archive)
    assert [entry for entry in after if entry[0] not in new_files] == own_stocked.files
    assert {entry[0] for entry in after} - {entry[0] for entry in own_stocked.files} == new_files
    path = INSTANCE.format(study=STUDY_UID, series=SERIES_CIRCLE, instance=sop)
    stored = await request(own_stocked.client, "GET", path, headers={"Accept": "application/dicom"})
    assert stored.status == 200
    assert stored.body == body


async def test_stow_of_many_parts_answers_each_in_order_of_the_body(own_stocked: Stocked):
    """Parts are checked while later ones stream in: more parts than are checked at a time,
    with failures among them, still get one answer each, in the body's order."""
    instances = [new_instance() for _ in range(7)]
    bodies = [body for _, body in instances]
    bodies[2] = b"garbage"
    bodies[5] = bodies[5][: len(bodies[5]) // 2]
    answer = await stow(own_stocked.client, multipart(*bodies))
    assert answer.status == 202, answer.text
    assert failure_reasons(answer) == [0xC000, 0xC000]
    referenced = answer.json()["00081199"]["Value"]
    stored = [sop for k, (sop, _) in enumerate(instances) if k not in (2, 5)]
    assert [item["00081155"]["Value"][0] for item in referenced] == stored
    for sop, body in instances[:2]:
        path = INSTANCE.format(study=STUDY_UID, series=SERIES_CIRCLE, instance=sop)
        got = await request(
            own_stocked.client, "GET", path, headers={"Accept": "application/dicom"}
        )
        assert got.body == body
    assert list((own_stocked.archive / ".incoming").iterdir()) == []


async def test_stow_cut_short_after_many_parts_stores_none_of_them(stocked: Stocked):
    """The parts already checked when the body breaks are removed, not stored."""
    bodies = [body for _, body in (new_instance() for _ in range(7))]
    answer = await stow(stocked.client, multipart(*bodies, close=False))
    assert_error(answer, 400, "nothing stored")
    await stocked.assert_unchanged()


async def test_stow_to_another_study_is_409_dataset_does_not_match(stocked: Stocked):
    other = "1.2.826.0.1.3680043.8.498.1"
    _, body = new_instance()
    answer = await stow(stocked.client, multipart(body), path=f"/studies/{other}")
    assert_store_failure(answer, 409, 0xA900, other, STUDY_UID)
    (item,) = answer.json()["00081198"]["Value"]
    assert item["00081155"]["Value"] == [pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID]
    await stocked.assert_unchanged()


async def test_stow_of_sample_to_another_study_is_409(stocked: Stocked):
    answer = await stow(stocked.client, sample(), "application/dicom", path="/studies/1.2.3.4")
    assert_store_failure(answer, 409, 0xA900, "1.2.3.4")
    await stocked.assert_unchanged()


async def test_stow_of_different_dataset_with_stored_sop_uid_is_409_duplicate(stocked: Stocked):
    original = stocked.archive / STUDY_UID / SERIES_CIRCLE / f"{SOP_BLUE_CIRCLE}.dcm"
    before = original.read_bytes()
    changed = derived(PatientName="Someone^Else")
    answer = await stow(stocked.client, multipart(changed))
    assert_store_failure(answer, 409, 0x0111, SOP_BLUE_CIRCLE, "already stored")
    assert original.read_bytes() == before == sample()
    await stocked.assert_unchanged()


async def test_stow_of_identical_instance_again_is_200_and_leaves_it_alone(stocked: Stocked):
    stored = stocked.archive / STUDY_UID / SERIES_CIRCLE / f"{SOP_BLUE_CIRCLE}.dcm"
    stat = stored.stat()
    for body, content_type in [(multipart(sample()), STOW_TYPE), (sample(), "application/dicom")]:
        answer = await stow(stocked.client, body, content_type)
        assert answer.status == 200, answer.text
        assert "00081198" not in answer.json()
        (item,) = answer.json()["00081199"]["Value"]
        assert item["00081155"]["Value"] == [SOP_BLUE_CIRCLE]
        assert "Warning" not in answer.headers
    assert stored.stat().st_mtime_ns == stat.st_mtime_ns
    assert stored.stat().st_ino == stat.st_ino
    await stocked.assert_unchanged()


# frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        "0",
        "1,,2",
        "abc",
        "99999999999",
        "-1",
        "1.5",
        ",",
        "1,0",
        "0x1",
        "%20",
        pytest.param(
            "%C2%B2",
            id="superscript-two",
        ),
        pytest.param(
            "%D9%A1",
            id="arabic-indic-one",
        ),
    ],
)
async def test_malformed_frame_list_is_400(stocked: Stocked, frames):
    answer = await request(stocked.client, "GET", f"{BLUE_PATH}/frames/{frames}")
    assert_error(answer, 400, "frame")
    await stocked.assert_unchanged()


@pytest.mark.parametrize("frames", ["2", "1,2", "999999999"])
async def test_frame_beyond_the_last_is_404(stocked: Stocked, frames):
    answer = await request(stocked.client, "GET", f"{BLUE_PATH}/frames/{frames}")
    assert_error(answer, 404, "does not exist", "has 1 frame(s)")
    await stocked.assert_unchanged()


# QIDO-RS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/studies?Foo=bar", "'Foo'"),
        ("/series?Foo=bar", "'Foo'"),
        ("/instances?Foo=bar", "'Foo'"),
        (f"/studies/{STUDY_UID}/series?Foo=bar", "'Foo'"),
        ("/studies?12345678=x", "'12345678'"),
        ("/studies?limit=-1", "limit"),
        ("/studies?limit=abc", "limit"),
        ("/studies?limit=1e3", "limit"),
        ("/studies?limit=9999999999", "limit"),
        ("/studies?offset=abc", "offset"),
        ("/studies?offset=-5", "offset"),
        ("/studies?StudyDate=20201231-20200101", "ends before it starts"),
        ("/studies?StudyDate=2020-01", "StudyDate"),
        ("/studies?StudyDate=2020", "StudyDate"),
        ("/studies?StudyDate=-", "at least one end"),
        ("/studies?StudyTime=1730-0800", "ends before it starts"),
        ("/studies?StudyTime=12:00", "StudyTime"),
        ("/studies?fuzzymatching=maybe", "fuzzymatching"),
        ("/studies?fuzzymatching=TRUE", "fuzzymatching"),
        ("/studies?includefield=Foo", "'Foo'"),
        ("/studies?includefield=PatientName,NoSuchKeyword", "'NoSuchKeyword'"),
        ("/studies?PatientName=a&PatientName=b", "more than once"),
        ("/studies?StudyInstanceUID=1.2.abc", "not a valid DICOM UID"),
        ("/studies?ReferencedSeriesSequence=x", "cannot be matched on a value"),
        ("/series?PixelData=x", "cannot be matched on a value"),
        ("/studies?PatientName=" + "a" * 5000, "longer than 1024 characters"),
        pytest.param(
            "/studies?limit=%C2%B2",
            "limit",
            id="limit-superscript-two",
        ),
        pytest.param(
            "/studies?offset=%D9%A3",
            "offset",
            id="offset-arabic-indic-three",
        ),
    ],
)
async def test_bad_qido_query_is_400(stocked: Stocked, path, fragment):
    answer = await request(stocked.client, "GET", path)
    assert_error(answer, 400, fragment)
    await stocked.assert_unchanged()


async def test_qido_value_of_100_kb_is_400(stocked: Stocked):
    """aiohttp's HTTP parser rejects a request line over 8190 bytes before any handler runs:
    the answer is 400 (not 414), and the archive is untouched."""
    answer = await request(stocked.client, "GET", "/studies?PatientName=" + "a" * 100_000)
    assert answer.status == 400
    assert "Traceback" not in answer.text
    assert len(answer.text) <= 2000
    await stocked.assert_unchanged()


async def test_qido_value_of_100_kb_message_is_readable(stocked: Stocked):
    answer = await request(stocked.client, "GET", "/studies?PatientName=" + "a" * 100_000)
    assert_error(answer, 400)


# files changed behind the server's back ------------------------------------------------------

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.unlink(), id="deleted"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:1000]), id="shortened"),
    ],
)
async def test_study_retrieve_with_a_file_changed_on_disk_is_cut_short(
    own_stocked: Stocked, damage
):
    """The answer's length is promised before the files are sent: a file that no longer has
    the size the index knows ends the connection, so the client sees an incomplete body
    (an error) and never a complete-looking multipart answer with the wrong bytes."""
    damage(own_stocked.archive / STUDY_UID / SERIES_CIRCLE / f"{SOP_BLUE_CIRCLE}.dcm")
    async with own_stocked.client.get(STUDY_PATH, headers={"Accept": AS_STORED}) as response:
        assert response.status == 200
        with pytest.raises(ClientPayloadError):
            await response.read()


async def test_study_retrieve_as_stored_gives_the_stored_bytes(stocked: Stocked):
    async with stocked.client.get(STUDY_PATH, headers={"Accept": AS_STORED}) as response:
        assert response.status == 200
        assert response.content_length is not None
        reader = MultipartReader.from_response(response)
        got = [bytes(await part.read()) async for part in reader]
    assert sorted(got) == sorted(sample(name) for name in SAMPLE_FILES)
