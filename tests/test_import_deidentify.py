"""``localdicom import --deidentify``: the stored files carry none of the original names, IDs
or UIDs, a segmentation still points at its CT series, the key file gives the same result
again, and burned-in text is listed or refused (README, "De-identify")."""

from __future__ import annotations

import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from click.testing import CliRunner, Result
from pydicom.uid import UID_dictionary

from localdicom.cli import main
from tests.helpers.corpus import pydicom_file
from tests.helpers.deid import liver_study
from tests.helpers.live import LiveServer


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def write_sources(folder: Path) -> list[pydicom.Dataset]:
    """The liver study (the CT slices in a zip, the SEG beside it) and an ultrasound image."""
    folder.mkdir(parents=True)
    seg, *slices = liver_study()
    seg.save_as(folder / "SEG0001", enforce_file_format=True)
    with zipfile.ZipFile(folder / "ct.zip", "w") as archive:
        for number, ct in enumerate(slices):
            path = folder / f"ct{number}.dcm"
            ct.save_as(path, enforce_file_format=True)
            archive.write(path, f"CT/IM{number}")
            path.unlink()
    us = pydicom.dcmread(pydicom_file("US1_UNCR.dcm"))
    us.save_as(folder / "US0001", enforce_file_format=True)
    return [seg, *slices, us]


NEW_UID = re.compile(rb"2\.25\.[0-9]+")


def identifiers(datasets: list[pydicom.Dataset]) -> set[bytes]:
    """What must not be in any stored byte: patient names and IDs, and every UID that is
    not a well-known one."""
    found: set[bytes] = set()
    for ds in datasets:
        found |= {str(ds.PatientID).encode(), str(ds.PatientName).encode()}
        for element in ds.iterall():
            value = str(element.value) if element.VR == "UI" else ""
            if value and value not in UID_dictionary and not value.startswith("1.2.840.10008."):
                found.add(value.encode())
    return {value for value in found if len(value) > 2}


def imported(folder: Path) -> tuple[Path, list[pydicom.Dataset]]:
    """An archive of the sources as they were (not de-identified), imported into
    ``folder``, with pydicom's reading of the originals."""
    originals = write_sources(folder / "source")
    archive = folder / "archive"
    result = CliRunner().invoke(main, ["import", str(folder / "source"), "--archive", str(archive)])
    assert result.exit_code == 0, result.output
    return archive, originals


def assert_seg_on_its_ct_series(datasets: list[pydicom.Dataset]) -> tuple[pydicom.Dataset, Any]:
    """The SEG among ``datasets`` references exactly their CT instances, as one series; the
    SEG and its Referenced Series item."""
    (seg,) = [ds for ds in datasets if ds.Modality == "SEG"]
    cts = {ds.SOPInstanceUID: ds for ds in datasets if ds.Modality == "CT"}
    referenced = seg.ReferencedSeriesSequence[0]
    listed = {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence}
    assert listed == set(cts)
    assert {ct.SeriesInstanceUID for ct in cts.values()} == {referenced.SeriesInstanceUID}
    return seg, referenced


def stored(archive: Path) -> list[Path]:
    return sorted(archive.glob("*/*/*.dcm"))


def leaked(path: Path, secrets: set[bytes]) -> list[bytes]:
    """The ``secrets`` found in the bytes of ``path`` outside its pixel data (which is
    kept as it was, and may hold any digits by chance)."""
    data = path.read_bytes().replace(pydicom.dcmread(path).PixelData, b"")
    return found_in(data, secrets)


def found_in(data: bytes, secrets: set[bytes]) -> list[bytes]:
    """The ``secrets`` in ``data`` outside the UIDs de-identification made: those are
    hashes written in 39 digits (PS3.5 B.2), where a short original value such as a patient
    ID of five digits turns up by chance about once in a few hundred runs."""
    data = NEW_UID.sub(lambda uid: uid[0] if uid[0] in secrets else b"", data)
    return [secret for secret in secrets if secret in data]


def test_import_deidentify_stores_no_original_identifier(tmp_path: Path) -> None:
    originals = write_sources(tmp_path / "source")
    archive, key = tmp_path / "archive", tmp_path / "private" / "deid.json"

    result = run(
        "import", tmp_path / "source", "--archive", archive, "--deidentify", "--deid-key", key,
        "--deid-option", "retain-modified-dates", "--workers", "2",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "  stored           5" in result.output and "  need review      1" in result.output
    assert "needs review: " + str(tmp_path / "source" / "US0001") in result.output
    files = stored(archive)
    assert len(files) == 5
    secrets = identifiers(originals)
    assert leaked(tmp_path / "source" / "SEG0001", secrets)  # the check does find them
    for path in files:
        assert leaked(path, secrets) == [], path
        assert pydicom.dcmread(path).PatientIdentityRemoved == "YES"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert {str(ds.PatientID) for ds in originals} <= set(key.read_text().split('"'))


def test_the_stored_seg_references_its_stored_ct_series(tmp_path: Path) -> None:
    write_sources(tmp_path / "source")
    archive, key = tmp_path / "archive", tmp_path / "deid.json"
    run("import", tmp_path / "source", "--archive", archive, "--deidentify", "--deid-key", key)
    seg, referenced = assert_seg_on_its_ct_series(
        [pydicom.dcmread(path) for path in stored(archive)]
    )
    assert (archive / seg.StudyInstanceUID / referenced.SeriesInstanceUID).is_dir()


def test_same_key_again_finds_everything_already_present(tmp_path: Path) -> None:
    write_sources(tmp_path / "source")
    archive, key = tmp_path / "archive", tmp_path / "deid.json"
    args = ["import", tmp_path / "source", "--archive", archive, "--deidentify", "--deid-key", key]
    first = run(*args)
    assert "  stored           5" in first.output, first.output
    again = run(*args)
    assert "  already present  5" in again.output, again.output
    other = run(*args[:-1], tmp_path / "other-key.json")
    assert "  stored           5" in other.output, other.output  # other UIDs: new instances


def test_reject_burned_in_refuses_the_ultrasound(tmp_path: Path) -> None:
    write_sources(tmp_path / "source")
    archive = tmp_path / "archive"
    result = run(
        "import", tmp_path / "source", "--archive", archive, "--deidentify",
        "--deid-key", tmp_path / "deid.json", "--reject-burned-in",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "  stored           4" in result.output and "  refused          1" in result.output
    assert ": 6 files," in result.output  # the zip, its 3 members, the SEG, the refused US
    assert "refused: " + str(tmp_path / "source" / "US0001") in result.output
    assert {pydicom.dcmread(p).Modality for p in stored(archive)} == {"CT", "SEG"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deidentify"], "--deidentify needs --deid-key FILE"),
        (["--deid-key", "k.json"], "need --deidentify"),
        (["--deidentify", "--deid-key", "k.json", "--move"], "--move does not apply"),
        (["--deidentify", "--deid-key", "k.json", "--deid-option", "x"], "'x' is not one of"),
        (["--deidentify", "--deid-key", "ARCHIVE/k.json"], "is inside the archive"),
    ],
)
def test_wrong_deidentify_options_are_refused(tmp_path: Path, args, message) -> None:
    source = pydicom_file("CT_small.dcm")
    args = [arg.replace("ARCHIVE", str(tmp_path)) for arg in args]
    result = CliRunner().invoke(main, ["import", str(source), "--archive", str(tmp_path), *args])
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert stored(tmp_path) == []


def test_import_deidentify_through_a_running_server(tmp_path: Path, live_server: LiveServer):
    originals = write_sources(tmp_path / "source")
    result = run(
        "import", tmp_path / "source", "--archive", live_server.archive, "--deidentify",
        "--deid-key", tmp_path / "deid.json",
    )  # fmt: skip
    assert "through the server" in result.output and "  stored           5" in result.output
    secrets = identifiers(originals)
    for path in stored(live_server.archive):
        assert leaked(path, secrets) == [], path
