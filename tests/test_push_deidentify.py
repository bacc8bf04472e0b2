"""``localdicom push --deidentify``: what a second localdicom receives, over DICOMweb (STOW-RS)
and over DICOM (C-STORE), carries none of the original names, IDs or UIDs (PS3.15 Annex E
Basic Profile); the SEG still points at the CT series it segments; a re-run sends nothing
(the record keys by the original SOP Instance UID and digest); and with the same key the
remote holds exactly what ``export --deidentify`` writes (README "De-identify").

Every check compares with pydicom's reading of the original files.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from localdicom.cli import main
from tests.helpers import free_port, orthanc
from tests.helpers.live import LiveServer, request
from tests.test_export_deidentify import assert_nothing_leaks
from tests.test_import_deidentify import assert_seg_on_its_ct_series, imported
from tests.test_transfer import remote_bytes

pytestmark = pytest.mark.slow  # servers in subprocesses


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, list[pydicom.Dataset]]:
    """An archive of the liver SEG, its three CT slices and an ultrasound image, as they
    were, with pydicom's reading of the originals."""
    return imported(tmp_path_factory.mktemp("push-deid"))


@pytest.fixture
def remote(tmp_path) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path / "remote", free_port(), extra_args=("--dicom-port", str(free_port()))
    )
    server.start()
    yield server
    server.stop()


def push(archive: Path, to: str, key: Path, *args: str) -> tuple[int, str]:
    arguments = [to, "--archive", str(archive), "--all", "--deidentify", "--deid-key", str(key)]
    result = CliRunner().invoke(main, ["push", *arguments, "--workers", "2", *args])
    return result.exit_code, result.output


def counts(output: str) -> dict[str, int]:
    """The summary's counts: stored, already there, conflicts, errors."""
    found = re.findall(r"^  (stored|already there|conflicts|errors) +(\d+)$", output, re.M)
    return {name: int(number) for name, number in found}


def received(server: LiveServer, folder: Path) -> list[Path]:
    """What the remote stores, each instance as a file of ``folder``."""
    folder.mkdir()
    paths = []
    for sop, data in remote_bytes(server).items():
        paths.append(folder / f"{sop}.dcm")
        paths[-1].write_bytes(data)
    return sorted(paths)


def exported(archive: Path, key: Path, dest: Path) -> dict[str, bytes]:
    """What ``export --deidentify`` writes with ``key``: new SOP Instance UID -> bytes."""
    arguments = [str(archive), str(dest), "--all", "--deidentify", "--deid-key", str(key)]
    result = CliRunner().invoke(main, ["export", *arguments])
    assert result.exit_code == 0, result.output
    return {path.stem: path.read_bytes() for path in dest.rglob("*.dcm")}


def test_push_over_dicomweb_sends_what_export_writes_and_no_identifier(
    study, remote, tmp_path
) -> None:
    archive, originals = study
    key = tmp_path / "private" / "key.json"

    code, output = push(archive, f"{remote.url}", key)

    assert code == 0, output
    assert counts(output) == {"stored": 5, "already there": 0, "conflicts": 0, "errors": 0}
    (review,) = [line for line in output.splitlines() if line.startswith("needs review: ")]
    assert str(archive) in review and "sent as" in review
    paths = received(remote, tmp_path / "received")
    assert len(paths) == 5
    assert_nothing_leaks(paths, originals)
    datasets = [pydicom.dcmread(path) for path in paths]
    assert all(ds.PatientIdentityRemoved == "YES" for ds in datasets)
    assert_seg_on_its_ct_series(datasets)
    assert sorted(ds.PixelData for ds in datasets) == sorted(ds.PixelData for ds in originals)

    again_code, again = push(archive, remote.url, key)  # the record: nothing is sent
    assert again_code == 0, again
    assert (counts(again)["stored"], counts(again)["already there"]) == (0, 5)

    export = exported(archive, key, tmp_path / "export")
    assert {path.stem: path.read_bytes() for path in paths} == export


def test_push_over_dicom_sends_no_identifier_and_leaves_out_burned_in_text(
    study, remote, tmp_path
) -> None:
    archive, originals = study
    key = tmp_path / "key.json"
    node = f"dicom://LOCALDICOM@127.0.0.1:{remote.extra_args[1]}"

    code, output = push(archive, node, key, "--reject-burned-in")

    assert code == 0, output
    assert "refused: " in output  # the ultrasound
    paths = received(remote, tmp_path / "received")
    assert len(paths) == 4
    assert_nothing_leaks(paths, originals)
    assert_seg_on_its_ct_series([pydicom.dcmread(path) for path in paths])
    code, output = push(archive, node, key, "--reject-burned-in")
    assert code == 0, output
    assert (counts(output)["stored"], counts(output)["already there"]) == (0, 4)


def test_push_deidentify_needs_a_key(study) -> None:
    archive, _ = study
    result = CliRunner().invoke(
        main,
        [
            "push",
            "http://127.0.0.1:9/dicom-web",
            "--archive",
            str(archive),
            "--all",
            "--deidentify",
        ],
    )
    assert result.exit_code == 2 and "--deid-key" in result.output


def test_what_the_remote_refuses_is_named_by_both_uids(study, remote, tmp_path) -> None:
    archive, originals = study
    code, output = push(archive, f"{remote.url}/not-dicomweb", tmp_path / "key.json")
    assert code == 1, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 5
    for ds in originals:  # the original UID, and the one sent
        named = f"/instances/{ds.SOPInstanceUID} (sent as "
        assert len([line for line in errors if named in line]) == 1, ds.SOPInstanceUID


@pytest.mark.external
@pytest.mark.skipif(shutil.which("Orthanc") is None, reason="Orthanc is not installed")
def test_push_to_orthanc_over_dicomweb_stores_what_export_writes(study, tmp_path) -> None:
    archive, originals = study
    key = tmp_path / "key.json"
    server = orthanc(tmp_path / "orthanc")
    server.start()
    try:
        code, output = push(archive, server.root, key)
        assert code == 0, output
        rest = server.root.removesuffix("/dicom-web")
        kept = {}
        for orthanc_id in json.loads(request(f"{rest}/instances").body):
            data = request(f"{rest}/instances/{orthanc_id}/file").body
            kept[pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID] = data
    finally:
        server.stop()
    assert kept == exported(archive, key, tmp_path / "export")
    for sop, data in kept.items():
        (tmp_path / f"{sop}.dcm").write_bytes(data)
    assert_nothing_leaks([tmp_path / f"{sop}.dcm" for sop in kept], originals)
