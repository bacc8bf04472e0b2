"""The Trash page's server side (localdicom/web/trash_api.py, Catalog.trash_entries,
restore_entry, empty_trash): listing, restoring one entry byte for byte and indexed at once,
a conflict left in the trash, emptying, the errors and guards of the JSON POSTs; and the
file name of the zip the study page's Download ZIP link saves.

Restored files are compared with the originals (pydicom's test files and the repository's
samples), and what a row says about a study with pydicom's reading of the file."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pydicom
import pytest

from tests.helpers import app_client
from tests.helpers.corpus import pydicom_file
from tests.helpers.stocked import assert_error, derived, request, sample, stow

API = "/ui/api/trash"
CT = "CT_small.dcm"


def uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


@pytest.fixture
async def client(archive_dir: Path):
    async with app_client(archive_dir) as client:
        yield client


async def post(client, path: str, body: dict | None = None, **kwargs):
    return await request(client, "POST", f"{API}/{path}", json=body or {}, **kwargs)


async def entries(client) -> list[dict]:
    answer = await request(client, "GET", API)
    assert answer.status == 200 and answer.json()["enabled"] is True
    return answer.json()["entries"]


async def deleted_ct(client) -> tuple[Path, dict]:
    """CT_small stored, then its study deleted: the file and the trash entry."""
    path = pydicom_file(CT)
    assert (await stow(client, path.read_bytes(), "application/dicom")).status == 200
    assert (await request(client, "DELETE", f"/studies/{uids(path)[0]}")).status == 204
    (entry,) = await entries(client)
    return path, entry


async def test_a_deleted_study_is_listed_with_its_patient(client) -> None:
    assert await entries(client) == []
    path, entry = await deleted_ct(client)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert (entry["reason"], entry["code"], entry["instances"]) == ("delete", "", 1)
    assert entry["size"] == path.stat().st_size
    assert entry["by"].startswith(f"DELETE /studies/{ds.StudyInstanceUID}")
    assert entry["studies"] == [
        {
            "study": ds.StudyInstanceUID,
            "patient": str(ds.PatientName),
            "patient_id": ds.PatientID,
            "description": ds.get("StudyDescription", ""),
        }
    ]


async def test_restore_brings_the_study_back_byte_for_byte(client, archive_dir: Path) -> None:
    path, entry = await deleted_ct(client)
    study, series, sop = uids(path)
    answer = await post(client, "restore", {"entry": entry["entry"]})
    assert answer.status == 200, answer.text
    assert answer.json() == {"restored": 1, "present": 0, "conflicts": [], "errors": []}
    found = await request(client, "GET", f"/studies?StudyInstanceUID={study}")
    assert [item["0020000D"]["Value"][0] for item in found.json()] == [study]  # indexed at once
    assert (archive_dir / study / series / f"{sop}.dcm").read_bytes() == path.read_bytes()
    assert await entries(client) == []
    feed = (await request(client, "GET", "/changefeed?includemetadata=false")).json()
    assert [change["Action"] for change in feed][-2:] == ["delete", "create"]


async def test_a_uid_stored_again_is_a_conflict_left_in_the_trash(client, archive_dir) -> None:
    original = sample("blue-circle.dcm")
    newer = derived("blue-circle.dcm", PatientName="Newer^Copy")
    assert (await stow(client, original, "application/dicom")).status == 200
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(original))
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    assert (await request(client, "DELETE", f"/studies/{study}")).status == 204
    assert (await stow(client, newer, "application/dicom")).status == 200
    (entry,) = await entries(client)
    answer = await post(client, "restore", {"entry": entry["entry"]})
    assert answer.status == 409
    (conflict,) = answer.json()["conflicts"]
    assert conflict["sop"] == sop and "delete it first" in conflict["reason"]
    assert (archive_dir / study / series / f"{sop}.dcm").read_bytes() == newer  # not overwritten
    assert [each["entry"] for each in await entries(client)] == [entry["entry"]]


async def test_empty_older_entries_then_all(client) -> None:
    await deleted_ct(client)
    answer = await post(client, "empty", {"older_than_days": 1})
    assert (answer.status, answer.json()) == (200, {"emptied": 0})
    assert len(await entries(client)) == 1
    answer = await post(client, "empty")
    assert (answer.status, answer.json()) == (200, {"emptied": 1})
    assert await entries(client) == []


@pytest.mark.parametrize("days", [-1, "30", True, [1]])
async def test_empty_refuses_what_is_not_a_number_of_days(client, days) -> None:
    await deleted_ct(client)
    assert_error(await post(client, "empty", {"older_than_days": days}), 400, "older_than_days")
    assert len(await entries(client)) == 1


async def test_restore_errors(client) -> None:
    await deleted_ct(client)
    assert_error(await post(client, "restore", {}), 400, '{"entry"')
    assert_error(await post(client, "restore", {"entry": 3}), 400, '{"entry"')
    assert_error(await post(client, "restore", {"entry": "../x"}), 404, "no entry '../x'")
    not_json = await request(
        client, "POST", f"{API}/restore", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert_error(not_json, 400, "not JSON")
    array = await request(client, "POST", f"{API}/restore", json=["x"])
    assert_error(array, 400, "JSON object")
    assert (await request(client, "GET", f"{API}/restore")).status == 405
    assert len(await entries(client)) == 1


async def test_a_form_from_another_page_cannot_restore_or_empty(client) -> None:
    """A cross-site form sends form data or text/plain with no preflight: 415 here even
    from an allowed origin, and every foreign Origin is refused by the security layer."""
    await deleted_ct(client)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = await request(client, "POST", f"{API}/empty", data=b"older_than_days=0", headers=form)
    assert_error(answer, 415, "application/json")
    text = {"Content-Type": "text/plain"}
    answer = await request(client, "POST", f"{API}/empty", data=b"{}", headers=text)
    assert_error(answer, 415)
    foreign = await post(client, "empty", headers={"Origin": "http://evil.example"})
    assert foreign.status == 403
    assert len(await entries(client)) == 1


async def test_a_body_too_large_is_refused(client) -> None:
    answer = await post(client, "restore", {"entry": "x" * 10_000})
    assert answer.status == 413


async def test_without_trash_the_list_says_so(archive_dir: Path) -> None:
    async with app_client(archive_dir, trash=False) as client:
        answer = await request(client, "GET", API)
        assert answer.json() == {"enabled": False, "entries": []}
        page = await request(client, "GET", "/ui/trash")
        assert page.status == 200 and b'name="localdicom-trash" content="off"' in page.body


# the study page's Download ZIP link: a name a person tells apart (RFC 6266 4.3) ---------------


async def test_a_zip_is_named_after_its_patient_and_description(client) -> None:
    path = pydicom_file(CT)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert (await stow(client, path.read_bytes(), "application/dicom")).status == 200
    answer = await request(client, "GET", f"/studies/{ds.StudyInstanceUID}?accept=application/zip")
    assert answer.status == 200
    name = f"{ds.PatientName} {ds.StudyDescription} {ds.StudyInstanceUID}".replace("^", " ")
    ascii_name = re.sub(r"[^A-Za-z0-9.-]+", "_", name)
    assert answer.headers["Content-Disposition"] == (
        f"attachment; filename=\"{ascii_name}.zip\"; filename*=UTF-8''{quote(name)}.zip"
    )


async def test_a_zip_name_keeps_a_non_ascii_patient_in_utf8(client) -> None:
    data = derived(SpecificCharacterSet="ISO_IR 192", PatientName="Müller^Jürgen")
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    assert (await stow(client, data, "application/dicom")).status == 200
    url = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    answer = await request(client, "GET", url, headers={"Accept": "application/zip"})
    disposition = answer.headers["Content-Disposition"]
    assert 'filename="M_ller_J_rgen_' in disposition
    assert "filename*=UTF-8''M%C3%BCller%20J%C3%BCrgen%20" in disposition
    assert disposition.endswith(f"{ds.SeriesInstanceUID}.zip")


async def test_with_a_token_the_posts_need_it(archive_dir: Path) -> None:
    async with app_client(archive_dir, token="trash-token") as client:
        assert (await post(client, "empty")).status == 401
        bearer = {"Authorization": "Bearer trash-token"}
        answer = await post(client, "empty", headers=bearer)
        assert (answer.status, answer.json()) == (200, {"emptied": 0})
