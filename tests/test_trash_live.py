"""Undo a delete on a running server, as a person does it: ``curl -X DELETE``, then
``localdicom trash restore``, which sends the trashed files back through the server (STOW-RS)
so that it serves them at once; dicomweb-client then retrieves them, byte for byte the
original files."""

from __future__ import annotations

import stat
import subprocess
import sys

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.helpers import (
    REPOSITORY,
    SAMPLES,
    SERIES_CIRCLE,
    SERIES_SQUARE_TRIANGLE,
    SOP_BLUE_CIRCLE,
    SOP_GREEN_SQUARE,
    SOP_RED_TRIANGLE,
    STUDY_UID,
    free_port,
)
from tests.helpers.live import LiveServer, stow_file

pytestmark = [pytest.mark.external, pytest.mark.slow]

FILES = {
    SOP_BLUE_CIRCLE: ("blue-circle.dcm", SERIES_CIRCLE),
    SOP_GREEN_SQUARE: ("green-square.dcm", SERIES_SQUARE_TRIANGLE),
    SOP_RED_TRIANGLE: ("red-triangle.dcm", SERIES_SQUARE_TRIANGLE),
}


def curl(*arguments: str) -> str:
    """The HTTP status curl got (the body goes to /dev/null unless ``-o`` says otherwise)."""
    output = [] if "-o" in arguments else ["-o", "/dev/null"]
    command = ["curl", "-s", *output, "-w", "%{http_code}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def localdicom(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "localdicom", *arguments]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY, timeout=120)


def listed(client: DICOMwebClient) -> set[str]:
    return {item["00080018"]["Value"][0] for item in client.search_for_instances()}


def assert_served_as_originals(
    client: DICOMwebClient, url: str, tmp_path, authorization: str = ""
) -> None:
    """The bytes curl retrieves as stored are the original file's; the dataset
    dicomweb-client retrieves is what pydicom reads from it."""
    token = ["-H", f"Authorization: {authorization}"] if authorization else []
    for sop, (name, series) in FILES.items():
        original = SAMPLES / name
        got = tmp_path / f"{sop}.dcm"
        instance = f"{url}/studies/{STUDY_UID}/series/{series}/instances/{sop}"
        accept = "Accept: application/dicom; transfer-syntax=*"
        assert curl(*token, "-H", accept, "-o", str(got), instance) == "200"
        assert got.read_bytes() == original.read_bytes()
        retrieved = client.retrieve_instance(
            STUDY_UID, series, sop, media_types=(("application/dicom", "*"),)
        )
        assert retrieved == pydicom.dcmread(original)


def test_curl_delete_then_trash_restore_through_the_server(
    live_server: LiveServer, tmp_path
) -> None:
    for name, _ in FILES.values():
        assert stow_file(live_server.url, SAMPLES / name).status == 200
    client = DICOMwebClient(live_server.url)
    series = f"{live_server.url}/studies/{STUDY_UID}/series/{SERIES_SQUARE_TRIANGLE}"
    assert curl("-X", "DELETE", series) == "204"
    blue = f"{live_server.url}/studies/{STUDY_UID}/series/{SERIES_CIRCLE}"
    assert curl("-X", "POST", f"{blue}/reject/113001%5EDCM") == "200"  # as OHIF sends it
    assert listed(client) == set()
    listing = localdicom("trash", "ls", str(live_server.archive))
    assert "delete" in listing.stdout and "reject 113001^DCM" in listing.stdout
    done = localdicom("trash", "restore", str(live_server.archive), "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 instances restored through the server" in done.stdout
    assert listed(client) == set(FILES)  # the running server serves them at once
    assert_served_as_originals(client, live_server.url, tmp_path)
    assert not any((live_server.archive / ".trash").iterdir())
    # Restoring what the server stores again is a listed conflict, never a replacement.
    assert curl("-X", "DELETE", blue) == "204"
    assert stow_file(live_server.url, SAMPLES / "blue-circle.dcm").status == 200
    again = localdicom("trash", "restore", str(live_server.archive), "--instance", SOP_BLUE_CIRCLE)
    assert again.returncode == 1
    assert f"conflict {SOP_BLUE_CIRCLE}" in again.stdout


def test_overwrite_then_restore_through_a_server_that_overwrites(
    live_server: LiveServer, tmp_path
) -> None:
    """A server started with --overwrite would replace on STOW: restore asks first, and
    a stored newer copy is a listed conflict that is left alone."""
    live_server.stop()
    live_server.extra_args = ("--overwrite",)
    live_server.start()
    original = SAMPLES / "blue-circle.dcm"
    newer = tmp_path / "newer.dcm"
    ds = pydicom.dcmread(original)
    ds.SeriesDescription = "second version"
    ds.save_as(newer)
    assert stow_file(live_server.url, original).status == 200
    assert stow_file(live_server.url, newer).status == 200  # the original goes to the trash
    instance = f"{live_server.url}/studies/{STUDY_UID}/series/{SERIES_CIRCLE}/instances/"
    instance += SOP_BLUE_CIRCLE
    got = tmp_path / "got.dcm"
    accept = "Accept: application/dicom; transfer-syntax=*"
    conflict = localdicom("trash", "restore", str(live_server.archive), "--all")
    assert conflict.returncode == 1 and f"conflict {SOP_BLUE_CIRCLE}" in conflict.stdout
    assert curl("-H", accept, "-o", str(got), instance) == "200"
    assert got.read_bytes() == newer.read_bytes()
    (entry,) = [path.name for path in (live_server.archive / ".trash").iterdir()]
    assert curl("-X", "DELETE", instance) == "204"  # the newer one to the trash as well
    done = localdicom("trash", "restore", str(live_server.archive), "--entry", entry)
    assert done.returncode == 0, done.stdout + done.stderr
    assert curl("-H", accept, "-o", str(got), instance) == "200"
    assert got.read_bytes() == original.read_bytes()


def test_import_and_restore_go_through_a_server_that_requires_a_token(tmp_path) -> None:
    """The server records its token with its address, readable by its owner only, so that
    ``import`` and ``trash restore`` can store through it (RFC 6750 Bearer)."""
    server = LiveServer(tmp_path / "archive", free_port(), extra_args=("--token", "s3cret"))
    server.start()
    try:
        announcement = server.archive / ".localdicom-server"
        assert stat.S_IMODE(announcement.stat().st_mode) == 0o600
        done = localdicom("import", str(SAMPLES), "--archive", str(server.archive))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "through the server" in done.stdout and "  stored           3" in done.stdout
        client = DICOMwebClient(server.url, headers={"Authorization": "Bearer s3cret"})
        assert listed(client) == set(FILES)
        study = f"{server.url}/studies/{STUDY_UID}"
        assert curl("-X", "DELETE", "-H", "Authorization: Bearer s3cret", study) == "204"
        done = localdicom("trash", "restore", str(server.archive), "--all")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "3 instances restored through the server" in done.stdout
        assert listed(client) == set(FILES)
        assert_served_as_originals(client, server.url, tmp_path, "Bearer s3cret")
    finally:
        server.stop()
